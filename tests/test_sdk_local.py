"""The SDK's local backend end to end: `Client()` runs the charts through the local runner against the real S3
server (the test's SeaweedFS), with the tiny offline model.

One module-scoped chain, driven by the cells of docs/tutorials/sdk_notebook.py (so the guide is tested): the
tiny model goes to a bucket folder and a JSONL file stays on this machine, so `train()` stages the data with the
download-data chart (the dataset initializer) and then runs the finetune chart; the tests read each step's logs,
wait for the job, read its metrics, serve its checkpoint-final and ask one chat question, and run a two-trial
`tune()` whose model comes from a local folder (the model initializer).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.finetune.config import TrainingArgs

# One worker runs the module, so its module-scoped training runs are built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sdk-local")]

QUESTIONS = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(1, 7) for b in range(1, 6)]


def write_chats(path: Path) -> Path:
    with path.open("w") as handle:
        for question, answer in QUESTIONS:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="module")
def sdk_env(s3_server, tmp_path_factory):
    """The test S3 server as the local runner's bucket, a fresh bucket and a private state dir."""
    import uuid

    saved = dict(os.environ)
    os.environ.update(s3_server.environment())
    os.environ["LLMFT_STATE_DIR"] = str(tmp_path_factory.mktemp("sdk-state"))
    os.environ["LLMFT_SYNC_INTERVAL"] = "1"
    bucket = f"sdk-{uuid.uuid4().hex[:12]}"
    s3_server.create_bucket(bucket)
    yield bucket
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="module")
def client(sdk_env):
    from llmft import Client

    return Client(bucket=sdk_env)


@pytest.fixture(scope="module")
def model_folder(sdk_env, tiny_model_dir):
    from llmft.storage import parse_location, upload_tree

    location = f"{sdk_env}/models/tiny-llama"
    upload_tree(tiny_model_dir, parse_location(location))
    return location


@pytest.fixture(scope="module")
def notebook():
    """docs/tutorials/sdk_notebook.py: its cells are what these tests run, so the guide cannot rot."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "docs" / "tutorials" / "sdk_notebook.py"
    spec = importlib.util.spec_from_file_location("sdk_notebook", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    return write_chats(tmp_path_factory.mktemp("data") / "chats.jsonl")


@pytest.fixture(scope="module")
def trained(client, notebook, model_folder, data_file):
    """The guide's fine-tune (seed 000's example): one CPU worker, 4 steps, from a bucket folder and a JSONL."""
    name = notebook.fine_tune(client, model_folder, str(data_file), steps=4)
    job = client.wait_for_job_status(name, timeout=300, polling_interval=1)
    return name, job


def test_train_stages_the_data_then_trains_and_completes(client, trained):
    name, job = trained
    assert job.state == "Complete"
    assert [step.name for step in job.steps] == ["dataset-initializer", "node-0"]
    assert all(step.state == "Succeeded" and step.exit_code == 0 for step in job.steps)
    assert job.progress is not None and job.progress.step == 4 and job.progress.total == 4
    assert job.progress.loss is not None
    assert name in [listed.name for listed in client.list_jobs()]


def test_logs_of_each_step(client, trained):
    name, _ = trained
    data_log = "\n".join(client.get_job_logs(name, step="dataset-initializer"))
    assert "chats.jsonl: SFT, 30 valid record(s)" in data_log
    assert f"uploaded 1 data file(s) to s3://{client.bucket}/datasets/notebook-lora" in data_log
    node_log = list(client.get_job_logs(name, step="node-0", follow=True))
    assert any("step 4/4" in line for line in node_log), node_log[-10:]
    with pytest.raises(UserError, match="no step 'node-7'"):
        client.get_job_logs(name, step="node-7")


def test_metrics_come_from_the_bucket(client, trained):
    name, _ = trained
    rows = client.get_job_metrics(name)
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3, 4]
    assert any("eval_loss" in row for row in rows)


def test_follow_prints_every_step(client, notebook, trained, capsys):
    name, _ = trained
    rows = notebook.follow(client, name)
    printed = capsys.readouterr().out
    assert "dataset-initializer: Succeeded" in printed and "node-0: Succeeded" in printed
    assert "progress: Progress(step=4, total=4" in printed
    assert rows == client.get_job_metrics(name)


def test_serve_the_checkpoint_and_chat(client, notebook, trained):
    name, _ = trained
    answer = notebook.ask(client, name, "What is 2 plus 3?")  # serve(model=<job>), one chat request, delete_job
    assert isinstance(answer, str)
    assert "notebook-chat" not in [job.name for job in client.list_jobs()]


def test_a_failing_step_fails_the_job_with_its_reason_and_last_lines(client, model_folder):
    from llmft.sdk import DataScript
    from llmft.sdk.errors import JobFailed

    script = DataScript("import sys\nprint('fetching the data')\nsys.exit('the data source is down today')\n")
    name = client.train(model_folder, [script], name="tiny-broken", training_args=TrainingArgs(max_steps=1))
    with pytest.raises(JobFailed) as failure:
        client.wait_for_job_status(name, timeout=300, polling_interval=1)
    assert str(failure.value).startswith("job tiny-broken failed: step dataset-initializer failed: exit code")
    assert any("the data source is down today" in line for line in failure.value.last_lines)
    job = client.get_job(name)
    assert [(step.name, step.state) for step in job.steps] == [("dataset-initializer", "Failed"), ("node-0", "Pending")]
    client.delete_job(name)
    assert name not in [listed.name for listed in client.list_jobs()]


def test_bad_arguments_fail_before_anything_starts(client, model_folder, sdk_env):
    before = [job.name for job in client.list_jobs()]
    with pytest.raises(UserError, match=r"finetuning_config\.training_args\.max_stepz: unknown key"):
        client.train(model_folder, [f"{sdk_env}/d.jsonl"], name="bad-one", training_args={"max_stepz": 3})
    with pytest.raises(UserError, match="job name 'Bad_Name'"):
        client.train(model_folder, [f"{sdk_env}/d.jsonl"], name="Bad_Name")
    with pytest.raises(UserError, match="dataset ./nowhere.jsonl: no such file"):
        client.train(model_folder, ["./nowhere.jsonl"], name="bad-two")
    with pytest.raises(UserError, match="tune.search_space"):
        from llmft import search

        client.tune(model_folder, [f"{sdk_env}/d.jsonl"], {"training_args.lerning_rate": search.double(1e-4, 1e-2)})
    assert [job.name for job in client.list_jobs()] == before


def test_tune_two_trials_and_the_best_result(client, notebook, tiny_model_dir, data_file):
    """The guide's search (seed 003's example) with two trials; the model comes from a local folder, so the
    model initializer stages it first."""
    name = notebook.tune(client, str(tiny_model_dir), str(data_file), trials=2, parallel=2, steps=2)
    job = client.wait_for_job_status(name, timeout=300, polling_interval=1)
    assert [step.name for step in job.steps] == ["model-initializer", "dataset-initializer", "tuner"]
    best = client.get_best_results(name)
    assert set(best.parameters) == {"learning_rate", "total_train_batch_size", "num_train_epochs", "weight_decay", "r"}
    assert 1e-5 <= best.parameters["learning_rate"] <= 5e-3 and best.parameters["r"] in (4, 8)
    assert best.objective["metric"] == "eval_mean_token_accuracy" and best.objective["direction"] == "maximize"
    assert 0 <= best.objective["value"] <= 1
    assert best.checkpoint and best.checkpoint.endswith("checkpoint-final")
    assert client.get_optimal_hyperparameters(name) == best.parameters
