"""Experiment tracking: a real local MLflow tracking store (sqlite, no server, no mock) records the run,
its params (secrets redacted) and its loss metrics, a resumed run continues the same MLflow run, and
TensorBoard event files carry the same losses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from test_sft import sft_config, write_data

from llmft.errors import UserError
from llmft.finetune import tracking
from llmft.finetune.config import load_config
from llmft.finetune.sft import run_sft

SECRET = "do-not-log-this-value-42"


def metrics_rows(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_mlflow_records_run_params_and_losses_and_a_resume_continues_the_run(tiny_model_dir, tmp_path, monkeypatch):
    import mlflow
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.chdir(tmp_path)  # nothing may land in the working directory except what we ask for
    for name in ("BUCKET_STORAGE_SECRET_KEY", "BUCKET_STORAGE_ACCESS_KEY", "HF_TOKEN", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, SECRET)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "out"
    config = sft_config(
        out,
        str(tiny_model_dir),
        str(write_data(tmp_path / "train.jsonl")),
        training_args={"max_steps": 4, "logging_steps": 2, "save_steps": 2, "report_to": ["tensorboard", "mlflow"]},
        tracking={"mlflow_server_uri": uri, "experiment_name": "llmft-tests", "run_name": "sweep-r16"},
    )
    assert run_sft(load_config(config)) == 0

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("llmft-tests")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.run_name == "sweep-r16" and run.info.status == "FINISHED"
    params = run.data.params
    assert params["method"] == "sft" and params["peft_conf.peft_type"] == "NO_PEFT"
    assert float(params["training_args.learning_rate"]) == 1e-2
    assert params["data_conf.training_data.datasets.0.path"] == str(tmp_path / "train.jsonl")
    assert params["resolved.total_train_batch_size"] == "6" and params["resolved.gradient_accumulation_steps"] == "1"
    assert not [key for key, value in params.items() if SECRET in value], "a secret reached MLflow"
    # The loss history is exactly metrics.jsonl's.
    rows = metrics_rows(out)
    history = client.get_metric_history(run.info.run_id, "loss")
    assert [(m.step, round(m.value, 5)) for m in history] == [(r["step"], round(r["loss"], 5)) for r in rows]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "grad_norm")] == [2, 4]
    summary = json.loads((out / "summary.json").read_text())
    assert run.data.metrics["summary.final_train_loss"] == pytest.approx(summary["final_train_loss"])
    assert run.data.metrics["summary.throughput.effective_tokens_per_second"] > 0
    # TensorBoard: event files under logs/ with the same losses.
    events = EventAccumulator(str(out / "logs"))
    events.Reload()
    assert [(e.step, round(e.value, 4)) for e in events.Scalars("train/loss")] == [
        (r["step"], round(r["loss"], 4)) for r in rows
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mlflow.db", "out", "train.jsonl"]

    # A job that died after step 4's checkpoint and restarts with more steps continues the same MLflow run.
    (out / "summary.json").unlink()
    shutil.rmtree(out / "checkpoint-final")
    config["training_args"]["max_steps"] = 6
    assert run_sft(load_config(config)) == 0
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run.info.run_id]
    assert runs[0].info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "loss")] == [2, 4, 6]


def test_mlflow_params_never_carry_secrets():
    config = load_config(
        sft_config(
            Path("./out"),
            "./model",
            "./train.jsonl",
            tracking={"mlflow_server_uri": f"https://alice:{SECRET}@mlflow.example.com", "experiment_name": "e"},
        )
    )
    params = tracking.config_params(config, {"hf_token": SECRET, "storage.secret_key": SECRET, "plain": "kept"})
    assert params["tracking.mlflow_server_uri"] == "https://alice:***@mlflow.example.com"
    assert params["hf_token"] == "***" and params["storage.secret_key"] == "***" and params["plain"] == "kept"
    assert not [key for key, value in params.items() if SECRET in value]
    # URLs without a password and ordinary keys are left alone.
    assert tracking.redact("run_conf.model", "s3://bucket/models/m") == "s3://bucket/models/m"
    assert tracking.redact("uri", "http://mlflow:5000") == "http://mlflow:5000"


def test_unusable_mlflow_uri_fails_before_training(tmp_path):
    config = load_config(
        sft_config(
            tmp_path / "out", "./model", "./train.jsonl", tracking={"mlflow_server_uri": "bogus-scheme://nowhere"}
        )
    )
    with pytest.raises(
        UserError,
        match=r"finetuning_config.tracking.mlflow_server_uri: cannot use MLflow at "
        r"bogus-scheme://nowhere",
    ):
        tracking.mlflow_callback(config, tmp_path / "out")


def test_mlflow_in_report_to_needs_the_tracking_section_and_tracking_alone_turns_it_on(tmp_path):
    with pytest.raises(
        UserError, match="finetuning_config.tracking: required when training_args.report_to includes mlflow"
    ):
        load_config(sft_config(tmp_path, "./model", "./train.jsonl", training_args={"report_to": ["mlflow"]}))
    config = load_config(
        sft_config(tmp_path, "./model", "./train.jsonl", tracking={"mlflow_server_uri": str(tmp_path / "mlruns")})
    )
    callbacks = tracking.make_callbacks(config, tmp_path, is_main=True)
    assert [type(c).__name__ for c in callbacks] == ["MlflowTracking"]
    # A local folder holds an sqlite store (MLflow 3 refuses its old plain-folder store).
    assert tracking.tracking_uri(str(tmp_path / "mlruns")) == f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    assert (tmp_path / "mlruns" / "mlflow.db").is_file()
    assert tracking.make_callbacks(config, tmp_path, is_main=False) == []
