"""The SDK's planning (arguments -> checked chart steps), search helpers and job states, without running anything."""

from __future__ import annotations

import json
import os
import runpy

import pytest

from llmft.errors import UserError
from llmft.finetune.config import TrainingArgs, ValidationData
from llmft.sdk import jobs as J
from llmft.sdk import search
from llmft.sdk.plan import DataScript, charts_root, plan_train, render

DATA = "default-bucket/datasets/train.jsonl"


def plan(**options):
    arguments = dict(
        name="job-a",
        model="default-bucket/models/tiny",
        datasets=[DATA],
        method="sft",
        validation=None,
        sections={"peft_conf": {"peft_type": "LORA"}},
        config=None,
        nodes=1,
        gpus_per_node=0,
        resources=None,
        distributed_type=None,
        checkpoints_remote=None,
        merge=False,
        values=None,
        bucket="default-bucket",
        local_backend=True,
    )
    arguments.update(options)
    return plan_train(**arguments)


def finetune_values(result) -> dict:
    return result.steps[-1].values


def test_a_bucket_model_and_bucket_data_need_no_initializer():
    result = plan()
    assert [step.name for step in result.steps] == ["node-0"]
    values = finetune_values(result)
    assert values["basemodel"] == "default-bucket/models/tiny"
    assert values["checkpointsRemote"] == "default-bucket/experiments/job-a"
    assert values["distributedType"] == "auto-single-process"


def test_a_hub_model_gets_the_model_initializer():
    result = plan(model="hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0", gpus_per_node=2)
    initializer = result.steps[0]
    assert (initializer.name, initializer.chart, initializer.release) == (
        "model-initializer",
        "download-model-to-bucket",
        "job-a-model",
    )
    assert initializer.values["modelID"] == "hf://TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert finetune_values(result)["basemodel"] == "default-bucket/models/TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert finetune_values(result)["distributedType"] == "auto-ddp"
    with pytest.raises(UserError, match="hf://Organization/ModelName"):
        plan(model="hf://just-a-name")


def test_a_local_jsonl_is_staged_by_a_data_script_that_writes_it_unchanged(tmp_path, monkeypatch):
    text = json.dumps({"messages": [{"role": "user", "content": 'it\'s "quoted"\n'}]}) + "\n"
    (tmp_path / "chats.jsonl").write_text(text)
    result = plan(datasets=[str(tmp_path / "chats.jsonl")], validation=[DataScript("print()", outputs=("eval.jsonl",))])
    data, extra = result.steps[0], result.steps[1]
    assert (data.name, data.chart, data.values["bucketDataDir"]) == (
        "dataset-initializer",
        "download-data-to-bucket",
        "default-bucket/datasets/job-a",
    )
    assert data.values["dataKind"] == "sft"
    assert extra.name == "dataset-initializer-1" and extra.values["dataScript"] == "print()"
    config = finetune_values(result)["finetuning_config"]["data_conf"]
    assert config["training_data"]["datasets"] == [{"path": "default-bucket/datasets/job-a/chats.jsonl"}]
    assert config["validation_data"] == {
        "type": "CONCATENATION",
        "datasets": [{"path": "default-bucket/datasets/job-a-1/eval.jsonl"}],
    }
    out = tmp_path / "out"
    monkeypatch.setenv("DATASETS_DIR", str(out))
    script = tmp_path / "script.py"
    script.write_text(data.values["dataScript"])
    runpy.run_path(str(script))
    assert (out / "chats.jsonl").read_text() == text


def test_the_data_steps_hold_records_to_the_method_and_tasks_format(tmp_path):
    reviews = tmp_path / "reviews.jsonl"
    reviews.write_text(json.dumps({"text": "great", "label": "positive"}) + "\n")
    for method, config, kind in (
        ("sft", {"task": "sequence-classification"}, "sequence-classification"),
        ("sft", {"task": "text"}, "text"),
        ("dpo", None, "dpo"),
    ):
        result = plan(datasets=[str(reviews)], method=method, config=config)
        assert result.steps[0].values["dataKind"] == kind, (method, config)
        render(result, charts_root(), "default")  # the data chart's schema knows each kind
    # Renamed columns are not the data commands' names: the format is left to detection.
    renamed = {"path": str(reviews), "column_map": {"text": "review"}}
    result = plan(datasets=[renamed], config={"task": "text"})
    assert "dataKind" not in result.steps[0].values


def test_a_large_local_file_is_refused_with_the_copy_command(tmp_path):
    big = tmp_path / "big.jsonl"
    big.write_text("x" * (800 * 1024))
    with pytest.raises(UserError, match=r"llmft storage cp .*big.jsonl default-bucket/datasets/big.jsonl"):
        plan(datasets=[str(big)])


def test_a_local_model_folder_only_on_the_local_backend(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    assert plan(model=str(tmp_path)).steps[0].values["modelID"] == str(tmp_path.resolve())
    with pytest.raises(UserError, match="which the cluster's pods cannot read"):
        plan(model=str(tmp_path), local_backend=False)
    with pytest.raises(UserError, match="not a model folder"):
        plan(model=str(tmp_path / "nothing"))


def test_resources_per_node_are_divided_among_its_processes():
    values = finetune_values(plan(gpus_per_node=2, resources={"cpu": 5, "memory": "10G"}))
    assert (values["cpusPerGpu"], values["memoryPerGpu"]) == (3, 5)
    with pytest.raises(UserError, match="resources.memory"):
        plan(resources={"memory": "lots"})
    with pytest.raises(UserError, match="unknown keys"):
        plan(resources={"gpu": 2})


def test_validation_forms_and_typed_sections():
    values = finetune_values(
        plan(
            validation=0.1, sections={"training_args": TrainingArgs(max_steps=7), "peft_conf": {"peft_type": "NO_PEFT"}}
        )
    )
    config = values["finetuning_config"]
    assert config["data_conf"]["validation_data"] == {"type": "AUTO_SPLIT", "ratio": 0.1}
    assert config["training_args"] == {"max_steps": 7}  # only what was set travels
    assert config["peft_conf"] == {"peft_type": "NO_PEFT"}
    explicit = ValidationData(type="AUTO_SPLIT", ratio=0.2)
    assert finetune_values(plan(validation=explicit))["finetuning_config"]["data_conf"]["validation_data"] == {
        "type": "AUTO_SPLIT",
        "ratio": 0.2,
        "seed": 1289525893,
    }


def test_every_config_problem_at_once_with_the_engines_messages():
    with pytest.raises(UserError) as error:
        plan(sections={"training_args": {"max_stepz": 3, "learning_rate": "fast"}, "peft_conf": {"peft_type": "LORA"}})
    text = str(error.value)
    assert text.startswith("invalid config (2 problems):")
    assert "finetuning_config.training_args.max_stepz: unknown key" in text
    assert "finetuning_config.training_args.learning_rate" in text


def test_the_charts_render_time_checks_run_before_anything(tmp_path):
    result = plan(values={"distributedType": "custom-accelerate-config"})
    with pytest.raises(UserError, match="customAccelerateConfig is empty"):
        render(result, charts_root(), "default")


def test_search_helpers_make_spec_parameters():
    assert search.double(1e-5, 1e-3, log=True).parameter("finetuning_config.training_args.learning_rate") == {
        "key": "finetuning_config.training_args.learning_rate",
        "type": "double",
        "min": 1e-5,
        "max": 1e-3,
        "log": True,
    }
    assert search.int(4, 32, step=4).parameter("k") == {"key": "k", "type": "int", "min": 4, "max": 32, "step": 4}
    assert search.categorical(["chat-ml", "llama-3"]).parameter("k") == {
        "key": "k",
        "type": "categorical",
        "values": ["chat-ml", "llama-3"],
    }


def test_progress_and_job_state():
    rows = [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5, "epoch": 0.5}, {"step": 2, "eval_loss": 1.7}]
    progress = J.progress_from_rows(rows, total=10, started=100.0, now=120.0)
    assert (progress.step, progress.total, progress.loss, progress.eval_loss) == (2, 10, 1.5, 1.7)
    assert progress.eta_seconds == pytest.approx(80.0) and progress.percent == 20.0
    assert J.progress_from_rows([], 10, 100.0) is None
    step = J.Step
    assert J.job_state([step("a", J.SUCCEEDED), step("b", J.PENDING)]) == J.RUNNING
    assert J.job_state([step("a", J.SUCCEEDED), step("b", J.FAILED)]) == J.FAILED
    assert J.job_state([step("a", J.SUCCEEDED), step("b", J.SUCCEEDED)]) == J.COMPLETE
    assert J.job_state([step("a"), step("b")]) == J.CREATED


def test_client_arguments(tmp_path, monkeypatch):
    from llmft import Client

    with pytest.raises(UserError, match="backend: must be one of local, kubernetes"):
        Client("slurm")
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(UserError, match="no Kubernetes configuration"):
        Client("kubernetes", config_file=str(tmp_path / "missing"))
    client = Client(state_dir=str(tmp_path))
    with pytest.raises(UserError, match="status: one of Created, Running, Complete, Failed"):
        client.wait_for_job_status("x", status="Done")
    with pytest.raises(UserError, match="no job named nothing-here"):
        client.get_job("nothing-here")
    with pytest.raises(UserError, match="no such file"):
        client.train("default-bucket/models/tiny", ["./missing.jsonl"], name="multi", nodes=2)
    assert not os.listdir(tmp_path)  # nothing was started
