"""The fine-tuning config: pydantic models, loading, error messages, JSON Schema.

One YAML file (the tutorial's `finetuning_config`) drives a run. The models below are the single
source of truth: `config_json_schema(method)` feeds the finetune chart's values.schema.json and
`llmft config-reference` writes docs/config-reference.md from the same field descriptions.

Sections shared by every method live in `CommonConfig`; a method adds its own section
(`SftConfig.sft_args`) and is selected by the `method` literal. Light on purpose: no torch here,
so `helm template`-time tooling and `llmft config-schema` stay fast.
"""

from __future__ import annotations

import copy
import difflib
import importlib
import importlib.util
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmft.errors import UserError
from llmft.finetune.distributed import PRESETS as DISTRIBUTED_PRESETS

DEFAULT_KEY_PREFIX = "finetuning_config"

PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0, lt=1)]
# Hugging Face accepts an absolute number of steps or a fraction of the total steps.
StepsOrFraction = PositiveInt | Fraction


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, values are validated on assignment.

    A boolean must be written as one (`true`/`false`): pydantic would read the strings "yes", "no",
    "on", "1" as booleans, and a quoted "yes" in YAML is more likely a mistake than a choice.
    """

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    @field_validator("*", mode="before")
    @classmethod
    def _booleans_are_booleans(cls, value: Any, info) -> Any:
        annotation = cls.model_fields[info.field_name].annotation
        if annotation in (bool, bool | None) and isinstance(value, str):
            raise ValueError(f"must be true or false (a boolean, not the string {value!r})")
        return value


# What a bucket location must look like beyond `llmft.storage.location`'s parse rule: a bucket name S3
# accepts, and a key without `..` segments (a key names an object; it cannot climb out of a folder).
# `llmft.chart_files` generates the charts' render-time location check from these and that module.
BUCKET_NAME_PATTERN = r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"
PARENT_SEGMENT_PATTERN = r"(^|/)[.][.](/|$)"
BUCKET_NAME_PROBLEM = (
    "{bucket} is not a bucket name (3-63 lowercase letters, digits, '.' or '-'): write "
    "bucket/path/in/bucket or s3://bucket/path, or start a local path with ./ or /"
)
PARENT_SEGMENT_PROBLEM = (
    "'..' is not allowed in a bucket key: write the full path from the bucket, e.g. bucket/datasets/train.jsonl"
)
HUB_SCHEME = "hf://"


def location_problem(value: str) -> str | None:
    """What is wrong with a location under the engine's rule, with the fix; None when it is fine.

    hf:// ids and local paths are fine here; whether a setting takes them is the setting's call.
    """
    if value.startswith(HUB_SCHEME):
        return None
    from llmft.storage.location import parse_location

    try:
        location = parse_location(value)
    except UserError as error:
        return str(error)
    if location.bucket is None:  # a local path
        return None
    if not re.match(BUCKET_NAME_PATTERN, location.bucket):
        return BUCKET_NAME_PROBLEM.format(bucket=json.dumps(location.bucket))
    if re.search(PARENT_SEGMENT_PATTERN, location.key):
        return PARENT_SEGMENT_PROBLEM
    return None


def _check_location(value: str | None) -> str | None:
    """Apply the one location rule early so a bad location is a config error, not a runtime one."""
    if value is None:
        return value
    problem = location_problem(value)
    if problem:
        raise ValueError(problem)
    return value


# ------------------------------------------------------------------------------------------ data_conf


class ColumnMap(Section):
    """Which column holds each field the task reads (TorchTune's `column_map`); unset fields keep their own name.

    Chat data (`task: chat`): `messages`, or instruction-style `input`/`output` (+ `system`, `instruction`)
    turned into one user and one assistant message. Plain text (`task: text`): `text`. Classification
    (`task: sequence-classification`): `text` and `label`. DPO: `prompt`, `chosen`, `rejected`.
    """

    messages: str | None = Field(None, description="Column holding the list of chat messages (default: `messages`).")
    input: str | None = Field(None, description="Column holding the user turn (default: `input`).")
    output: str | None = Field(None, description="Column holding the assistant answer (default: `output`).")
    system: str | None = Field(None, description="Column holding an optional system prompt (default: `system`).")
    instruction: str | None = Field(
        None, description="Column holding an optional instruction, put before the input (Alpaca style)."
    )
    text: str | None = Field(
        None, description="`task: text` and `sequence-classification`: the column holding the text (default: `text`)."
    )
    label: str | None = Field(
        None,
        description="`task: sequence-classification`: the column holding the label, an integer or a string "
        "(default: `label`).",
    )
    prompt: str | None = Field(
        None, description="DPO: the column holding the prompt (a string or a list of messages; default: `prompt`)."
    )
    chosen: str | None = Field(
        None, description="DPO: the column holding the preferred answer (a string or messages; default: `chosen`)."
    )
    rejected: str | None = Field(
        None, description="DPO: the column holding the rejected answer (a string or messages; default: `rejected`)."
    )

    def as_dict(self) -> dict[str, str]:
        return {key: value for key, value in self.model_dump().items() if value is not None}


# Dataset file formats (`source`) and the file extensions that select them.
DATASET_SOURCES = ("jsonl", "json", "csv", "parquet", "arrow")
SOURCE_EXTENSIONS = {".jsonl": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".arrow": "arrow"}
# The Hub's split syntax on the one split a data file has: `train`, `train[:95%]`, `train[100:200]`, `a+b`.
_SUB_SPLIT = r"\s*train\s*(\[\s*(-?[\d_]+%?)?\s*(:\s*(-?[\d_]+%?)?)?\s*\])?\s*"
SPLIT_PATTERN = rf"^{_SUB_SPLIT}(\+{_SUB_SPLIT})*$"


def source_of(path: str, source: str | None) -> str | None:
    """The format of a dataset file: `source` when given, else from the extension (None: unknown)."""
    if source:
        return source
    name = path.lower().removesuffix(".gz")
    return next((fmt for ext, fmt in SOURCE_EXTENSIONS.items() if name.endswith(ext)), None)


class DatasetSpec(Section):
    """One dataset file and the options that say how to read it (TorchTune's names)."""

    path: str = Field(
        min_length=1,
        description="Location of one data file (JSONL, JSON, CSV, Parquet or Arrow): a local path "
        "(`./data/train.jsonl`, `/data/train.parquet`), `bucket/path/file.jsonl` or "
        "`s3://bucket/path/file.jsonl`.",
    )
    source: Literal[DATASET_SOURCES] | None = Field(  # type: ignore[valid-type]
        None,
        description="File format: `jsonl`, `json`, `csv`, `parquet` or `arrow` (default: from the extension). "
        "JSONL is read line by line (problems name `file:line`); the others through the `datasets` "
        "library (problems name `file:row N`).",
    )
    split: str | None = Field(
        None,
        description="The rows to use, in the Hub's slicing syntax on the file's one split `train`: "
        "`train[:95%]`, `train[95%:]`, `train[100:200]`, `train[:3000]`, `train[:10%]+train[-10%:]` "
        "(default: every row). A split that selects nothing is an error.",
    )
    sampling_weight: PositiveFloat | None = Field(
        None,
        description="Relative weight of this dataset; only with `type: PRECOMPUTE_WEIGHTED_MIX` (default 1.0 there).",
    )
    column_map: ColumnMap | None = Field(
        None,
        description="The columns the task reads, when they have other names, e.g. `{input: incorrect, output: "
        "correct}` (chat from instruction rows), `{text: review, label: stars}` (classification). "
        "Without it, chat rows must have `messages`.",
    )
    new_system_prompt: str | None = Field(
        None,
        description="Chat and DPO data: the system message of every sample (replaces the sample's own, or is "
        "added when it has none).",
    )
    train_on_input: bool | None = Field(
        None,
        description="Chat data: `true` trains on the whole conversation (prompt too), `false` on the "
        "assistant turns only (default: `not sft_args.train_on_completions_only`).",
    )

    _location = field_validator("path")(_check_location)

    @field_validator("split")
    @classmethod
    def _split(cls, value: str | None) -> str | None:
        if value is not None and not re.match(SPLIT_PATTERN, value):
            raise ValueError(
                "must be the Hub's split syntax on the file's one split `train`, e.g. train[:95%], "
                "train[95%:], train[100:200] or train[:3000]"
            )
        return value


class TrainingData(Section):
    """The training datasets and how they are combined."""

    type: Literal["CONCATENATION", "PRECOMPUTE_WEIGHTED_MIX"] = Field(
        "CONCATENATION",
        description="`CONCATENATION`: all samples of all datasets. `PRECOMPUTE_WEIGHTED_MIX`: the same total "
        "number of samples, drawn from each dataset in proportion to its `sampling_weight` "
        "(whole passes over a dataset, then a seeded subset), shuffled with `seed`.",
    )
    datasets: list[DatasetSpec] = Field(min_length=1, description="The datasets, at least one.")
    seed: int = Field(19851243, description="Seed for the weighted mix draws.")


class ValidationData(Section):
    """Where the validation samples come from."""

    type: Literal["AUTO_SPLIT", "CONCATENATION", "NONE"] = Field(
        "NONE",
        description="`AUTO_SPLIT`: hold out `ratio` of the training samples (seeded). `CONCATENATION`: the "
        "samples of `datasets`. `NONE`: no validation (then `training_args.eval_strategy` must be "
        "`no`).",
    )
    ratio: Fraction | None = Field(
        None, description="Fraction of the training samples held out; only with `AUTO_SPLIT` (default 0.1)."
    )
    seed: int = Field(1289525893, description="Seed for the `AUTO_SPLIT` draw.")
    datasets: list[DatasetSpec] | None = Field(
        None, description="The validation datasets; only with (and required by) `CONCATENATION`."
    )


class DataConf(Section):
    """Data input: datasets, chat template and padding."""

    training_data: TrainingData = Field(description="Training datasets.")
    validation_data: ValidationData = Field(
        default_factory=ValidationData, description="Validation data (default: none)."
    )
    chat_template_name: Literal["keep-original", "chat-ml", "llama-3"] = Field(
        "keep-original",
        description="`keep-original`: the model's own chat template (an error if it has none). `chat-ml`: "
        "`<|im_start|>role ... <|im_end|>` turns. `llama-3`: `<|start_header_id|>role"
        "<|end_header_id|> ... <|eot_id|>` turns. Tokens a template needs are added to the tokenizer "
        "and the embeddings resized.",
    )
    system_message_handling: Literal["keep", "fold-into-first-user"] = Field(
        "keep",
        description="`keep`: system messages go to the chat template as they are. `fold-into-first-user`: a "
        "leading system message becomes the start of the first user turn (a blank line between), for "
        "templates that refuse a system role (Gemma 2) or place it after the assistant turns "
        "(Mistral v0.3). See docs/chat-templates.md.",
    )
    missing_pad_token_strategy: Literal["bos-repurpose", "eos-repurpose", "unk-repurpose", "add-new"] = Field(
        "bos-repurpose",
        description="What to pad with when the tokenizer has no pad token: reuse the bos, eos or unk token, or "
        "add a new `<pad>` token (resizes the embeddings). Padding never carries loss.",
    )


# ------------------------------------------------------------------------------------------ training_args


class TrainingArgs(Section):
    """Hugging Face TrainingArguments, the subset this engine supports.

    Batch size, gradient accumulation and precision are not here: see `batchsize_conf` and
    `run_conf.model_args.dtype`.
    """

    output_dir: str = Field(
        "./checkpoints",
        description="Local folder for checkpoints and outputs (the finetune chart sets `/checkpoints`, its scratch "
        "volume).",
    )
    learning_rate: PositiveFloat = Field(5e-5, description="Peak learning rate (see also `overrides`).")
    num_train_epochs: PositiveFloat = Field(1.0, description="Epochs to train when `max_steps` is -1.")
    max_steps: Literal[-1] | PositiveInt = Field(
        -1, description="Total optimizer steps; -1 trains `num_train_epochs` epochs (0 would train nothing)."
    )
    lr_scheduler_type: Literal[
        "linear",
        "cosine",
        "cosine_with_restarts",
        "polynomial",
        "constant",
        "constant_with_warmup",
        "inverse_sqrt",
        "cosine_with_min_lr",
        "warmup_stable_decay",
    ] = Field("linear", description="Learning-rate schedule.")
    lr_scheduler_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="Extra arguments for the schedule, e.g. `{min_lr_rate: 0.1}`."
    )
    warmup_steps: Annotated[int, Field(ge=0)] | Fraction | None = Field(
        None, description="Warmup steps (an integer) or a fraction of the total steps (a number below 1)."
    )
    warmup_ratio: Annotated[float, Field(ge=0, lt=1)] | None = Field(
        None, description="Fraction of the total steps used for warmup (alternative to `warmup_steps`)."
    )
    weight_decay: Annotated[float, Field(ge=0)] = Field(0.0, description="AdamW weight decay.")
    max_grad_norm: PositiveFloat = Field(1.0, description="Gradient clipping norm.")
    optim: Literal[
        "adamw_torch",
        "adamw_torch_fused",
        "adafactor",
        "sgd",
        "adagrad",
        "rmsprop",
        "adamw_bnb_8bit",
        "paged_adamw_8bit",
        "paged_adamw_32bit",
    ] = Field(
        "adamw_torch_fused",
        description="Optimizer (transformers' default: AdamW in one fused kernel per step; `adamw_torch` is the "
        "same update one tensor at a time; the `*8bit`/`paged_*` ones need bitsandbytes and CUDA).",
    )
    adam_beta1: Annotated[float, Field(ge=0, lt=1)] = Field(0.9, description="Adam beta1.")
    adam_beta2: Annotated[float, Field(ge=0, lt=1)] = Field(0.999, description="Adam beta2.")
    adam_epsilon: PositiveFloat = Field(1e-8, description="Adam epsilon.")
    logging_strategy: Literal["steps", "epoch", "no"] = Field("steps", description="When to log metrics.")
    logging_steps: StepsOrFraction = Field(
        10,
        description="Log every N steps (or a fraction of the total steps). One progress line and one "
        "`metrics.jsonl` row per log.",
    )
    logging_first_step: bool = Field(False, description="Also log after the first step.")
    eval_strategy: Literal["no", "steps", "epoch"] = Field("no", description="When to evaluate on the validation data.")
    eval_steps: StepsOrFraction | None = Field(None, description="Evaluate every N steps (default: `logging_steps`).")
    save_strategy: Literal["no", "steps", "epoch", "best"] = Field(
        "steps", description="When to write a resumable `checkpoint-<step>/`."
    )
    save_steps: StepsOrFraction = Field(500, description="Save every N steps (or a fraction of the total).")
    save_total_limit: PositiveInt | None = Field(
        None,
        description="Keep at most this many `checkpoint-<step>/` folders (locally and in "
        "`run_conf.checkpoints_remote`).",
    )
    load_best_model_at_end: bool = Field(
        False, description="Load the best checkpoint (by `metric_for_best_model`) before writing the finals."
    )
    metric_for_best_model: str | None = Field(None, description="Metric that picks the best checkpoint.")
    greater_is_better: bool | None = Field(None, description="Whether a larger `metric_for_best_model` is better.")
    report_to: list[Literal["none", "tensorboard", "mlflow"]] | Literal["none", "tensorboard", "mlflow"] = Field(
        default_factory=list,
        description="Where metrics go besides `metrics.jsonl` and the log: `tensorboard` (event files under "
        "`<output_dir>/logs/`), `mlflow` (see `tracking`). Empty or `none`: nowhere else.",
    )
    seed: int = Field(42, description="Seed for weights init (LoRA), data order and dropout.")
    data_seed: int | None = Field(None, description="Seed for the data order only (default: `seed`).")
    full_determinism: bool = Field(
        False,
        description="Deterministic algorithms on GPUs (`torch.use_deterministic_algorithms`, cuDNN "
        "deterministic, fixed cuBLAS workspace): two runs give the same weights, at some "
        "speed cost. On the CPU runs are bit-identical without it.",
    )
    gradient_checkpointing: bool = Field(False, description="Trade compute for memory on long sequences.")
    dataloader_num_workers: Annotated[int, Field(ge=0)] = Field(0, description="Data loading worker processes.")
    run_name: str | None = Field(None, description="Run name shown by trackers.")

    def report_targets(self) -> list[str]:
        targets = [self.report_to] if isinstance(self.report_to, str) else list(self.report_to)
        return [target for target in targets if target != "none"]


# ------------------------------------------------------------------------------------------ other sections


class BatchsizeConf(Section):
    """Batch size: the total is what the optimizer sees; the per-device maximum is what fits in memory.

    total = processes x per-device batch x gradient accumulation. The engine picks the largest
    per-device batch up to the maximum that divides the total evenly.
    """

    total_train_batch_size: PositiveInt | None = Field(
        None,
        description="Samples per optimizer step over all processes (default: the per-device maximum "
        "times the number of processes, no accumulation).",
    )
    max_per_device_train_batch_size: PositiveInt = Field(
        1, description="Largest batch one device processes at once (memory bound)."
    )
    per_device_eval_batch_size: PositiveInt | None = Field(
        None, description="Evaluation batch per device (default: the resolved per-device training batch)."
    )


class LoraKwargs(Section):
    """LoRA settings (peft.LoraConfig)."""

    r: PositiveInt = Field(8, description="LoRA rank.")
    lora_alpha: PositiveFloat = Field(16.0, description="LoRA scaling numerator (scale = lora_alpha / r).")
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] = Field(0.05, description="Dropout on the LoRA input.")
    target_modules: (
        Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)] | Literal["all-linear"]
    ) = Field(
        "all-linear",
        description="Module names to adapt (e.g. `[q_proj, v_proj]`) or `all-linear` (every linear "
        "layer except the output layer).",
    )
    bias: Literal["none", "all", "lora_only"] = Field("none", description="Which biases to train.")
    use_dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")
    use_rslora: bool = Field(False, description="Rank-stabilised scaling (lora_alpha / sqrt(r)).")
    modules_to_save: list[str] | None = Field(
        None,
        description="Extra modules trained in full and saved with the adapter (the embedding and output "
        "layers are added automatically when the vocabulary grows).",
    )


class PeftConf(Section):
    """Adapter configuration."""

    peft_type: Literal["NO_PEFT", "LORA"] = Field(
        description="`LORA`: train a LoRA adapter. `NO_PEFT`: full-parameter training."
    )
    task_type: Literal["CAUSAL_LM", "SEQ_CLS"] = Field(
        "CAUSAL_LM",
        description="PEFT task type: `CAUSAL_LM` (chat and text), `SEQ_CLS` (`task: sequence-classification`, "
        "which uses it when the key is not given; the classification head is trained in full).",
    )
    peft_kwargs: LoraKwargs | None = Field(
        None, description="LoRA settings; only with `peft_type: LORA` (defaults apply when omitted)."
    )

    def lora(self) -> LoraKwargs | None:
        if self.peft_type != "LORA":
            return None
        return self.peft_kwargs or LoraKwargs()


class QuantConf(Section):
    """Quantized base model (QLoRA) with bitsandbytes; needs a CUDA GPU."""

    quantization_type: Literal["no-quantization", "bits-and-bytes"] = Field(
        "no-quantization", description="`bits-and-bytes` loads the base model in 4 or 8 bits (LoRA only)."
    )
    load_in_4bit: bool = Field(False, description="4-bit base weights (QLoRA).")
    load_in_8bit: bool = Field(False, description="8-bit base weights.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit data type.")
    bnb_4bit_compute_dtype: Literal["bf16", "fp16", "fp32"] = Field("bf16", description="Compute dtype for 4-bit.")
    bnb_4bit_use_double_quant: bool = Field(True, description="Quantize the quantization constants too.")


class ModelArgs(Section):
    """How the base model is loaded."""

    dtype: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto",
        description="Weights and training precision. `auto`: bf16 on a GPU that supports it, else fp32 "
        "(the CPU). bf16/fp16 on a machine without support is a config error.",
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel (default: transformers' choice, sdpa where supported). "
        "`flash_attention_2` needs CUDA and the flash-attn package.",
    )
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint (only for models you trust)."
    )


class RunConf(Section):
    """The model, resuming, merging and checkpoint streaming."""

    model: str = Field(
        min_length=1,
        description="Base model folder: a local path, `bucket/path`, `s3://bucket/path`, or `hf://org/name` "
        "(downloaded from the Hugging Face Hub; needs network).",
    )
    tokenizer: str | None = Field(None, description="Tokenizer location if not the model's (same forms).")
    model_args: ModelArgs = Field(default_factory=ModelArgs, description="How the model is loaded.")
    resume_from_checkpoint: str = Field(
        "auto",
        description="`auto`: continue from the newest complete `checkpoint-<step>/` in the output dir (a "
        "finished run is not repeated); `none`: start fresh; or a path to one checkpoint folder.",
    )
    merge_adapter: bool = Field(
        False,
        description="LoRA only: merge the adapter into the base model and write it to "
        "`checkpoint-final/` (what you serve). The adapter alone stays in "
        "`checkpoint-final-adapter/`.",
    )
    checkpoints_remote: str | None = Field(
        None,
        description="Stream checkpoints to this bucket location (`bucket/path` or `s3://...`) while "
        "training and resume from it when the job restarts.",
    )
    logs_remote: str | None = Field(
        None,
        description="Bucket location for the TensorBoard event files (`logs/`); default "
        "`<checkpoints_remote>/logs`. Only with `checkpoints_remote`.",
    )
    skip_checkpoint_download: bool = Field(
        False, description="Start fresh instead of resuming from `checkpoints_remote` (uploads continue)."
    )

    _locations = field_validator("model", "tokenizer", "checkpoints_remote", "logs_remote")(_check_location)

    @field_validator("resume_from_checkpoint")
    @classmethod
    def _resume(cls, value: str) -> str:
        if value in ("auto", "none") or value.startswith(("/", "./", "../", "~")):
            return value
        raise ValueError(
            "must be `auto`, `none` or a local path to a checkpoint folder (starting with /, ./ "
            "or ../); to resume from the bucket use run_conf.checkpoints_remote"
        )


class LaunchConf(Section):
    """How `llmft train` starts the run's processes (the finetune chart fills this section)."""

    num_processes: PositiveInt = Field(
        1,
        description="Processes on this node, one per GPU (the chart: `finetuningGpus`, at least 1). More than "
        "one runs under `accelerate launch` with `accelerate_config`.",
    )
    distributed_type: Literal[DISTRIBUTED_PRESETS] | None = Field(  # type: ignore[valid-type]
        None,
        description="The preset `accelerate_config` was generated from (the chart: `distributedType`); each "
        "process checks that the launch really engaged it (DeepSpeed, FSDP, one process group).",
    )
    accelerate_config: str | None = Field(
        None,
        description="The accelerate config YAML (`llmft accelerate-config`; a relative path is relative to "
        "this config file). Needed for several processes, DeepSpeed or FSDP.",
    )
    num_nodes: PositiveInt = Field(
        1,
        description="Nodes (pods), each running num_processes processes (the chart: `finetuningNodes`). More "
        "than one needs a preset that spans nodes and `rendezvous_endpoint`; the node's rank comes from "
        "JOB_COMPLETION_INDEX.",
    )
    rendezvous_endpoint: str | None = Field(
        None,
        description="`host:port` of node 0's elastic rendezvous (c10d) when num_nodes > 1 (the chart: pod 0's "
        "name under its headless Service).",
    )
    max_restarts: Annotated[int, Field(ge=0)] = Field(
        3,
        description="With num_nodes > 1: how often the processes of every node restart together (from the "
        "newest complete checkpoint in the bucket) after one fails or a replaced node rejoins.",
    )


class SftArgs(Section):
    """Supervised fine-tuning settings."""

    max_seq_length: PositiveInt = Field(
        2048,
        description="Longest sample in tokens. Longer samples are left out, counted and reported "
        "(log and summary.json), never truncated.",
    )
    train_on_completions_only: bool = Field(
        True,
        description="Loss on assistant turns only (each with its end-of-turn token, so the model learns "
        "to stop). `false`: loss on the whole conversation.",
    )
    packing: bool = Field(False, description="Pack several samples into each sequence (isolated by attention).")
    labels: list[str | int] | None = Field(
        None,
        min_length=2,
        description="`task: sequence-classification`: the label set in id order (recorded in the model's "
        "config.json as `id2label` / `label2id`). Default: the sorted labels of the training data. A "
        "label outside the set in any dataset is an error.",
    )


class Tracking(Section):
    """MLflow tracking: on when this section is set (`training_args.report_to: [mlflow]` requires it).

    One MLflow run per training run (a resumed run continues it); params are the resolved config with
    secrets redacted, metrics are the rows of metrics.jsonl plus the summary's headline numbers.
    """

    mlflow_server_uri: str = Field(
        min_length=1,
        description="MLflow tracking URI: a server URL (`http://mlflow:5000`), a `sqlite:///path/mlflow.db` "
        "URI, or a local folder (`./mlruns`: an sqlite store `mlflow.db` in it).",
    )
    experiment_name: str = Field("llmft", description="MLflow experiment name.")
    run_name: str | None = Field(None, description="MLflow run name (default: `training_args.run_name`).")


class Overrides(Section):
    """Simple knobs for charts and sweeps, applied on top of `training_args`."""

    num_train_epochs: PositiveFloat | None = Field(None, description="Overrides `training_args.num_train_epochs`.")
    lr_multiplier: PositiveFloat = Field(1.0, description="Multiplies `training_args.learning_rate`.")
    lr_batch_size_scaling: Literal["none", "sqrt", "linear"] = Field(
        "none",
        description="Also multiply the learning rate by sqrt(total batch size) or by the total batch "
        "size (then `learning_rate` is the rate for a batch of one).",
    )


# ------------------------------------------------------------------------------------------ relations

SET = "set"  # a value is given: not absent, not null, not false, not an empty list
UNSET = "unset"  # the opposite of SET


@dataclass(frozen=True)
class Relation:
    """A rule between two keys: when `field` matches `when`, `other` must match `allowed`.

    Paths are key tuples from the config root; "[]" in `field` means every item of that list. `when` and
    `allowed` are SET, UNSET or a tuple of values. `message` may name `{other}` (the other key's value).
    The problem is reported at `report` (default: `field`). One table serves both checks: `problems()` here
    and the finetune chart's `helm template` checks that `llmft.chart_files` generates from it.
    """

    field: tuple
    when: tuple | str
    other: tuple
    allowed: tuple | str
    message: str
    report: tuple | None = None


def matches(value: Any, condition: tuple | str) -> bool:
    given = value is not None and value is not False and value != []
    if condition == SET:
        return given
    if condition == UNSET:
        return not given
    return value in condition


def _plain(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(exclude_unset=True)
    if isinstance(value, list):
        return [_plain(item) for item in value]
    return value


def _values_at(node: Any, path: tuple, where: tuple = ()) -> list[tuple[tuple, Any]]:
    """(concrete key path, value) for every value at `path` ("[]" expands a list; absent: None)."""
    if not path:
        return [(where, node)]
    head, rest = path[0], path[1:]
    if head == "[]":
        items = node if isinstance(node, list) else []
        return [found for index, item in enumerate(items) for found in _values_at(item, rest, where + (index,))]
    if isinstance(head, int):
        child = node[head] if isinstance(node, list) and head < len(node) else None
    else:
        child = getattr(node, head, None) if node is not None else None
    return _values_at(child, rest, where + (head,))


def relation_problems(config: Section, relations: tuple[Relation, ...]) -> list[tuple[tuple, str, Any]]:
    found = []
    for relation in relations:
        ((_, other),) = _values_at(config, relation.other)
        for where, value in _values_at(config, relation.field):
            if matches(value, relation.when) and not matches(other, relation.allowed):
                report = where if relation.report is None else relation.report
                ((_, reported),) = _values_at(config, report)
                found.append((report, relation.message.format(other=other), _plain(reported)))
    return found


# The column_map fields each kind of data reads, and the dataset options that apply to it.
COLUMN_FIELDS = {
    "chat": ("messages", "input", "output", "system", "instruction"),
    "text": ("text",),
    "sequence-classification": ("text", "label"),
    "dpo": ("prompt", "chosen", "rejected"),
}
_SYSTEM_PROMPT_KINDS = ("chat", "dpo")


def dataset_option_problems(data_conf: DataConf, kind: str) -> list[tuple[tuple, str, Any]]:
    """Dataset options that the kind of data (`kind`) does not read, and files of an unknown format."""
    found: list[tuple[tuple, str, Any]] = []
    groups = [("training_data", data_conf.training_data.datasets)]
    groups.append(("validation_data", data_conf.validation_data.datasets or []))
    for group, specs in groups:
        for index, spec in enumerate(specs):
            where = ("data_conf", group, "datasets", index)
            if source_of(spec.path, spec.source) is None:
                found.append(
                    (
                        (*where, "source"),
                        f"cannot tell the format of {spec.path} from its extension; set source to one of "
                        f"{', '.join(DATASET_SOURCES)}",
                        None,
                    )
                )
            if spec.column_map is not None:
                allowed = COLUMN_FIELDS.get(kind, ())
                for field in spec.column_map.as_dict():
                    if field not in allowed:
                        found.append(
                            (
                                (*where, "column_map", field),
                                f"{kind} data does not read {field}; it reads {', '.join(allowed)}",
                                spec.column_map.as_dict()[field],
                            )
                        )
            if spec.new_system_prompt is not None and kind not in _SYSTEM_PROMPT_KINDS:
                found.append(((*where, "new_system_prompt"), f"{kind} data has no system message", None))
            if spec.train_on_input is not None and kind != "chat":
                found.append(
                    (
                        (*where, "train_on_input"),
                        "only chat data has an input to leave out of the loss"
                        + ("; text trains on every token" if kind == "text" else ""),
                        spec.train_on_input,
                    )
                )
    return found


_WEIGHTED_MIX = ("data_conf", "training_data", "type")
_VALIDATION = ("data_conf", "validation_data")
_EVALUATES = ("steps", "epoch")
_BEST_NEEDS_EVALUATION = "picking the best checkpoint needs evaluation; set eval_strategy: steps (and validation data)"

# ------------------------------------------------------------------------------------------ the configs


class CommonConfig(Section):
    """Sections shared by every training method (SFT now, DPO next)."""

    if TYPE_CHECKING:
        method: str  # each method's config declares it as a Literal field (`SftConfig.method`)

    data_conf: DataConf = Field(description="Data input: datasets, chat template, padding.")
    training_args: TrainingArgs = Field(
        default_factory=TrainingArgs, description="Optimizer, schedule, logging, evaluation and saving."
    )
    batchsize_conf: BatchsizeConf = Field(default_factory=BatchsizeConf, description="Batch size.")
    peft_conf: PeftConf = Field(description="LoRA or full-parameter training.")
    quant_conf: QuantConf = Field(default_factory=QuantConf, description="Quantized base model (QLoRA).")
    run_conf: RunConf = Field(description="Model, resume, merge and checkpoint streaming.")
    tracking: Tracking | None = Field(
        None,
        description="MLflow tracking (off unless set). metrics.jsonl is always written; TensorBoard is "
        "`training_args.report_to: [tensorboard]`.",
    )
    overrides: Overrides = Field(default_factory=Overrides, description="Learning-rate and epoch overrides.")
    launch_conf: LaunchConf = Field(default_factory=LaunchConf, description="Processes and distributed launch.")

    RELATIONS: ClassVar[tuple[Relation, ...]] = (
        Relation(
            ("data_conf", "training_data", "datasets", "[]", "sampling_weight"),
            SET,
            _WEIGHTED_MIX,
            ("PRECOMPUTE_WEIGHTED_MIX",),
            "only used with training_data.type PRECOMPUTE_WEIGHTED_MIX; remove it or change the type",
        ),
        Relation(
            _VALIDATION + ("type",),
            ("CONCATENATION",),
            _VALIDATION + ("datasets",),
            SET,
            "required with validation_data.type CONCATENATION (a list of {{path: ...}})",
            report=_VALIDATION + ("datasets",),
        ),
        Relation(
            _VALIDATION + ("datasets",),
            SET,
            _VALIDATION + ("type",),
            ("CONCATENATION",),
            "only used with validation_data.type CONCATENATION, but the type is {other}",
        ),
        Relation(
            _VALIDATION + ("ratio",),
            SET,
            _VALIDATION + ("type",),
            ("AUTO_SPLIT",),
            "only used with validation_data.type AUTO_SPLIT, but the type is {other}",
        ),
        Relation(
            ("training_args", "eval_strategy"),
            _EVALUATES,
            _VALIDATION + ("type",),
            ("AUTO_SPLIT", "CONCATENATION"),
            "needs validation data; set data_conf.validation_data (AUTO_SPLIT or CONCATENATION) or eval_strategy: no",
        ),
        Relation(
            ("training_args", "save_strategy"),
            ("best",),
            ("training_args", "eval_strategy"),
            _EVALUATES,
            _BEST_NEEDS_EVALUATION,
        ),
        Relation(
            ("training_args", "load_best_model_at_end"),
            (True,),
            ("training_args", "eval_strategy"),
            _EVALUATES,
            _BEST_NEEDS_EVALUATION,
        ),
        Relation(
            ("training_args", "metric_for_best_model"),
            SET,
            ("training_args", "eval_strategy"),
            _EVALUATES,
            "is read from evaluations, and eval_strategy is {other}; set eval_strategy: steps (and "
            "validation data) or remove it",
        ),
        Relation(
            ("training_args", "warmup_ratio"),
            SET,
            ("training_args", "warmup_steps"),
            UNSET,
            "set either warmup_steps or warmup_ratio, not both",
        ),
        Relation(
            ("peft_conf", "peft_kwargs"),
            SET,
            ("peft_conf", "peft_type"),
            ("LORA",),
            "only used with peft_type LORA; remove it for full-parameter training (NO_PEFT)",
        ),
        Relation(
            ("run_conf", "logs_remote"),
            SET,
            ("run_conf", "checkpoints_remote"),
            SET,
            "only used with run_conf.checkpoints_remote (logs stream with the checkpoints)",
        ),
        Relation(
            ("quant_conf", "quantization_type"),
            ("bits-and-bytes",),
            ("peft_conf", "peft_type"),
            ("LORA",),
            "a quantized model cannot be trained in full; use peft_conf.peft_type: LORA (QLoRA) or "
            "quantization_type: no-quantization",
        ),
        Relation(
            ("quant_conf", "load_in_4bit"),
            (True,),
            ("quant_conf", "quantization_type"),
            ("bits-and-bytes",),
            "only used with quantization_type: bits-and-bytes",
        ),
        Relation(
            ("quant_conf", "load_in_8bit"),
            (True,),
            ("quant_conf", "quantization_type"),
            ("bits-and-bytes",),
            "only used with quantization_type: bits-and-bytes",
        ),
    )

    def data_kind(self) -> str:
        """What every dataset row holds: the SFT `task` (chat, text, sequence-classification) or `dpo`."""
        return getattr(self, "task", None) or self.method

    def problems(self) -> list[tuple[tuple, str, Any]]:
        """Cross-field problems: (key path, what is wrong and the fix, the value at fault).

        The rules between two keys are data (`RELATIONS`, also checked at `helm template`); the rest
        (lists, counts) are code here.
        """
        found = relation_problems(self, self.RELATIONS)
        args, quant = self.training_args, self.quant_conf
        targets = [args.report_to] if isinstance(args.report_to, str) else list(args.report_to)
        if "none" in targets and len(targets) > 1:
            found.append((("training_args", "report_to"), "`none` cannot be combined with other targets", targets))
        if "mlflow" in targets and self.tracking is None:
            found.append(
                (
                    ("tracking",),
                    "required when training_args.report_to includes mlflow (tracking.mlflow_server_uri)",
                    None,
                )
            )
        found += dataset_option_problems(self.data_conf, self.data_kind())
        best = args.metric_for_best_model
        if best is not None:
            from llmft.finetune.metric_catalog import catalog  # what each method's evaluation writes

            evaluated = sorted(
                name.removeprefix("eval_")
                for name, source in catalog(self.method, getattr(self, "task", None)).items()
                if source.file == "metrics.jsonl" and source.needs_evaluation
            )
            if best.removeprefix("eval_") not in evaluated:
                found.append(
                    (
                        ("training_args", "metric_for_best_model"),
                        f"no evaluation of this method writes it; use one of {', '.join(evaluated)}",
                        best,
                    )
                )
        if quant.quantization_type == "bits-and-bytes" and quant.load_in_4bit == quant.load_in_8bit:
            found.append(
                (
                    ("quant_conf", "load_in_4bit"),
                    "with bits-and-bytes set exactly one of load_in_4bit or load_in_8bit to true",
                    quant.load_in_4bit,
                )
            )
        return found


TASKS = ("chat", "text", "sequence-classification")


class SftConfig(CommonConfig):
    """Supervised fine-tuning (`llmft sft CONFIG`)."""

    method: Literal["sft"] = Field("sft", description="Training method: `sft`.")
    task: Literal[TASKS] = Field(  # type: ignore[valid-type]
        "chat",
        description="What is trained (docs/tasks.md). `chat`: a causal LM on conversations (loss on the "
        "assistant turns). `text`: a causal LM on plain text (a `text` column; loss on every token; "
        "continued pre-training). `sequence-classification`: a classification head on any encoder or "
        "decoder (`AutoModelForSequenceClassification`) from `text` and `label` columns; evaluation "
        "writes `eval_accuracy` and macro `eval_f1`.",
    )
    sft_args: SftArgs = Field(default_factory=SftArgs, description="SFT settings.")

    def problems(self) -> list[tuple[tuple, str, Any]]:
        found = super().problems()
        if self.sft_args.packing and importlib.util.find_spec("llmft.finetune.packing") is None:
            found.append((("sft_args", "packing"), "packing is not available in this build; set packing: false", True))
        classification = self.task == "sequence-classification"
        if classification and self.sft_args.packing:
            found.append((("sft_args", "packing"), "a classifier sees one text per row; set packing: false", True))
        if self.sft_args.labels is not None and not classification:
            found.append(
                (("sft_args", "labels"), f"only used with task: sequence-classification (task is {self.task})", None)
            )
        peft = self.peft_conf
        if peft.peft_type == "LORA" and "task_type" in peft.model_fields_set:
            wanted = "SEQ_CLS" if classification else "CAUSAL_LM"
            if peft.task_type != wanted:
                found.append(
                    (
                        ("peft_conf", "task_type"),
                        f"task {self.task} trains with task_type {wanted}; set it or remove the key",
                        peft.task_type,
                    )
                )
        return found


# The method of a config that names none.
DEFAULT_METHOD = "sft"
# Methods and where their config model lives. DPO registers itself by providing the module.
METHODS: dict[str, str] = {
    "sft": "llmft.finetune.config:SftConfig",
    "dpo": "llmft.finetune.dpo_config:DpoConfig",
}

# Keys users carry over from other engines, and where the setting lives here.
MOVED_KEYS = {
    "bf16": "precision is run_conf.model_args.dtype (auto | bf16 | fp16 | fp32); `bf16: true` is read as dtype: bf16",
    "fp16": "precision is run_conf.model_args.dtype (auto | bf16 | fp16 | fp32); `fp16: true` is read as dtype: fp16",
    "torch_dtype": "use run_conf.model_args.dtype (auto | bf16 | fp16 | fp32); bfloat16, float16, float32 and auto "
    "are read as such",
    "push_to_hub": "the engine never pushes to the Hub (only `push_to_hub: false` is accepted): outputs go to "
    "checkpoints_remote; remove the key",
    "use_cache": "training always runs without the KV cache (only `use_cache: false` is accepted); remove the key",
    "per_device_train_batch_size": "batch sizes are set in batchsize_conf",
    "gradient_accumulation_steps": "accumulation follows from batchsize_conf.total_train_batch_size",
    "per_device_eval_batch_size": "use batchsize_conf.per_device_eval_batch_size",
    "evaluation_strategy": "it is called eval_strategy",
    "sft_args": "sft_args belongs to method: sft; a DPO config has dpo_args (max_length)",
    "dpo_args": "dpo_args belongs to method: dpo; an SFT config has sft_args",
}


# The original engine's spellings (the silogen/ai-workloads tutorial files), accepted where the meaning maps
# exactly: key path -> {JSON of an accepted value: the run_conf.model_args.dtype it means, or None where it is
# what this engine always does}. Any other value stays in place and is reported with its MOVED_KEYS note.
ORIGINAL_KEYS: dict[tuple[str, ...], dict[str, str | None]] = {
    ("training_args", "bf16"): {"true": "bf16"},
    ("training_args", "fp16"): {"true": "fp16"},
    ("run_conf", "model_args", "torch_dtype"): {
        '"bfloat16"': "bf16",
        '"float16"': "fp16",
        '"float32"': "fp32",
        '"auto"': "auto",
    },
    ("training_args", "push_to_hub"): {"false": None},
    ("run_conf", "model_args", "use_cache"): {"false": None},
}
DTYPE_PATH = ("run_conf", "model_args", "dtype")


def _accept_original_keys(data: dict) -> list[tuple]:
    """Read the original engine's spellings (ORIGINAL_KEYS) in place; the problems of ones that disagree.

    `bf16: true` with `torch_dtype: bfloat16` (the tutorial's pair) is dtype bf16; two keys naming different
    precisions are a problem naming both.
    """
    from llmft.finetune.templates import ORIGINAL_NAMES

    problems: list[tuple] = []
    data_conf = data.get("data_conf")
    if isinstance(data_conf, dict) and data_conf.get("chat_template_name") in ORIGINAL_NAMES:
        name = data_conf.pop("chat_template_name")
        problems.append(
            (("data_conf", "chat_template_name"), "a template name of the original engine", name, ORIGINAL_NAMES[name])
        )
    precisions: dict[tuple, str] = {}
    shown = []
    for path, accepted in ORIGINAL_KEYS.items():
        *parents, key = path
        section: Any = data
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if not isinstance(section, dict) or key not in section:
            continue
        spelled = json.dumps(section[key])
        if spelled not in accepted:
            continue  # reported as an unknown key, with the new spelling (MOVED_KEYS)
        meaning = accepted[spelled]
        value = section.pop(key)
        if meaning is not None:
            precisions[path] = meaning
            shown.append(f"{'.'.join(path)}: {json.dumps(value)}")
    run_conf = data.setdefault("run_conf", {}) if precisions else None
    model_args = run_conf.setdefault("model_args", {}) if isinstance(run_conf, dict) else None
    if not isinstance(model_args, dict):
        return problems  # no precision given, or run_conf / model_args is not a mapping (the model reports it)
    if "dtype" in model_args:
        precisions[DTYPE_PATH] = model_args["dtype"]
        shown.append(f"{'.'.join(DTYPE_PATH)}: {json.dumps(model_args['dtype'])}")
    if len(set(map(str, precisions.values()))) > 1:
        problems.append(
            (
                DTYPE_PATH,
                f"the precision keys disagree ({', '.join(shown)})",
                _MISSING,
                "keep only run_conf.model_args.dtype",
            )
        )
    else:
        model_args["dtype"] = next(iter(precisions.values()))
    return problems


def config_model(method: str) -> type[CommonConfig]:
    """The config class for `method`; a clear error if the method is unknown or not built yet."""
    if method not in METHODS:
        raise UserError(f"{DEFAULT_KEY_PREFIX}.method: must be one of {', '.join(METHODS)}, got {json.dumps(method)}")
    module_name, _, class_name = METHODS[method].partition(":")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            raise
        raise UserError(f"method {method!r} is not yet available in this build of llmft") from None
    return getattr(module, class_name)


# ------------------------------------------------------------------------------------------ loading


def _read_source(source: str | os.PathLike | dict) -> dict:
    if isinstance(source, dict):
        data = copy.deepcopy(source)
    else:
        from llmft.yamlfile import read_yaml

        path = Path(source)
        data = read_yaml(path, "config file")
        if data is None:
            raise UserError(f"config file {path} is empty")
    if not isinstance(data, dict):
        raise UserError(f"the config must be a mapping of sections (method, data_conf, ...), got {type(data).__name__}")
    if set(data) == {DEFAULT_KEY_PREFIX} and isinstance(data[DEFAULT_KEY_PREFIX], dict):
        data = data[DEFAULT_KEY_PREFIX]  # a values-style file with the config under finetuning_config
    return data


def load_config(source: str | os.PathLike | dict, key_prefix: str = DEFAULT_KEY_PREFIX) -> CommonConfig:
    """Validate a config file or dict; raise one UserError listing every problem.

    Each problem reads `<key_prefix>.<key.path>: <what is wrong>, got <value>` with what is allowed.
    """
    data = _read_source(source)
    method = data.get("method", DEFAULT_METHOD)
    if not isinstance(method, str) or method not in METHODS:
        raise UserError(f"{key_prefix}.method: must be one of {', '.join(METHODS)}, got {json.dumps(method)}")
    model = config_model(method)
    schema = _inline_refs(model.model_json_schema())
    original = _accept_original_keys(data)
    try:
        config = model.model_validate(data)
    except ValidationError as error:
        raise UserError(_format_problems(original + _pydantic_problems(error, schema), key_prefix)) from None
    problems = original + config.problems()
    if problems:
        raise UserError(_format_problems(problems, key_prefix))
    return config


def config_json_schema(method: str) -> dict:
    """The self-contained JSON Schema (no $ref/$defs; additionalProperties false on every section)."""
    schema = _inline_refs(config_model(method).model_json_schema())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema


def _inline_refs(schema: dict) -> dict:
    definitions = schema.get("$defs", {})

    def resolve(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                target = resolve(definitions[node["$ref"].rsplit("/", 1)[-1]])
                extra = {key: resolve(value) for key, value in node.items() if key != "$ref"}
                return {**target, **extra}
            return {key: resolve(value) for key, value in node.items() if key != "$defs"}
        if isinstance(node, list):
            return [resolve(item) for item in node]
        return node

    return resolve(schema)


# ------------------------------------------------------------------------------------------ messages


def _describe(schema: dict) -> str:
    """What a schema allows, in words: `a positive integer`, `one of "a", "b"`, ..."""
    if "const" in schema:
        return json.dumps(schema["const"])
    if "enum" in schema:
        return "one of " + ", ".join(json.dumps(value) for value in schema["enum"])
    if "anyOf" in schema:
        options = [option for option in schema["anyOf"] if option.get("type") != "null"]
        text = " or ".join(_describe(option) for option in options)
        return text + (" (or null)" if len(options) < len(schema["anyOf"]) else "")
    kind = schema.get("type")
    if kind == "integer":
        if schema.get("exclusiveMinimum") == 0 or schema.get("minimum") == 1:
            return "a positive integer"
        if schema.get("minimum") == 0:
            return "a non-negative integer"
        if "minimum" in schema:
            return f"an integer >= {schema['minimum']}"
        return "an integer"
    if kind == "number":
        bounds = []
        if "exclusiveMinimum" in schema:
            bounds.append(f"greater than {schema['exclusiveMinimum']:g}")
        if "minimum" in schema:
            bounds.append(f"at least {schema['minimum']:g}")
        if "exclusiveMaximum" in schema:
            bounds.append(f"less than {schema['exclusiveMaximum']:g}")
        if "maximum" in schema:
            bounds.append(f"at most {schema['maximum']:g}")
        return "a number" + (" " + " and ".join(bounds) if bounds else "")
    if kind == "boolean":
        return "true or false"
    if kind == "string":
        return "a non-empty string" if schema.get("minLength") else "a string"
    if kind == "array":
        items = schema.get("items", {})
        names = {"string": "strings", "integer": "integers", "number": "numbers", "object": "objects"}
        text = f"a list of {names.get(items.get('type'), 'items')}"
        if items.get("type") == "object" and items.get("properties"):
            text += f" with keys {', '.join(items['properties'])}"
        if schema.get("minLength") or schema.get("minItems"):
            text = "a non-empty " + text[2:]
        return text
    if kind == "object":
        if schema.get("properties"):
            return f"a mapping with keys {', '.join(schema['properties'])}"
        return "a mapping"
    return "a valid value"


def _walk(schema: dict, loc: tuple) -> tuple[tuple, dict | None, dict | None]:
    """Follow a pydantic error location through the schema.

    Returns the user-visible key path (union member tags dropped), the schema there, and the
    schema of the enclosing mapping (for unknown-key suggestions).
    """
    path: list = []
    node: dict | None = schema
    parent: dict | None = None
    for part in loc:
        if node is not None and "anyOf" in node:
            present = [o for o in node["anyOf"] if o.get("type") != "null"]
            if len(present) == 1:  # an optional section: look inside it
                node = present[0]
        if node is None:
            path.append(part)
            continue
        options = [node] + [o for o in node.get("anyOf", []) if isinstance(o, dict)]
        for option in options:
            if isinstance(part, int) and option.get("type") == "array":
                parent, node = None, option.get("items", {})
                path.append(part)
                break
            if isinstance(part, str) and part in option.get("properties", {}):
                parent, node = option, option["properties"][part]
                path.append(part)
                break
        else:
            if isinstance(part, str) and node.get("anyOf"):
                continue  # a union member tag such as 'int' or "literal['all-linear']"
            if isinstance(part, str) and node.get("type") == "object" and "properties" in node:
                parent = node
            path.append(part)
            node = None
    return tuple(path), node, parent


def _value(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def _pydantic_problems(error: ValidationError, schema: dict) -> list[tuple]:
    problems: list[tuple] = []
    seen: set[tuple] = set()
    for item in error.errors(include_url=False):
        path, node, parent = _walk(schema, tuple(item["loc"]))
        if path in seen:
            continue  # one message per key, even when several union members failed
        seen.add(path)
        kind = item["type"]
        if kind == "extra_forbidden":
            key = str(path[-1]) if path else ""
            allowed = list((parent or {}).get("properties", {}))
            hint = MOVED_KEYS.get(key)
            close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
            notes = [hint] if hint else [f"did you mean {close[0]}?"] if close else []
            if allowed and not hint:
                notes.append(f"allowed keys: {', '.join(allowed)}")
            problems.append((path, "unknown key", item["input"], " ".join(notes)))
        elif kind == "missing":
            what = _describe(node) if node else "a value"
            problems.append((path, f"required, expected {what}", _MISSING))
        elif kind in ("value_error", "assertion_error"):
            message = item["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
            problems.append((path, message, item["input"]))
        else:
            what = _describe(node) if node else item["msg"]
            problems.append((path, f"must be {what}", item["input"]))
    return problems


_MISSING = object()


def _format_problems(problems: Sequence[tuple], key_prefix: str, noun: str = "config") -> str:
    lines = []
    for path, message, value, *after in problems:
        key = ".".join(
            ([key_prefix] if key_prefix else []) + [f"[{p}]" if isinstance(p, int) else str(p) for p in path]
        )
        key = key.replace(".[", "[")
        got = "" if value is _MISSING else f", got {_value(value)}"
        note = f" ({after[0]})" if after and after[0] else ""
        lines.append(f"{key}: {message}{got}{note}")
    count = len(lines)
    header = f"invalid {noun} ({count} problem{'s' if count != 1 else ''}):"
    return header + "\n  " + "\n  ".join(lines)


def validate_spec(model: type[BaseModel], data: dict, noun: str, problems=None):
    """`data` validated by `model` (a spec other than the finetune config: no key prefix); one UserError
    `invalid <noun> (N problems):` listing every problem, pydantic's and then `problems(spec)`'s."""
    try:
        spec = model.model_validate(data)
    except ValidationError as error:
        schema = _inline_refs(model.model_json_schema())
        raise UserError(_format_problems(_pydantic_problems(error, schema), "", noun)) from None
    found = problems(spec) if problems else []
    if found:
        raise UserError(_format_problems(found, "", noun))
    return spec


def read_spec_file(path: Path, what: str) -> dict:
    """A YAML spec file that must hold a mapping (`what` says what it is and which keys it has)."""
    from llmft.yamlfile import read_yaml

    data = read_yaml(Path(path), "spec file")
    if not isinstance(data, dict):
        raise UserError(f"{path}: {what}")
    return data
