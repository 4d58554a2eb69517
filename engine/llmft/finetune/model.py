"""Model and tokenizer: fetch, check the machine, load, pad token, special tokens, LoRA.

Heavy imports (torch, transformers, peft) happen inside the functions.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.finetune.config import CommonConfig
from llmft.finetune.templates import ChatFormat, apply_chat_format

log = logging.getLogger("llmft.finetune.model")

PREFIX = "finetuning_config"


# ------------------------------------------------------------------------------------------ machine


def machine_problems(config: CommonConfig, cuda: bool | None = None, bf16: bool | None = None) -> list[str]:
    """Settings this machine cannot run (bf16/fp16 without support, QLoRA or flash attention without CUDA)."""
    import torch

    cuda = torch.cuda.is_available() if cuda is None else cuda
    bf16 = (cuda and torch.cuda.is_bf16_supported()) if bf16 is None else bf16
    problems = []
    dtype = config.run_conf.model_args.dtype
    if dtype == "bf16" and not bf16:
        problems.append(
            f"{PREFIX}.run_conf.model_args.dtype: bf16 needs a GPU with bf16 support and this machine "
            f'has {"a GPU without it" if cuda else "no CUDA GPU"}; use auto or fp32, got "bf16"'
        )
    if dtype == "fp16" and not cuda:
        problems.append(
            f"{PREFIX}.run_conf.model_args.dtype: fp16 training needs a CUDA GPU and this machine has "
            'none; use auto or fp32, got "fp16"'
        )
    if config.quant_conf.quantization_type == "bits-and-bytes" and not cuda:
        bits = "4-bit" if config.quant_conf.load_in_4bit else "8-bit"
        problems.append(
            f"{PREFIX}.quant_conf.quantization_type: {bits} bitsandbytes quantization (QLoRA) needs a "
            'CUDA GPU and this machine has none; use no-quantization here, got "bits-and-bytes"'
        )
    if config.run_conf.model_args.attn_implementation == "flash_attention_2" and not cuda:
        problems.append(
            f"{PREFIX}.run_conf.model_args.attn_implementation: flash_attention_2 needs a CUDA GPU and "
            'this machine has none; use sdpa, got "flash_attention_2"'
        )
    if "8bit" in config.training_args.optim and not cuda:
        problems.append(
            f"{PREFIX}.training_args.optim: {config.training_args.optim} needs bitsandbytes and a CUDA "
            f"GPU; use adamw_torch, got {config.training_args.optim!r}"
        )
    return problems


def check_machine(config: CommonConfig) -> None:
    problems = machine_problems(config)
    if problems:
        raise UserError("this machine cannot run the config:\n  " + "\n  ".join(problems))


def resolve_dtype(config: CommonConfig) -> str:
    """`auto` -> bf16 on a GPU with bf16 support, else fp32."""
    import torch

    dtype = config.run_conf.model_args.dtype
    if dtype != "auto":
        return dtype
    return "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "fp32"


# ------------------------------------------------------------------------------------------ fetching


def cache_root() -> Path:
    from llmft import settings

    return settings.current().cache_dir or Path.home() / ".cache" / "llmft"


def fetch_model(location: str, what: str = f"{PREFIX}.run_conf.model", marker: str = "config.json") -> Path:
    """A local folder with the model (or adapter) at `location`: local path, bucket, or hf://org/name.

    `what` names the setting in messages; `marker` is the file that proves the folder is right.
    """
    from llmft.storage import download_tree, is_complete, parse_location

    if location.startswith("hf://"):
        from huggingface_hub import snapshot_download

        repo = location[len("hf://") :]
        try:
            return Path(snapshot_download(repo_id=repo, cache_dir=str(cache_root() / "hub")))
        except Exception as error:  # noqa: BLE001 - the Hub's errors are many; all mean "cannot get it"
            raise UserError(
                f"{what}: cannot download {location} from the Hugging Face Hub ({error}); "
                "stage it into the bucket first (llmft download-model)"
            ) from None
    parsed = parse_location(location)
    if parsed.bucket is None:  # a local path
        path = parsed.path.expanduser()
        if not (path / marker).is_file():
            raise UserError(f"{what}: no model at {path} (expected a folder with {marker}), got {location!r}")
        return path
    if not is_complete(parsed):
        raise UserError(
            f"{what}: no complete folder at {parsed} (no manifest: the upload is missing or "
            "unfinished); stage it with `llmft download-model` or `llmft storage cp`, "
            f"got {location!r}"
        )
    target = cache_root() / "models" / parsed.bucket / parsed.key.strip("/")
    download_tree(parsed, target)
    return target


# ------------------------------------------------------------------------------------------ tokenizer


@dataclass
class TokenizerSetup:
    chat_format: ChatFormat
    added_tokens: list[str]
    pad_strategy: str | None  # the strategy applied, None when the tokenizer had a pad token


def load_tokenizer(path: Path, trust_remote_code: bool = False, what: str = f"{PREFIX}.run_conf.model"):
    """The tokenizer in the local folder `path` (`what` names the setting it came from, for errors)."""
    from transformers import AutoTokenizer

    from llmft.tokenizer_folder import check_tokenizer_folder

    check_tokenizer_folder(path, what)
    tokenizer = AutoTokenizer.from_pretrained(str(path), trust_remote_code=trust_remote_code, local_files_only=True)
    tokenizer.padding_side = "right"
    return tokenizer


def prepare_tokenizer(tokenizer, template_name: str | None, pad_strategy: str) -> TokenizerSetup:
    """Install the chat template and make sure there is a pad token (`missing_pad_token_strategy`).

    `template_name` None: the data is not chat (plain text, classification); no template is installed and
    the format records only the end-of-text token.
    """
    if template_name is None:
        chat_format, added = ChatFormat("none", "", tokenizer.eos_token or ""), list[str]()
    else:
        chat_format, added = apply_chat_format(tokenizer, template_name)
    applied = None
    if tokenizer.pad_token is None:
        applied = pad_strategy
        source = {"bos-repurpose": "bos_token", "eos-repurpose": "eos_token", "unk-repurpose": "unk_token"}
        if pad_strategy == "add-new":
            if "<pad>" not in tokenizer.get_vocab():
                added.append("<pad>")
            tokenizer.add_special_tokens({"pad_token": "<pad>"})
        else:
            token = getattr(tokenizer, source[pad_strategy])
            if token is None:
                raise UserError(
                    f"{PREFIX}.data_conf.missing_pad_token_strategy: the tokenizer has no pad token and "
                    f"no {source[pad_strategy].split('_')[0]} token to reuse; use add-new, got "
                    f"{pad_strategy!r}"
                )
            tokenizer.pad_token = token
        log.info("tokenizer has no pad token: %s -> pad token %r", pad_strategy, tokenizer.pad_token)
    return TokenizerSetup(chat_format, added, applied)


def end_of_turn_ids(tokenizer, chat_format: ChatFormat) -> list[int]:
    """Token ids that end generation: the template's end-of-turn token and the tokenizer's eos."""
    ids = [tokenizer.convert_tokens_to_ids(chat_format.end_of_turn)] if chat_format.end_of_turn else []
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


# ------------------------------------------------------------------------------------------ model


TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float32", "fp32": "float32"}  # fp16 trains with fp32 master weights


def load_model(path: Path, config: CommonConfig, dtype: str):
    """Load the causal LM (quantized when `quant_conf` asks)."""
    import torch
    from transformers import AutoModelForCausalLM

    kwargs = {
        "dtype": getattr(torch, TORCH_DTYPES[dtype]),
        "trust_remote_code": config.run_conf.model_args.trust_remote_code,
    }
    if config.run_conf.model_args.attn_implementation:
        kwargs["attn_implementation"] = config.run_conf.model_args.attn_implementation
    quant = config.quant_conf
    if quant.quantization_type == "bits-and-bytes":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=quant.load_in_4bit,
            load_in_8bit=quant.load_in_8bit,
            bnb_4bit_quant_type=quant.bnb_4bit_quant_type,
            bnb_4bit_compute_dtype={"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
                quant.bnb_4bit_compute_dtype
            ],
            bnb_4bit_use_double_quant=quant.bnb_4bit_use_double_quant,
        )
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, ImportError) as error:
        raise UserError(f"cannot load the model from {path}: {error}") from None
    model.config.use_cache = False  # no KV cache while training
    return model


@contextmanager
def quiet_transformers():
    """transformers' warnings off for a block (its load report of a new classification head, expected)."""
    from transformers.utils import logging as transformers_logging

    verbosity = transformers_logging.get_verbosity()
    transformers_logging.set_verbosity_error()
    try:
        yield
    finally:
        transformers_logging.set_verbosity(verbosity)


def load_classifier(path: Path, config: CommonConfig, dtype: str, labels: list[str]):
    """Load `path` with a sequence-classification head for `labels` (new head weights are seeded)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    kwargs = {
        "dtype": getattr(torch, TORCH_DTYPES[dtype]),
        "trust_remote_code": config.run_conf.model_args.trust_remote_code,
        "num_labels": len(labels),
        "id2label": dict(enumerate(labels)),
        "label2id": {label: index for index, label in enumerate(labels)},
    }
    if config.run_conf.model_args.attn_implementation:
        kwargs["attn_implementation"] = config.run_conf.model_args.attn_implementation
    # transformers reports the new head's weights as "MISSING" in a warning table on every run: expected here,
    # so it is replaced by one line of ours.
    try:
        with quiet_transformers():
            model, info = AutoModelForSequenceClassification.from_pretrained(
                str(path), output_loading_info=True, **kwargs
            )
    except (OSError, ValueError, ImportError) as error:
        raise UserError(f"cannot load {path} as a sequence classifier: {error}") from None
    new = sorted(info.get("missing_keys") or [])
    log.info("classifier with %d labels; new weights (seeded): %s", len(labels), ", ".join(new) or "none")
    model.config.problem_type = "single_label_classification"
    return model


def resize_embeddings(model, tokenizer) -> bool:
    """Grow the embedding (and output) matrices to the tokenizer's size; True when they grew."""
    rows = model.get_input_embeddings().weight.shape[0]
    if len(tokenizer) <= rows:
        return False
    model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    log.info("resized the token embeddings from %d to %d rows for the added tokens", rows, len(tokenizer))
    return True


def embedding_module_names(model) -> list[str]:
    """Names (last path component) of the input embedding and output layer, for LoRA's modules_to_save."""
    wanted = [model.get_input_embeddings(), model.get_output_embeddings()]
    names = []
    for name, module in model.named_modules():
        if any(module is target for target in wanted if target is not None):
            names.append(name.rsplit(".", 1)[-1])
    return sorted(set(names))


def classifier_module_names(model) -> list[str]:
    """The classification head's module names (`classifier` in BERT-style models, `score` in decoders)."""
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_children()}
    return [name for name in ("classifier", "score") if name in names]


def lora_config(model, config: CommonConfig, resized: bool):
    """peft's LoraConfig for `model`; with resized embeddings they are trained and saved in full."""
    from peft import LoraConfig

    lora = config.peft_conf.lora()
    assert lora is not None, "called for peft_type LORA only"
    modules_to_save = list(lora.modules_to_save or [])
    if resized:
        modules_to_save += [name for name in embedding_module_names(model) if name not in modules_to_save]
    task_type = "SEQ_CLS" if getattr(config, "task", None) == "sequence-classification" else "CAUSAL_LM"
    if task_type == "SEQ_CLS":
        # The new classification head is trained and saved in full (peft adds it too; named here for the log).
        modules_to_save += [name for name in classifier_module_names(model) if name not in modules_to_save]
    return LoraConfig(
        task_type=task_type,
        r=lora.r,
        lora_alpha=lora.lora_alpha,  # peft annotates int; a float is used as is (scale = alpha / r)
        lora_dropout=lora.lora_dropout,
        target_modules=lora.target_modules,
        bias=lora.bias,
        use_dora=lora.use_dora,
        use_rslora=lora.use_rslora,
        modules_to_save=modules_to_save or None,
    )


def apply_lora(model, config: CommonConfig, resized: bool):
    """Wrap `model` with a LoRA adapter; with resized embeddings they are trained and saved in full."""
    from peft import get_peft_model, prepare_model_for_kbit_training

    lora = config.peft_conf.lora()
    assert lora is not None, "called for peft_type LORA only"
    peft_config = lora_config(model, config, resized)
    modules_to_save = list(peft_config.modules_to_save or [])
    if config.quant_conf.quantization_type == "bits-and-bytes":
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=config.training_args.gradient_checkpointing
        )
    try:
        model = get_peft_model(model, peft_config)
    except ValueError as error:
        raise UserError(
            f"{PREFIX}.peft_conf.peft_kwargs.target_modules: {error}; check the module names "
            f"(or use all-linear), got {lora.target_modules!r}"
        ) from None
    trainable, total = model.get_nb_trainable_parameters()
    log.info(
        "LoRA r=%d alpha=%g on %s: %d of %d parameters trainable (%.2f%%)%s",
        lora.r,
        lora.lora_alpha,
        lora.target_modules,
        trainable,
        total,
        100 * trainable / total,
        f"; trained in full: {', '.join(modules_to_save)}" if modules_to_save else "",
    )
    return model


def set_generation_config(model, tokenizer, chat_format: ChatFormat) -> None:
    """Make generation stop at the template's end-of-turn token (as well as eos)."""
    from transformers import GenerationConfig

    base = getattr(model, "generation_config", None) or GenerationConfig()
    existing = base.eos_token_id
    existing = [] if existing is None else [existing] if isinstance(existing, int) else list(existing)
    eos = end_of_turn_ids(tokenizer, chat_format)
    base.eos_token_id = eos + [token for token in existing if token not in eos]
    base.pad_token_id = tokenizer.pad_token_id
    if tokenizer.bos_token_id is not None:
        base.bos_token_id = tokenizer.bos_token_id
    model.generation_config = base
