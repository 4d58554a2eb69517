"""Merge a LoRA adapter into its base model: a plain model folder that any server loads.

The result has safetensors weights, the adapter's tokenizer (with its chat template) and a
generation_config whose eos ids end each turn. When training grew the vocabulary, the base model
is resized first and the adapter's saved embedding and output layers replace the base ones.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from llmft.errors import UserError

log = logging.getLogger("llmft.finetune.merge")


def _has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer_config.json").is_file()


def _load_base(base: Path, adapter: Path, torch_dtype):
    """The base model in the adapter's task: a causal LM, or (task_type SEQ_CLS) a sequence classifier
    with the label set the adapter was trained on (`labels.json`, written by the training run)."""
    import json

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    task_type = json.loads((adapter / "adapter_config.json").read_text()).get("task_type")
    if task_type != "SEQ_CLS":
        return AutoModelForCausalLM.from_pretrained(str(base), dtype=torch_dtype)
    labels_file = adapter / "labels.json"
    if not labels_file.is_file():
        raise UserError(
            f"{adapter} is a classification adapter without labels.json (its label set); merge the "
            'checkpoint-final-adapter/ of an llmft run, or add labels.json ({"id2label": {"0": ...}})'
        )
    id2label = {int(key): value for key, value in json.loads(labels_file.read_text())["id2label"].items()}
    from llmft.finetune.model import quiet_transformers

    with quiet_transformers():  # the head is "missing" from the base: the adapter brings it
        model = AutoModelForSequenceClassification.from_pretrained(
            str(base),
            dtype=torch_dtype,
            num_labels=len(id2label),
            id2label=id2label,
            label2id={value: key for key, value in id2label.items()},
        )
    model.config.problem_type = "single_label_classification"
    return model


def merge_adapter(base: Path, adapter: Path, out: Path, dtype: str = "auto", replace: bool = False) -> Path:
    """Write base + adapter, merged, to `out` and return it; `replace` first empties an existing `out`."""
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer, GenerationConfig

    base, adapter, out = Path(base), Path(adapter), Path(out)
    if not (adapter / "adapter_config.json").is_file():
        raise UserError(f"{adapter} is not a LoRA adapter folder (no adapter_config.json)")
    if not (base / "config.json").is_file():
        raise UserError(f"{base} is not a model folder (no config.json)")
    tokenizer = AutoTokenizer.from_pretrained(str(adapter if _has_tokenizer(adapter) else base))
    torch_dtype = (
        "auto" if dtype == "auto" else {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]
    )
    base_model = _load_base(base, adapter, torch_dtype)
    embedding = base_model.get_input_embeddings().weight
    assert isinstance(embedding, torch.Tensor)
    if len(tokenizer) > embedding.shape[0]:
        # The adapter carries the trained, resized embedding and output layers; make room for them.
        base_model.resize_token_embeddings(len(tokenizer), mean_resizing=False)
    try:
        with_adapter = PeftModel.from_pretrained(base_model, str(adapter))
    except (ValueError, RuntimeError) as error:
        raise UserError(f"adapter {adapter} does not fit base model {base}: {error}") from None
    model = with_adapter.merge_and_unload()
    generation_source = adapter if (adapter / "generation_config.json").is_file() else base
    if (generation_source / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(generation_source))
    if replace and out.is_dir():
        shutil.rmtree(out)  # the merge succeeded: only now is the old contents given up
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out), safe_serialization=True)
    tokenizer.save_pretrained(str(out))
    log.info("merged adapter %s into %s -> %s", adapter, base, out)
    return out
