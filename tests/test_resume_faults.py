"""Fault tests of crash-safe checkpoint streaming (issue 5's acceptance tests), against the real S3 server.

Each test runs the real training process, `llmft sft CONFIG` with `run_conf.checkpoints_remote` set
(a subprocess; tiny model, full-parameter, CPU), and does to it what happens to a pod:

1. SIGKILL at a random step after a complete remote save, then a restart that has only the
   bucket (the local output folder is deleted): the resumed run ends with the same weights
   as an uninterrupted run of the same config and seed.
2. The S3 server goes away for a while during training and comes back on the same endpoint:
   training does not crash, pending checkpoints upload afterwards, the finals are verified.
3. SIGKILL in the middle of a checkpoint upload: the half-uploaded checkpoint has no
   manifest, resume ignores it (and says so), and the next complete upload replaces it.
4. A run restarted after it completed does not train again.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmft.storage import MANIFEST_NAME, download_tree, list_objects, parse_location, read_manifest
from llmft.storage.client import s3_client
from llmft.storage.seaweed import SeaweedServer
from llmft.sync import RUN_COMPLETE_MARKER, scan

pytestmark = pytest.mark.slow

MAX_STEPS = 12
SAVE_STEPS = 3
QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
] + [(f"Say the number {i}.", f"{i}") for i in range(9)]
# Uploads paced (one file at a time, capped bandwidth, one checkpoint pending at most) so a tiny
# run cannot race past the moment a test acts on; the training arithmetic is untouched.
PACED = {
    "LLMFT_TRANSFER_WORKERS": "1",
    "LLMFT_TRANSFER_MAX_BANDWIDTH": str(2 * 1024 * 1024),
    "LLMFT_SYNC_MAX_PENDING": "1",
}
# Patient-but-quick background retries for the outage test (the defaults ride out minutes).
QUICK_RETRIES = {
    "LLMFT_SYNC_ATTEMPTS": "60",
    "LLMFT_SYNC_BACKOFF": "0.2",
    "LLMFT_SYNC_MAX_BACKOFF": "1",
    "LLMFT_SYNC_RETRY_PAUSE": "1",
}


def sft_config(folder: Path, model_dir: Path, output: Path, remote: str, seed: int) -> Path:
    """The tutorial's config shape, full-parameter on the tiny model, streaming to `remote`."""
    import yaml

    # One data file for every launch: a relaunch runs the same config (a finished run refuses another).
    data = model_dir.parent / "resume-faults-train.jsonl"
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = {
        "method": "sft",
        "data_conf": {
            "training_data": {"type": "CONCATENATION", "datasets": [{"path": str(data)}]},
            "validation_data": {"type": "NONE"},
            "chat_template_name": "keep-original",
        },
        "training_args": {
            "output_dir": str(output),
            "learning_rate": 5e-3,
            "lr_scheduler_type": "linear",
            "max_steps": MAX_STEPS,
            "logging_steps": 1,
            "save_steps": SAVE_STEPS,
            "seed": seed,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(model_dir), "resume_from_checkpoint": "auto", "checkpoints_remote": remote},
        "sft_args": {"max_seq_length": 128},
    }
    path = folder / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


class Training:
    """One `llmft sft CONFIG` process writing its log to a file; killed only by its own PID."""

    def __init__(self, model_dir: Path, output: Path, remote: str, env: dict, log_path: Path, seed: int = 0):
        self.output = output
        self.log_path = log_path
        folder = log_path.with_suffix("")
        folder.mkdir(parents=True, exist_ok=True)
        config = sft_config(folder, model_dir, output, remote, seed)
        command = [sys.executable, "-m", "llmft", "sft", str(config)]
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **env}, start_new_session=True
            )

    def last_step(self) -> int:
        """The newest optimizer step this process logged in metrics.jsonl (0 before the first)."""
        metrics = self.output / "metrics.jsonl"
        steps = (
            [json.loads(line).get("step", 0) for line in metrics.read_text().splitlines() if line.strip().endswith("}")]
            if metrics.exists()
            else []
        )
        return max(steps, default=0)

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, (
                f"process exited ({self.process.returncode}) before {what}:\n{self.log[-4000:]}"
            )
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log[-4000:]}"
            time.sleep(0.02)

    def kill(self) -> None:
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=60) == -signal.SIGKILL

    def finish(self, timeout: float = 300) -> str:
        code = self.process.wait(timeout=timeout)
        assert code == 0, f"training exited {code}:\n{self.log[-6000:]}"
        return self.log


def complete_steps(remote: str) -> list[int]:
    return sorted(scan(parse_location(remote)).complete)


def final_weights(remote: str, scratch: Path) -> dict:
    """The final model as the bucket holds it (downloaded and verified against its manifest)."""
    from safetensors.torch import load_file

    download_tree(parse_location(remote).child("checkpoint-final"), scratch)
    return load_file(scratch / "model.safetensors")


def assert_same_weights(expected: dict, actual: dict) -> None:
    import torch

    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.allclose(expected[name], actual[name], rtol=0, atol=1e-6), name


def bucket_state(bucket: str, prefix: str) -> dict[str, str]:
    client = s3_client()
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return {item["Key"]: item["ETag"] for page in pages for item in page.get("Contents", [])}


@pytest.fixture(scope="session")
def reference_runs(tmp_path_factory, tiny_model_dir, s3_server):
    """Uninterrupted runs, one per seed, in their own bucket: seed -> remote run location."""
    root = tmp_path_factory.mktemp("reference")
    name = f"reference-{secrets.token_hex(6)}"
    s3_server.create_bucket(name)
    runs = {}

    def run(seed: int) -> str:
        if seed not in runs:
            remote = f"{name}/runs/seed-{seed}"
            Training(
                tiny_model_dir,
                root / f"seed-{seed}",
                remote,
                s3_server.environment(),
                root / f"seed-{seed}.log",
                seed=seed,
            ).finish()
            runs[seed] = remote
        return runs[seed]

    return run


@pytest.mark.xdist_group("resume-faults-reference")
@pytest.mark.parametrize("seed", [0])
def test_sigkill_then_restart_from_the_bucket_ends_with_the_uninterrupted_weights(
    seed, reference_runs, bucket, s3_env, tiny_model_dir, tmp_path
):
    reference = reference_runs(seed)
    remote = f"{bucket}/runs/killed"
    output = tmp_path / "out"
    # A random step after the second save: with one upload pending at most, the first save is
    # complete in the bucket by then (waited for below all the same).
    kill_step = random.Random(seed).randint(2 * SAVE_STEPS + 1, MAX_STEPS - 3)
    first = Training(tiny_model_dir, output, remote, {**s3_env, **PACED}, tmp_path / "first.log", seed=seed)
    first.wait_for(
        lambda: first.last_step() >= kill_step and complete_steps(remote),
        f"step {kill_step} and a complete remote checkpoint",
    )
    first.kill()
    saved = complete_steps(remote)
    assert saved and max(saved) < MAX_STEPS
    assert RUN_COMPLETE_MARKER not in list_objects(parse_location(remote))

    shutil.rmtree(output)  # the pod's disk is gone: only the bucket remains
    log = Training(tiny_model_dir, output, remote, s3_env, tmp_path / "second.log", seed=seed).finish()
    resumed_from = max(saved)
    assert f"resuming from s3://{remote}/checkpoint-{resumed_from} (step {resumed_from})" in log
    summary = json.loads(s3_client().get_object(Bucket=bucket, Key="runs/killed/summary.json")["Body"].read())
    assert summary["resumed_from"].endswith(f"checkpoint-{resumed_from}") and summary["steps"] == MAX_STEPS
    assert_same_weights(final_weights(reference, tmp_path / "ref-final"), final_weights(remote, tmp_path / "final"))


@pytest.mark.xdist_group("resume-faults-reference")
def test_restart_after_completion_does_not_train_again(reference_runs, bucket, s3_env, tiny_model_dir, tmp_path):
    remote = reference_runs(0)
    run_bucket, _, prefix = remote.partition("/")
    before = bucket_state(run_bucket, prefix)
    output = tmp_path / "out"
    log = Training(tiny_model_dir, output, remote, s3_env, tmp_path / "again.log").finish()
    assert "already holds a finished run" in log and "nothing to do" in log
    assert "step 1/" not in log  # no training step ran
    assert bucket_state(run_bucket, prefix) == before  # nothing uploaded, nothing deleted
    assert not list(output.glob("checkpoint-*")) and not (output / "metrics.jsonl").exists()


@pytest.fixture
def own_s3_server(tmp_path):
    """A dedicated server this test may stop and start again on the same ports."""
    server = SeaweedServer(
        tmp_path / "seaweed" / "data",
        access_key="outage-" + secrets.token_hex(4),
        secret_key=secrets.token_hex(16),
        log_path=tmp_path / "seaweed" / "weed.log",
    )
    server.start()
    yield server
    server.stop()


def test_s3_outage_during_training_is_ridden_out(own_s3_server, tiny_model_dir, tmp_path):
    server = own_s3_server
    server.create_bucket("outage")
    endpoint = server.endpoint
    remote = "outage/runs/r"
    # Paced uploads (but the default two pending checkpoints, so saves queue up during the outage).
    env = {**server.environment(), **QUICK_RETRIES, **PACED, "LLMFT_SYNC_MAX_PENDING": "2"}
    os.environ.update(server.environment())  # for this test's own bucket reads
    try:
        training = Training(tiny_model_dir, tmp_path / "out", remote, env, tmp_path / "train.log")
        training.wait_for(lambda: complete_steps(remote), "the first complete remote checkpoint")
        down_at = training.last_step()
        server.stop()
        # Training goes on without the bucket (until the upload queue is full): the next checkpoint
        # is saved during the outage, and the uploads notice the outage.
        next_save = (down_at // SAVE_STEPS + 1) * SAVE_STEPS
        assert next_save <= MAX_STEPS
        training.wait_for(
            lambda: training.last_step() >= next_save and "EndpointConnectionError" in training.log,
            f"step {next_save} and a failed upload during the outage",
        )
        server.start(keep_ports=True)
        assert server.endpoint == endpoint
        training.finish()  # exit 0: the outage was retried, not fatal
        assert complete_steps(remote) == list(range(SAVE_STEPS, MAX_STEPS + 1, SAVE_STEPS))
        run = scan(parse_location(remote))
        assert run.finished() == (True, "") and not run.incomplete
    finally:
        for name in server.environment():
            os.environ.pop(name, None)


def test_kill_during_a_checkpoint_upload_leaves_no_usable_half_checkpoint(bucket, s3_env, tiny_model_dir, tmp_path):
    remote = f"{bucket}/runs/half"
    location = parse_location(remote)
    # One file at a time, slowly: a checkpoint (~1.7 MiB, 11 files) takes seconds to upload.
    slow = {**s3_env, "LLMFT_TRANSFER_WORKERS": "1", "LLMFT_TRANSFER_MAX_BANDWIDTH": str(512 * 1024)}
    output = tmp_path / "out"
    first = Training(tiny_model_dir, output, remote, slow, tmp_path / "first.log")
    second_save = location.child(f"checkpoint-{2 * SAVE_STEPS}")

    def half_uploaded() -> bool:
        return (
            complete_steps(remote) == [SAVE_STEPS]
            and bool(list_objects(second_save))
            and read_manifest(second_save) is None
        )

    first.wait_for(half_uploaded, f"checkpoint-{2 * SAVE_STEPS} partly uploaded")
    first.kill()
    partial = list_objects(second_save)
    assert partial and MANIFEST_NAME not in partial

    shutil.rmtree(output)
    log = Training(tiny_model_dir, output, remote, s3_env, tmp_path / "second.log").finish()
    assert f"ignoring incomplete remote checkpoint-{2 * SAVE_STEPS}" in log
    assert f"resuming from s3://{remote}/checkpoint-{SAVE_STEPS} (step {SAVE_STEPS})" in log
    # The next complete upload of that step replaced the half one: exactly the manifest's files remain.
    manifest = read_manifest(second_save)
    assert manifest is not None
    assert set(list_objects(second_save)) == set(manifest.files) | {MANIFEST_NAME}
    assert not scan(location).incomplete
