"""docs/config-reference.md, generated from the config models (`llmft config-reference`, `make docs`).

Every row comes from a field's type, default and description, so the reference cannot drift from
what `load_config` accepts; a test compares the committed file with this output.
"""

from __future__ import annotations

import json

from llmft.finetune.config import _describe, config_json_schema

EXAMPLE = """\
method: sft
data_conf:
  training_data:
    type: CONCATENATION
    datasets:
      - path: default-bucket/datasets/train.jsonl
  validation_data:
    type: AUTO_SPLIT
    ratio: 0.1
  chat_template_name: chat-ml
  missing_pad_token_strategy: bos-repurpose
training_args:
  output_dir: ./checkpoints
  learning_rate: 1.0e-4
  max_steps: 60
  logging_steps: 5
  save_steps: 20
  eval_strategy: steps
  eval_steps: 20
  report_to: []
batchsize_conf:
  total_train_batch_size: 8
  max_per_device_train_batch_size: 4
peft_conf:
  peft_type: LORA
  task_type: CAUSAL_LM
  peft_kwargs:
    r: 8
    lora_alpha: 16
    lora_dropout: 0.0
    target_modules: all-linear
quant_conf:
  quantization_type: no-quantization
run_conf:
  model: default-bucket/models/tiny-llama
  resume_from_checkpoint: auto
  merge_adapter: true
sft_args:
  max_seq_length: 512
  train_on_completions_only: true
"""


def _object(schema: dict) -> dict | None:
    """The object schema inside `schema` (directly, optional, or as list items), if any."""
    if schema.get("type") == "object" and schema.get("properties"):
        return schema
    if schema.get("type") == "array":
        return _object(schema.get("items", {}))
    for option in schema.get("anyOf", []):
        found = _object(option)
        if found:
            return found
    return None


def _default(schema: dict, required: bool) -> str:
    if required:
        return "**required**"
    if "default" not in schema:
        return ""
    value = schema["default"]
    if isinstance(value, dict):
        return "see below" if value else "`{}`"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _section(name: str, schema: dict, lines: list[str]) -> None:
    nested = []
    lines += ["", f"## `{name}`", ""]
    if schema.get("description"):
        lines += [_cell(schema["description"]).replace("\\|", "|"), ""]
    lines += ["| Key | Allowed values | Default | Description |", "| --- | --- | --- | --- |"]
    required = set(schema.get("required", []))
    for key, field in schema["properties"].items():
        inner = _object(field)
        allowed = _describe(field)
        if inner is not None:
            child = f"{name}.{key}" + (
                "[]"
                if field.get("type") == "array"
                or any(option.get("type") == "array" for option in field.get("anyOf", []))
                else ""
            )
            nested.append((child, inner))
            allowed = f"see [`{child}`](#{_anchor(child)})" + (
                " (or null)" if any(option.get("type") == "null" for option in field.get("anyOf", [])) else ""
            )
        lines.append(
            f"| `{key}` | {_cell(allowed)} | {_default(field, key in required)} | "
            f"{_cell(field.get('description', ''))} |"
        )
    for child, inner in nested:
        _section(child, inner, lines)


def _anchor(name: str) -> str:
    return "".join(ch for ch in name.lower() if ch.isalnum() or ch in "-_")


DPO_EXAMPLE = """\
method: dpo
data_conf:
  training_data: {type: CONCATENATION, datasets: [{path: default-bucket/datasets/prefs.jsonl}]}
  validation_data: {type: NONE}
  chat_template_name: keep-original
training_args: {output_dir: ./checkpoints, beta: 0.1, loss_type: sigmoid, learning_rate: 5.0e-5, max_steps: 40,
                logging_steps: 5, report_to: []}
batchsize_conf: {total_train_batch_size: 8, max_per_device_train_batch_size: 4}
peft_conf: {peft_type: LORA, task_type: CAUSAL_LM, peft_kwargs: {r: 8, lora_alpha: 16, target_modules: all-linear}}
run_conf: {model: default-bucket/experiments/my-sft-run/checkpoint-final}
dpo_args: {max_length: 1024}
"""


def _dpo_part(lines: list[str]) -> None:
    """What a DPO config adds to or changes from the SFT sections above."""
    sft, dpo = config_json_schema("sft"), config_json_schema("dpo")
    lines += [
        "",
        "# DPO (`method: dpo`)",
        "",
        "`llmft dpo CONFIG.yaml` reads the same sections as SFT except `sft_args`, which is replaced by "
        "`dpo_args`; `training_args` gains DPO's keys below. Data: one preference pair per line, "
        '`{"prompt_messages": [...], "chosen_messages": [...], "rejected_messages": [...]}` or TRL\'s '
        'conversational `{"prompt": [...], "chosen": [...], "rejected": [...]}`. With LoRA the reference '
        "model is the base model with the adapter disabled (no second copy in memory); full-parameter training "
        "keeps a frozen copy unless `precompute_ref_log_probs` is set. `run_conf.model` may be an SFT run's "
        "`checkpoint-final`. `llmft config-schema dpo` prints the JSON Schema.",
        "",
        "```yaml",
        DPO_EXAMPLE.rstrip("\n"),
        "```",
    ]
    for name, section in dpo["properties"].items():
        if name == "method":
            continue
        inner = _object(section)
        assert inner is not None, f"finetuning_config.{name}: every section other than `method` is an object"
        if name not in sft["properties"]:
            _section(f"finetuning_config.{name}", inner, lines)
            continue
        before = _object(sft["properties"][name]) or {}
        added = {
            key: value for key, value in inner.get("properties", {}).items() if key not in before.get("properties", {})
        }
        if added:
            extra = dict(
                inner, properties=added, description=f"DPO's keys in `{name}`, besides those of the SFT table above."
            )
            _section(f"finetuning_config.{name} (method: dpo)", extra, lines)


def config_reference(method: str | None = None) -> str:
    """The reference: SFT's sections, then what DPO adds (or one method's sections only)."""
    schema = config_json_schema(method or "sft")
    lines = [
        "# Fine-tuning config reference",
        "",
        "<!-- Generated by `llmft config-reference` from engine/llmft/finetune/config.py; do not edit by hand. "
        "Run `make docs` after changing the config models. -->",
        "",
        "`llmft sft CONFIG.yaml` reads one YAML file with the sections below (in the finetune chart they sit "
        "under `finetuning_config`). Unknown keys are errors; a bad config fails before any model is loaded, "
        "with every problem listed as `finetuning_config.<key.path>: <what is wrong>, got <value>`. "
        "Locations (`path`, `model`, `checkpoints_remote`) follow one rule: `/`, `./`, `../` mean local, "
        "`s3://bucket/key` and `bucket/key` mean the bucket. `llmft config-schema sft` prints the same rules "
        "as JSON Schema.",
        "",
        "A complete LoRA example (full-parameter training: `peft_conf: {peft_type: NO_PEFT}`):",
        "",
        "```yaml",
        EXAMPLE.rstrip("\n"),
        "```",
    ]
    top = dict(schema)
    top["description"] = "The top-level sections."
    top["properties"] = {
        "method": schema["properties"]["method"],
        **{k: v for k, v in schema["properties"].items() if k != "method"},
    }
    _section("finetuning_config", top, lines)
    if method is None:
        _dpo_part(lines)
    return "\n".join(lines) + "\n"
