"""The SDK's local backend end to end: `Client()` runs the charts through the local runner against the real S3
server (the test's SeaweedFS), with the tiny offline model.

One module-scoped chain: the tiny model goes to a bucket folder and a JSONL file stays on this machine, so
`train()` stages the data with the download-data chart (the dataset initializer) and then runs the finetune
chart; the tests read each step's logs, wait for the job, read its metrics, serve its checkpoint-final and ask
one chat question, and run a two-trial `tune()`.
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.finetune.config import BatchsizeConf, LoraKwargs, PeftConf, TrainingArgs

pytestmark = pytest.mark.slow

QUESTIONS = [(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}.") for a in range(1, 7) for b in range(1, 6)]


def write_chats(path: Path) -> Path:
    with path.open("w") as handle:
        for question, answer in QUESTIONS:
            messages = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
            handle.write(json.dumps({"messages": messages}) + "\n")
    return path


TARGETS = ["q_proj", "v_proj"]
TINY_ARGS = dict(
    max_steps=4,
    logging_steps=1,
    eval_strategy="steps",
    eval_steps=2,
    save_steps=2,
    learning_rate=5e-3,
    lr_scheduler_type="constant",
    report_to=[],
)


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
def trained(client, model_folder, tmp_path_factory):
    data = write_chats(tmp_path_factory.mktemp("data") / "chats.jsonl")
    name = client.train(
        model_folder,
        [str(data)],
        name="tiny-sft",
        validation=0.2,
        training_args=TrainingArgs(**TINY_ARGS),
        peft_conf=PeftConf(peft_type="LORA", peft_kwargs=LoraKwargs(r=4, lora_alpha=8, target_modules=TARGETS)),
        batchsize_conf=BatchsizeConf(total_train_batch_size=4, max_per_device_train_batch_size=4),
        merge=True,
    )
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
    assert f"uploaded 1 data file(s) to s3://{client.bucket}/datasets/tiny-sft" in data_log
    node_log = list(client.get_job_logs(name, step="node-0", follow=True))
    assert any("step 4/4" in line for line in node_log), node_log[-10:]
    with pytest.raises(UserError, match="no step 'node-7'"):
        client.get_job_logs(name, step="node-7")


def test_metrics_come_from_the_bucket(client, trained):
    name, _ = trained
    rows = client.get_job_metrics(name)
    assert [row["step"] for row in rows if "loss" in row] == [1, 2, 3, 4]
    assert any("eval_loss" in row for row in rows)


def test_serve_the_checkpoint_and_chat(client, trained):
    name, _ = trained
    url = client.serve(model=name, name="tiny-chat")
    try:
        body = {"model": "tiny-chat", "messages": [{"role": "user", "content": "What is 2 plus 3?"}], "max_tokens": 8}
        request = urllib.request.Request(
            url + "/chat/completions", data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=120) as response:
            answer = json.loads(response.read())
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert client.get_job("tiny-chat").state == "Running"
    finally:
        client.delete_job("tiny-chat")
    assert "tiny-chat" not in [job.name for job in client.list_jobs()]


def test_a_failing_job_raises_with_its_reason_and_last_lines(client, model_folder, sdk_env):
    name = client.train(
        model_folder,
        [f"{sdk_env}/datasets/missing.jsonl"],
        name="tiny-broken",
        training_args=TrainingArgs(max_steps=1),
    )
    from llmft.sdk.errors import JobFailed

    with pytest.raises(JobFailed) as failure:
        client.wait_for_job_status(name, timeout=300, polling_interval=1)
    assert "node-0 failed" in str(failure.value) and "exit code 2" in str(failure.value)
    assert any("missing.jsonl" in line for line in failure.value.last_lines)
    client.delete_job(name)


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


def test_tune_two_trials_and_the_best_result(client, trained, model_folder):
    from llmft import search

    name = client.tune(
        model_folder,
        [f"{client.bucket}/datasets/tiny-sft/chats.jsonl"],  # staged by train()
        {
            "training_args.learning_rate": search.double(1e-3, 1e-2, log=True),
            "peft_conf.peft_kwargs.r": search.int(2, 4, step=2),
        },
        name="tiny-search",
        validation=0.2,
        algorithm="random",
        seed=3,
        max_trial_count=2,
        parallel_trial_count=2,
        training_args=TrainingArgs(**{**TINY_ARGS, "max_steps": 2, "eval_steps": 2, "save_steps": 2}),
        peft_conf=PeftConf(peft_type="LORA", peft_kwargs=LoraKwargs(lora_alpha=8, target_modules=TARGETS)),
        batchsize_conf=BatchsizeConf(total_train_batch_size=4, max_per_device_train_batch_size=4),
        merge=True,
    )
    job = client.wait_for_job_status(name, timeout=300, polling_interval=1)
    assert [step.name for step in job.steps] == ["tuner"]
    best = client.get_best_results(name)
    assert set(best.parameters) == {"learning_rate", "r"}
    assert 1e-3 <= best.parameters["learning_rate"] <= 1e-2 and best.parameters["r"] in (2, 4)
    assert best.objective["metric"] == "eval_loss" and best.objective["value"] > 0
    assert best.checkpoint and best.checkpoint.endswith("checkpoint-final")
    assert client.get_optimal_hyperparameters(name) == best.parameters
