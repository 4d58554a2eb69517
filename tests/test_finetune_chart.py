"""charts/llm-finetune: generated files in sync, the tutorial's sweep, and bad values failing at render time."""

from __future__ import annotations

import pytest
import yaml
from harness import CHARTS, render_valid, restricted_violations

from llmft.chart_files import expected_files
from llmft.charts import render_chart
from llmft.errors import UserError

CHART = CHARTS / "llm-finetune"


def test_generated_chart_files_are_up_to_date():
    """values.schema.json embeds the engine's config schema; presets come from `llmft accelerate-config`."""
    stale = [
        str(path.relative_to(CHARTS))
        for path, content in expected_files(CHARTS).items()
        if not path.is_file() or path.read_text() != content
    ]
    assert not stale, f"regenerate with `make chart-files`: {stale}"


def engine_config(rendered) -> dict:
    return yaml.safe_load(rendered.one("ConfigMap")["data"]["finetuning_config.yaml"])


def test_tutorial_lora_rank_sweep_renders_ten_distinct_jobs():
    run_id = "alpha"
    seen = {}
    for r in (4, 6, 8, 10, 12, 16, 20, 24, 32, 64):
        name = f"tiny-llama-argilla-r-sweep-{run_id}-{r}"
        rendered = render_valid(
            CHART,
            release_name=name,
            set_values=[
                f"finetuning_config.peft_conf.peft_kwargs.r={r}",
                f"checkpointsRemote=default-bucket/experiments/{name}",
            ],
        )
        job = rendered.one("Job")
        config = engine_config(rendered)
        assert job["metadata"]["name"] == name
        assert config["peft_conf"]["peft_kwargs"]["r"] == r
        assert config["run_conf"]["checkpoints_remote"] == f"default-bucket/experiments/{name}"
        # The config reaches the container through the release's own ConfigMap.
        volumes = job["spec"]["template"]["spec"]["volumes"]
        assert {"name": "config", "configMap": {"name": f"{name}-config"}} in volumes
        assert not restricted_violations(rendered)
        seen[name] = r
    assert len(seen) == 10


def test_chart_keys_fill_the_engine_config_and_command():
    rendered = render_valid(
        CHART,
        release_name="full",
        set_values=[
            "basemodel=default-bucket/models/m",
            "mergeAdapter=true",
            "finetuningGpus=8",
            "distributedType=auto-deepspeed-stage3",
            "gpuResourceName=amd.com/gpu",
            "memoryPerGpu=32",
        ],
    )
    config = engine_config(rendered)
    run_conf = config["run_conf"]
    assert run_conf["model"] == "default-bucket/models/m" and run_conf["merge_adapter"] is True
    assert config["launch_conf"] == {
        "num_processes": 8,
        "distributed_type": "auto-deepspeed-stage3",
        "accelerate_config": "/config/accelerate_config.yaml",
    }
    assert config["training_args"]["output_dir"] == "/checkpoints"
    container = rendered.one("Job")["spec"]["template"]["spec"]["containers"][0]
    # The one config file is the whole interface: no chart setting travels as an argument or env variable.
    assert container["command"] == ["llmft", "train", "/config/finetuning_config.yaml"]
    assert {item["name"] for item in container["env"] if item["name"].startswith("LLMFT_")} == {"LLMFT_CACHE_DIR"}
    assert container["resources"]["limits"]["amd.com/gpu"] == "8"
    assert container["resources"]["limits"]["memory"] == "256Gi"
    data = rendered.one("ConfigMap")["data"]
    assert yaml.safe_load(data["accelerate_config.yaml"])["distributed_type"] == "DEEPSPEED"
    assert '"stage": 3' in data["deepspeed_config.json"]


def test_secrets_only_as_secret_refs_and_scratch_volumes():
    rendered = render_valid(
        CHART,
        release_name="sec",
        set_values=["hfTokenSecret.name=hf", "storageClass=fast-ssd", "checkpointsRemote=default-bucket/x"],
    )
    spec = rendered.one("Job")["spec"]["template"]["spec"]
    env = {item["name"]: item for item in spec["containers"][0]["env"]}
    for name in ("BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY", "HF_TOKEN"):
        assert "value" not in env[name] and "secretKeyRef" in env[name]["valueFrom"]
    assert "KEY" not in str(rendered.one("ConfigMap")["data"]).upper().replace("KEYS", "")
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["checkpoints"]["ephemeral"]["volumeClaimTemplate"]["spec"]["storageClassName"] == "fast-ssd"
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"


@pytest.mark.parametrize(
    "sets, fragment",
    [
        (["finetuningGpus=two"], "finetuningGpus"),
        (["finetuning_config.peft_conf.peft_kwargs.rank=8"], "rank"),
        (["finetuning_config.training_args.learning_rate=-1"], "learning_rate"),
        (["distributedType=auto-zero9"], "distributedType"),
        (["distributedType=custom-accelerate-config"], "customAccelerateConfig is empty"),
    ],
)
def test_bad_values_fail_at_helm_template(sets, fragment):
    with pytest.raises(UserError, match=fragment):
        render_chart(CHART, set_values=sets, release_name="bad")


def test_release_name_with_capitals_fails():
    with pytest.raises(UserError, match="invalid"):
        render_chart(CHART, release_name="My-Run")


def test_float_set_values_work_like_users_expect():
    """`--set ...learning_rate=2e-5` reaches the engine as a number, though Helm's --set leaves it a string."""
    from llmft.finetune.config import load_config

    rendered = render_valid(
        CHART,
        release_name="lr-sweep",
        set_values=["finetuning_config.training_args.learning_rate=2e-5", "basemodel=/models/m"],
    )
    config = engine_config(rendered)
    assert config["training_args"]["learning_rate"] == "2e-5"
    assert load_config(config).training_args.learning_rate == 2e-5
    with pytest.raises(UserError, match="learning_rate"):
        render_chart(CHART, set_values=["finetuning_config.training_args.learning_rate=fast"], release_name="bad")


def _launch_config(tmp_path, launch_conf: dict):
    config = {
        "data_conf": {"training_data": {"datasets": [{"path": "default-bucket/datasets/train.jsonl"}]}},
        "peft_conf": {"peft_type": "LORA"},
        "run_conf": {"model": "default-bucket/models/m"},
        "launch_conf": launch_conf,
    }
    path = tmp_path / "run" / "finetuning_config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump(config))
    return path


def test_llmft_train_reads_processes_and_accelerate_config_from_the_config(tmp_path, capsys):
    """`llmft train CONFIG` takes everything from launch_conf; a relative accelerate_config is next to CONFIG."""
    from llmft.cli import main

    assert main(["train", str(_launch_config(tmp_path, {"num_processes": 2}))]) == 2
    assert "launch_conf.accelerate_config: required with num_processes 2" in capsys.readouterr().err
    second = tmp_path / "second"
    second.mkdir()
    path = _launch_config(second, {"num_processes": 2, "accelerate_config": "accelerate_config.yaml"})
    assert main(["train", str(path)]) == 2
    assert str(path.parent / "accelerate_config.yaml") in capsys.readouterr().err  # looked for next to the config
