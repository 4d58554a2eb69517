"""The fine-tuning config: the contract config loads, bad configs fail with every problem named,
the JSON Schema is self-contained and agrees with the models, the docs are generated from them."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmft.errors import UserError
from llmft.finetune.config import SftConfig, config_json_schema, load_config
from llmft.finetune.model import machine_problems
from llmft.finetune.reference import config_reference

REPO = Path(__file__).resolve().parent.parent

# The config of issue 3 ("the config contract"), exactly as written there.
CONTRACT = """
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
  model: /path/to/model
  resume_from_checkpoint: auto
  merge_adapter: true
sft_args:
  max_seq_length: 512
  train_on_completions_only: true
"""


def contract() -> dict:
    return yaml.safe_load(CONTRACT)


def test_contract_config_loads_as_written(tmp_path):
    path = tmp_path / "sft.yaml"
    path.write_text(CONTRACT)
    config = load_config(path)
    assert isinstance(config, SftConfig)
    assert config.peft_conf.lora().r == 8 and config.peft_conf.lora().target_modules == "all-linear"
    assert config.training_args.learning_rate == 1e-4
    assert config.data_conf.validation_data.ratio == 0.1
    assert config.training_args.output_dir == "./checkpoints"
    full = contract()
    full["peft_conf"] = {"peft_type": "NO_PEFT"}
    assert load_config(full).peft_conf.lora() is None


@pytest.mark.parametrize("location", ["./data/train.jsonl", "s3://bucket/datasets/train.jsonl", "bucket/train.jsonl"])
def test_dataset_and_model_locations_in_every_form(location):
    data = contract()
    data["data_conf"]["training_data"]["datasets"][0]["path"] = location
    data["run_conf"]["model"] = location.replace("train.jsonl", "model")
    assert load_config(data).data_conf.training_data.datasets[0].path == location


def test_output_dir_is_read_from_the_config_only(monkeypatch):
    monkeypatch.setenv("LLMFT_OUTPUT_DIR", "/tmp/from-env")  # the environment variable of earlier versions
    assert load_config(contract()).training_args.output_dir == "./checkpoints"


@pytest.mark.parametrize(
    "location, problem",
    [
        ("not a path", 'run_conf.checkpoints_remote: "not a path" is not a bucket name'),
        ("default-bucket/../etc", "run_conf.checkpoints_remote: '..' is not allowed in a bucket key"),
    ],
)
def test_bad_bucket_locations_fail_naming_the_key_and_the_fix(location, problem):
    data = contract()
    data["run_conf"]["checkpoints_remote"] = location
    with pytest.raises(UserError, match=re.escape(problem)):
        load_config(data)


def _set(data: dict, path: str, value) -> None:
    keys = path.split(".")
    for key in keys[:-1]:
        data = data[int(key)] if key.isdigit() else data.setdefault(key, {})
    if value is DELETE:
        del data[keys[-1]]
    else:
        data[keys[-1]] = value


DELETE = object()

# (what to change, the line the error must contain)
BAD_CONFIGS = [
    (
        {"peft_conf.peft_kwargs.r": "eight"},
        'finetuning_config.peft_conf.peft_kwargs.r: must be a positive integer, got "eight"',
    ),
    ({"peft_conf.peft_kwargs.r": 0}, "finetuning_config.peft_conf.peft_kwargs.r: must be a positive integer, got 0"),
    (
        {"peft_conf.peft_kwarg": {"r": 8}},
        'finetuning_config.peft_conf.peft_kwarg: unknown key, got {"r": 8} (did you mean peft_kwargs?',
    ),
    (
        {"training_args.learning_rat": 0.1},
        "finetuning_config.training_args.learning_rat: unknown key, got 0.1 (did you mean learning_rate?",
    ),
    (
        {"training_args.bf16": False},
        "finetuning_config.training_args.bf16: unknown key, got false (precision is run_conf.model_args.dtype",
    ),
    (
        {"peft_conf.peft_type": "LORAX"},
        'finetuning_config.peft_conf.peft_type: must be one of "NO_PEFT", "LORA", got "LORAX"',
    ),
    (
        {"data_conf.chat_template_name": "chatml"},
        'finetuning_config.data_conf.chat_template_name: must be one of "keep-original", "chat-ml", "llama-3", '
        'got "chatml"',
    ),
    (
        {"peft_conf.peft_kwargs.target_modules": []},
        "finetuning_config.peft_conf.peft_kwargs.target_modules: must be a non-empty list of strings or "
        '"all-linear", got []',
    ),
    (
        {"peft_conf.peft_kwargs.lora_dropout": 1.5},
        "finetuning_config.peft_conf.peft_kwargs.lora_dropout: must be a number at least 0 and less than 1, got 1.5",
    ),
    (
        {"data_conf.validation_data.ratio": 1.2},
        "finetuning_config.data_conf.validation_data.ratio: must be a number greater than 0 and less than 1 "
        "(or null), got 1.2",
    ),
    (
        {"data_conf.training_data.datasets": []},
        "finetuning_config.data_conf.training_data.datasets: must be a non-empty list of objects with keys path, "
        "source, split, sampling_weight, column_map, new_system_prompt, train_on_input, got []",
    ),
    ({"run_conf.model": DELETE}, "finetuning_config.run_conf.model: required, expected a non-empty string"),
    (
        {"run_conf.model": "ftp://host/model"},
        "finetuning_config.run_conf.model: location 'ftp://host/model': scheme ftp:// is not supported here",
    ),
    (
        {"run_conf.resume_from_checkpoint": "sometimes"},
        "finetuning_config.run_conf.resume_from_checkpoint: must be `auto`, `none` or a local path",
    ),
    (
        {"batchsize_conf.total_train_batch_size": -8},
        "finetuning_config.batchsize_conf.total_train_batch_size: must be a positive integer (or null), got -8",
    ),
    (
        {"training_args.logging_steps": 1.5},
        "finetuning_config.training_args.logging_steps: must be a positive integer or a number greater than 0 and "
        "less than 1, got 1.5",
    ),
    (
        {"training_args.report_to": ["wandb"]},
        'finetuning_config.training_args.report_to[0]: must be one of "none", "tensorboard", "mlflow", got "wandb"',
    ),
    (
        {"sft_args.max_seq_length": "long"},
        'finetuning_config.sft_args.max_seq_length: must be a positive integer, got "long"',
    ),
    (
        {"run_conf.model_args": {"torch_dtype": "float64"}},
        'finetuning_config.run_conf.model_args.torch_dtype: unknown key, got "float64" (use run_conf.model_args.dtype',
    ),
    (
        {"run_conf.model_args": {"dtype": "float16"}},
        'finetuning_config.run_conf.model_args.dtype: must be one of "auto", "bf16", "fp16", "fp32", got "float16"',
    ),
    (
        {"data_conf.training_data.datasets.0.column_map": {"inputs": "question"}},
        'finetuning_config.data_conf.training_data.datasets[0].column_map.inputs: unknown key, got "question" '
        "(did you mean input?",
    ),
    # Cross-field problems.
    (
        {"data_conf.validation_data": {"type": "NONE"}},
        "finetuning_config.training_args.eval_strategy: needs validation data; set data_conf.validation_data",
    ),
    (
        {"peft_conf": {"peft_type": "NO_PEFT", "peft_kwargs": {"r": 8}}},
        "finetuning_config.peft_conf.peft_kwargs: only used with peft_type LORA",
    ),
    (
        {"data_conf.training_data.datasets.0.sampling_weight": 2.0},
        "finetuning_config.data_conf.training_data.datasets[0].sampling_weight: only used with training_data.type "
        "PRECOMPUTE_WEIGHTED_MIX",
    ),
    (
        {"quant_conf": {"quantization_type": "bits-and-bytes"}},
        "finetuning_config.quant_conf.load_in_4bit: with bits-and-bytes set exactly one of load_in_4bit or "
        "load_in_8bit to true",
    ),
    (
        {"training_args.report_to": ["mlflow"]},
        "finetuning_config.tracking: required when training_args.report_to includes mlflow",
    ),
    ({"method": "ppo"}, 'finetuning_config.method: must be one of sft, dpo, got "ppo"'),
]


@pytest.mark.parametrize("changes,expected", BAD_CONFIGS, ids=[e.split(":")[0] for _, e in BAD_CONFIGS])
def test_bad_config_is_named_with_key_value_and_fix(changes, expected):
    data = contract()
    for path, value in changes.items():
        _set(data, path, value)
    with pytest.raises(UserError) as caught:
        load_config(data)
    assert expected in str(caught.value)


def test_every_problem_is_listed_at_once():
    data = contract()
    _set(data, "peft_conf.peft_kwargs.r", "eight")
    _set(data, "training_args.max_step", 10)
    _set(data, "sft_args.max_seq_length", 0)
    _set(data, "data_conf.missing_pad_token_strategy", "zero")
    with pytest.raises(UserError) as caught:
        load_config(data)
    message = str(caught.value)
    assert message.startswith("invalid config (4 problems):")
    for key in (
        "peft_conf.peft_kwargs.r",
        "training_args.max_step",
        "sft_args.max_seq_length",
        "data_conf.missing_pad_token_strategy",
    ):
        assert f"finetuning_config.{key}:" in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: sft\ndata_conf:\n  training_data: [unclosed\n")
    with pytest.raises(UserError, match=r"bad.yaml:\d+: not valid YAML"):
        load_config(path)


def test_bf16_fp16_and_qlora_on_a_machine_without_cuda_are_config_errors():
    data = contract()
    data["run_conf"]["model_args"] = {"dtype": "bf16"}
    data["quant_conf"] = {"quantization_type": "bits-and-bytes", "load_in_4bit": True}
    problems = machine_problems(load_config(data), cuda=False, bf16=False)
    assert any(p.startswith("finetuning_config.run_conf.model_args.dtype: bf16 needs a GPU") for p in problems)
    assert any(
        p.startswith(
            "finetuning_config.quant_conf.quantization_type: 4-bit bitsandbytes quantization (QLoRA) needs a CUDA GPU"
        )
        for p in problems
    )
    data["run_conf"]["model_args"] = {"dtype": "fp16"}
    assert any("fp16 training needs a CUDA GPU" in p for p in machine_problems(load_config(data), cuda=False))
    # A GPU with bf16 support accepts the same config (the check is about the machine, not the config).
    assert machine_problems(load_config(contract()), cuda=True, bf16=True) == []


def _objects(node, path="$"):
    if isinstance(node, dict):
        if node.get("type") == "object" or "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}.{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _objects(value, f"{path}[{index}]")


def test_json_schema_is_self_contained_and_strict():
    schema = config_json_schema("sft")
    text = json.dumps(schema)
    assert "$ref" not in text and "$defs" not in text
    sections = [(path, node) for path, node in _objects(schema) if "properties" in node]
    assert len(sections) >= 12
    for path, node in sections:
        assert node.get("additionalProperties") is False, path
    for section in (
        "method",
        "data_conf",
        "training_args",
        "batchsize_conf",
        "peft_conf",
        "quant_conf",
        "run_conf",
        "sft_args",
        "tracking",
        "overrides",
    ):
        assert section in schema["properties"]


def test_json_schema_agrees_with_the_models():
    jsonschema = pytest.importorskip("jsonschema")
    validator = jsonschema.Draft7Validator(config_json_schema("sft"))
    assert list(validator.iter_errors(contract())) == []
    bad = contract()
    bad["peft_conf"]["peft_kwargs"]["r"] = "eight"
    bad["training_args"]["unknown"] = 1
    messages = [error.message for error in validator.iter_errors(bad)]
    assert any("'eight'" in m for m in messages) and any("unknown" in m for m in messages)


def test_config_schema_command_prints_the_schema():
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "config-schema", "sft"], capture_output=True, text=True, check=True
    )
    assert json.loads(result.stdout) == config_json_schema("sft")


def test_committed_config_reference_matches_the_models():
    committed = (REPO / "docs" / "config-reference.md").read_text()
    assert committed == config_reference(), "docs/config-reference.md is stale: run `make docs`"
    for key in ("peft_kwargs", "missing_pad_token_strategy", "checkpoints_remote", "train_on_completions_only"):
        assert f"`{key}`" in committed
