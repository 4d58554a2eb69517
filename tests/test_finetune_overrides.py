"""overrides/llm-finetune/: every values file renders and its engine config loads as `llmft train` reads it;
the recipes read what the staging overrides deliver; the tiny LoRA recipe trains end to end on the CPU.

(Kubernetes validation, lint, Pod Security and secrets of every override: tests/test_all_charts.py.)
"""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from harness import CHARTS, OVERRIDES

from llmft.charts import load_values_file, render_chart
from llmft.finetune.batching import resolve_batch_size
from llmft.finetune.config import load_config
from llmft.finetune.distributed import PRESETS, validate_accelerate_config
from llmft.storage import is_complete, list_objects, parse_location, upload_file, upload_tree
from llmft.storage.transfer import read_object

CHART = CHARTS / "llm-finetune"
HERE = OVERRIDES / "llm-finetune"
FILES = sorted(HERE.glob("*.yaml"))
LORA, FULL = HERE / "tutorial-01-finetune-lora.yaml", HERE / "tutorial-01-finetune-full-param.yaml"
TINY_LORA, TINY_FULL = HERE / "tiny-model-lora.yaml", HERE / "tiny-model-full-param.yaml"
MODEL_OVERRIDES = OVERRIDES / "download-model-to-bucket"
DATA_OVERRIDES = OVERRIDES / "download-data-to-bucket"


def render(file: Path, *set_values: str, release: str = "run"):
    return render_chart(CHART, values_files=[file], set_values=list(set_values), release_name=release)


def config_of(rendered) -> dict:
    return yaml.safe_load(rendered.one("ConfigMap")["data"]["finetuning_config.yaml"])


def container(rendered) -> dict:
    return rendered.one("Job")["spec"]["template"]["spec"]["containers"][0]


def num_processes(rendered) -> int:
    return load_config(config_of(rendered)).launch_conf.num_processes


def test_the_documented_recipes_exist():
    assert {LORA, FULL, TINY_LORA, TINY_FULL} <= set(FILES)


@pytest.mark.parametrize("file", FILES, ids=lambda path: path.name)
def test_override_loads_in_the_engine_as_the_container_reads_it(file, tmp_path):
    """The ConfigMap's files, written where the pod mounts them, pass the checks `llmft train` makes first."""
    data = render(file).one("ConfigMap")["data"]
    for name, text in data.items():
        (tmp_path / name).write_text(text)
    config = load_config(tmp_path / "finetuning_config.yaml")
    assert config.run_conf.model == load_values_file(file)["basemodel"]
    accelerate = validate_accelerate_config(tmp_path / "accelerate_config.yaml")
    if accelerate["distributed_type"] == "DEEPSPEED":
        assert "deepspeed_config.json" in data


def _script_globals(override: Path, monkeypatch, datasets_dir: Path) -> dict:
    """The data script of a staging override, loaded as a module (its main() not run)."""
    script = datasets_dir.parent / f"{override.stem}.py"
    script.write_text(load_values_file(override)["dataScript"])
    monkeypatch.setenv("DATASETS_DIR", str(datasets_dir))
    return runpy.run_path(str(script), run_name="data_script")


def test_tutorial_recipes_read_what_the_tutorial_delivery_overrides_write(monkeypatch, tmp_path):
    model_path = load_values_file(MODEL_OVERRIDES / "tutorial-01-tiny-llama-to-minio.yaml")["bucketModelPath"]
    data_override = DATA_OVERRIDES / "tutorial-01-argilla-to-minio.yaml"
    # The Argilla script needs the Hub to run; the file it writes is named by its module-level OUTPUT.
    output = Path(_script_globals(data_override, monkeypatch, tmp_path / "datasets")["OUTPUT"])
    data_path = f"{load_values_file(data_override)['bucketDataDir']}/{output.name}"
    for file in (LORA, FULL):
        config = config_of(render(file))
        assert config["run_conf"]["model"] == model_path
        assert [d["path"] for d in config["data_conf"]["training_data"]["datasets"]] == [data_path]


def test_tiny_recipes_read_what_the_tiny_delivery_overrides_write(monkeypatch, tmp_path):
    model_path = load_values_file(MODEL_OVERRIDES / "tiny-random-model-to-minio.yaml")["bucketModelPath"]
    data_override = DATA_OVERRIDES / "tiny-synthetic-to-minio.yaml"
    datasets = tmp_path / "datasets"
    _script_globals(data_override, monkeypatch, datasets)["main"]()  # offline and deterministic: run it
    written = {f"{load_values_file(data_override)['bucketDataDir']}/{p.name}" for p in datasets.iterdir()}
    for file in (TINY_LORA, TINY_FULL):
        config = config_of(render(file))
        read = {
            d["path"] for part in ("training_data", "validation_data") for d in config["data_conf"][part]["datasets"]
        }
        assert config["run_conf"]["model"] == model_path
        assert read == written  # train and eval files, both used


def test_lora_sweep_command_gives_each_rank_its_own_job_and_remote():
    seen = set()
    for r in (4, 64):
        name = f"tiny-llama-argilla-r-sweep-alpha-{r}"
        rendered = render(
            LORA,
            f"finetuning_config.peft_conf.peft_kwargs.r={r}",
            f"checkpointsRemote=default-bucket/experiments/{name}",
            release=name,
        )
        config = load_config(config_of(rendered))
        assert config.peft_conf.lora().r == r
        assert config.run_conf.checkpoints_remote == f"default-bucket/experiments/{name}"
        assert rendered.one("Job")["metadata"]["name"] == name
        seen.add(rendered.one("ConfigMap")["metadata"]["name"])
    assert len(seen) == 2


def test_lora_recipe_is_the_tutorials():
    rendered = render(LORA)
    config = load_config(config_of(rendered))
    lora = config.peft_conf.lora()
    assert {"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"} <= set(lora.target_modules)
    assert config.data_conf.chat_template_name == "chat-ml"
    assert config.data_conf.validation_data.type == "AUTO_SPLIT" and config.training_args.eval_strategy == "steps"
    assert config.run_conf.model_args.dtype == "bf16"
    assert config.training_args.save_total_limit and config.training_args.report_targets() == ["tensorboard"]
    assert num_processes(rendered) == 1
    assert container(rendered)["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_full_parameter_recipe_on_8_gpus_and_its_single_gpu_comparison():
    eight = render(
        FULL,
        "finetuningGpus=8",
        "checkpointsRemote=default-bucket/experiments/tiny-llama-argilla-v1",
        release="tiny-llama-argilla-v1",
    )
    one = render(
        FULL,
        "finetuningGpus=1",
        "checkpointsRemote=default-bucket/experiments/tiny-llama-argilla-v1-singlegpu",
        release="tiny-llama-argilla-v1-singlegpu",
    )
    config = load_config(config_of(eight))
    assert config.peft_conf.peft_type == "NO_PEFT" and config.run_conf.model_args.dtype == "bf16"
    assert (num_processes(eight), num_processes(one)) == (8, 1)
    assert container(eight)["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert json.loads(eight.one("ConfigMap")["data"]["deepspeed_config.json"])["zero_optimization"]["stage"] == 2
    # The comparison is fair: the same total batch, so the same optimizer steps, on one GPU by accumulation.
    plans = [resolve_batch_size(config.batchsize_conf, processes) for processes in (8, 1)]
    assert plans[0].total == plans[1].total and (plans[0].accumulation, plans[1].accumulation) == (1, 8)


@pytest.mark.parametrize("file", [TINY_LORA, TINY_FULL], ids=lambda path: path.name)
def test_tiny_recipes_run_on_one_cpu_process_quickly(file):
    rendered = render(file)
    config = load_config(config_of(rendered))
    resources = container(rendered)["resources"]
    assert num_processes(rendered) == 1 and "nvidia.com/gpu" not in resources["limits"]
    assert yaml.safe_load(rendered.one("ConfigMap")["data"]["accelerate_config.yaml"])["distributed_type"] == "NO"
    assert config.run_conf.model_args.dtype == "fp32"
    assert 0 < config.training_args.max_steps <= 60 and config.sft_args.max_seq_length <= 256
    assert config.training_args.save_steps < config.training_args.max_steps  # a checkpoint before the end
    assert resources["requests"]["memory"] == "4Gi"
    # chat-ml adds tokens: a LoRA run is served merged (checkpoint-final/), a full run as it is.
    assert config.peft_conf.peft_type == "NO_PEFT" or config.run_conf.merge_adapter


@pytest.mark.slow
def test_tiny_lora_recipe_trains_and_merges_through_the_local_runner(
    bucket, s3_env, tiny_model_dir, tmp_path, monkeypatch
):
    """`llmft local charts/llm-finetune -f tiny-model-lora.yaml`, with the bucket paths moved to a test bucket."""
    upload_tree(tiny_model_dir, parse_location(f"{bucket}/models/tiny-random-llama"))
    datasets = tmp_path / "datasets"
    _script_globals(DATA_OVERRIDES / "tiny-synthetic-to-minio.yaml", monkeypatch, datasets)["main"]()
    for path in datasets.iterdir():
        upload_file(path, parse_location(f"{bucket}/datasets/tiny-synthetic/{path.name}"))
    remote = f"{bucket}/experiments/tiny-lora"
    command = [
        sys.executable,
        "-m",
        "llmft",
        "local",
        str(CHART),
        "-f",
        str(TINY_LORA),
        "--name",
        "tiny-lora",
        "--set",
        f"basemodel={bucket}/models/tiny-random-llama",
        "--set",
        f"finetuning_config.data_conf.training_data.datasets[0].path="
        f"{bucket}/datasets/tiny-synthetic/tiny-synthetic-train.jsonl",
        "--set",
        f"finetuning_config.data_conf.validation_data.datasets[0].path="
        f"{bucket}/datasets/tiny-synthetic/tiny-synthetic-eval.jsonl",
        "--set",
        f"checkpointsRemote={remote}",
    ]
    env = {**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state"), "LLMFT_PROGRESS_INTERVAL": "5"}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stderr[-4000:]

    summary = json.loads(read_object(parse_location(f"{remote}/summary.json")))
    assert summary["status"] == "complete" and summary["steps"] == 40 and summary["training"] == "lora"
    assert summary["outputs"]["merged"] is True
    assert summary["final_train_loss"] < summary["first_train_loss"]
    for tree in ("checkpoint-final", "checkpoint-final-adapter", "checkpoint-final-merged", "checkpoint-40"):
        assert is_complete(parse_location(f"{remote}/{tree}")), tree
    final = list_objects(parse_location(f"{remote}/checkpoint-final"))
    assert "adapter_config.json" not in final and any(name.endswith(".safetensors") for name in final)
    assert any(
        name.startswith("events.out.tfevents") or "/events.out.tfevents" in name
        for name in list_objects(parse_location(f"{remote}/logs"))
    )

    # Applying the same Job again after it finished does not train again.
    again = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert again.returncode == 0, again.stderr[-4000:]
    assert "step 5/40" not in again.stderr and "Job/tiny-lora succeeded" in again.stderr


# Values whose contents are free-form (or, for finetuning_config, documented by the engine's reference).
FREE_FORM = {"finetuning_config", "labels", "annotations", "nodeSelector", "affinity"}


def test_readme_parameter_table_lists_every_value():
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    expected = set()
    for key, value in values.items():
        if isinstance(value, dict) and value and key not in FREE_FORM:
            expected.update(f"{key}.{child}" for child in value)
        else:
            expected.add(key)
    table = {line.split("`")[1] for line in (CHART / "README.md").read_text().splitlines() if line.startswith("| `")}
    presets = {
        line.split("`")[1]
        for line in (CHART / "README.md").read_text().split("## Parameters")[0].splitlines()
        if line.startswith("| `")
    }
    assert presets == set(PRESETS)  # the distributedType table documents every preset
    assert table - presets == expected


def test_every_value_has_a_comment():
    lines = (CHART / "values.yaml").read_text().splitlines()
    for index, line in enumerate(lines):
        if line and not line[0].isspace() and not line.startswith("#"):
            assert index > 0 and lines[index - 1].startswith("#"), f"values.yaml: no comment above {line!r}"
