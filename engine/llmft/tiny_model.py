"""Tiny random-weight causal LMs with real tokenizers, built offline for tests and demos.

The tokenizer is a byte-level BPE trained on a small built-in corpus, so any text
round-trips; the chat template is the Zephyr / TinyLlama-Chat one (`<|user|>` ...
`</s>`), matching the tutorial's base model. Same seed, same files.
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from llmft.errors import UserError

PAD, BOS, EOS = "<pad>", "<s>", "</s>"

# TinyLlama-1.1B-Chat's template: each turn ends with the eos token.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Written into every tiny model folder: what it is (and that a rebuild may overwrite it).
MARKER = "llmft-tiny-model.json"

_ARCHITECTURES: dict[str, tuple[str, dict[str, object]]] = {
    "llama": ("LlamaConfig", {}),
    "qwen2": ("Qwen2Config", {"use_sliding_window": False}),
    "mistral": ("MistralConfig", {"sliding_window": None}),
}


def architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def _train_tokenizer(vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = resources.files("llmft.assets").joinpath("tiny_corpus.txt").read_text().splitlines()
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    bos_id = tokenizer.token_to_id(BOS)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        model_max_length=2048,
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = ZEPHYR_TEMPLATE
    return fast


def build_tiny_model(
    out_dir: Path,
    arch: str = "llama",
    seed: int = 0,
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate_size: int = 128,
    vocab_size: int = 512,
    max_positions: int = 2048,
) -> Path:
    """Write a tiny `arch` model folder to `out_dir` and return it."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    if arch not in _ARCHITECTURES:
        raise UserError(f"--arch {arch!r} is not supported; choose one of {', '.join(architectures())}")
    out_dir = Path(out_dir)
    tokenizer = _train_tokenizer(vocab_size)
    config_class, extra = _ARCHITECTURES[arch]
    config = getattr(transformers, config_class)(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **extra,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=[tokenizer.eos_token_id],
        pad_token_id=tokenizer.pad_token_id,
        do_sample=False,
        max_new_tokens=32,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)
    (out_dir / MARKER).write_text(json.dumps({"arch": arch, "seed": seed}) + "\n")
    return out_dir
