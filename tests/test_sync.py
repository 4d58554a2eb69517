"""Checkpoint streaming to the bucket and restore from it (llmft.sync), against the real S3 server.

The four crash/outage acceptance tests run the real training process and live in
test_resume_faults.py; these tests pin down the pieces: background upload with
staging (robust to the Trainer deleting old checkpoints), the bounded queue,
remote retention, finals and the run-complete marker, restore's choice of
checkpoint, and the real Trainer callback.
"""

from __future__ import annotations

import dataclasses
import http.client
import json
import logging
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.storage import (
    MANIFEST_NAME,
    BucketUnreachable,
    list_objects,
    parse_location,
    read_manifest,
    upload_tree,
)
from llmft.storage.client import s3_client
from llmft.storage.seaweed import SeaweedServer
from llmft.storage.transfer import TransferSettings, write_object
from llmft.sync import RUN_COMPLETE_MARKER, CheckpointSync, parse_remote, scan

REPO = Path(__file__).resolve().parent.parent
TRAIN_SCRIPT = REPO / "tests" / "fixtures" / "sync" / "train_tiny.py"
FAST = TransferSettings(workers=4, attempts=3, backoff_seconds=0.05)


def fake_checkpoint(root: Path, step: int, size: int = 4096) -> Path:
    folder = root / f"checkpoint-{step}"
    (folder / "sub").mkdir(parents=True, exist_ok=True)
    (folder / "model.safetensors").write_bytes(os.urandom(size))
    (folder / "sub" / "rng_state.pth").write_bytes(os.urandom(100))
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return folder


def tree_bytes(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def remote_bytes(location) -> dict[str, bytes]:
    client = s3_client()
    return {
        rel: client.get_object(Bucket=location.bucket, Key=location.child(rel).key)["Body"].read()
        for rel in list_objects(location)
        if rel != MANIFEST_NAME
    }


def final_outputs(output: Path) -> None:
    (output / "checkpoint-final").mkdir(parents=True, exist_ok=True)
    (output / "checkpoint-final" / "model.safetensors").write_bytes(b"final-weights")
    (output / "logs").mkdir(exist_ok=True)
    (output / "logs" / "events.out.tfevents").write_bytes(b"tb")
    (output / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n')
    (output / "summary.json").write_text('{"steps": 4}')


@pytest.mark.parametrize(
    "text, message",
    [
        ("./local/run", "is a local path"),
        ("/abs/run", "is a local path"),
        ("s3://only-bucket", "names a whole bucket"),
    ],
)
def test_remote_must_be_a_bucket_folder(text, message):
    with pytest.raises(UserError, match=message) as info:
        parse_remote(text)
    assert "run_conf.checkpoints_remote" in str(info.value)


def test_checkpoints_upload_in_background_survive_local_rotation_and_follow_retention(bucket, tmp_path):
    output = tmp_path / "out"
    remote = f"s3://{bucket}/runs/r1"
    sync = CheckpointSync(remote, output, save_total_limit=2, settings=FAST, max_pending_uploads=4)
    originals = {}
    for step in (5, 10, 15, 20):
        folder = fake_checkpoint(output, step)
        originals[step] = tree_bytes(folder)
        sync.enqueue(folder, step)
        # What the Trainer's save_total_limit rotation does, possibly before the upload ran.
        import shutil

        shutil.rmtree(folder)
    final_outputs(output)
    marker = sync.finish()

    run = scan(parse_location(remote))
    assert sorted(run.complete) == [15, 20] and not run.incomplete  # 5 and 10 removed after newer ones completed
    for step in (15, 20):
        assert remote_bytes(parse_location(f"{remote}/checkpoint-{step}")) == originals[step]
    assert run.trees_complete == {"checkpoint-final": True, "logs": True}
    assert marker["trees"] == ["checkpoint-final", "logs"]
    assert marker["files"] == ["metrics.jsonl", "summary.json"]
    assert marker["checkpoints_uploaded"] == ["checkpoint-5", "checkpoint-10", "checkpoint-15", "checkpoint-20"]
    assert (
        json.loads(s3_client().get_object(Bucket=bucket, Key=f"runs/r1/{RUN_COMPLETE_MARKER}")["Body"].read()) == marker
    )
    assert not (output / ".llmft-sync-staging").exists()


def test_full_queue_makes_the_save_wait_until_an_upload_finished(bucket, tmp_path, caplog):
    output = tmp_path / "out"
    remote = parse_location(f"{bucket}/runs/slow")
    # ~1 MiB at 1 MiB/s: the first upload is still running when the second save arrives.
    slow = dataclasses.replace(FAST, workers=1, max_bandwidth=1024 * 1024)
    sync = CheckpointSync(str(remote), output, settings=slow, max_pending_uploads=1)
    caplog.set_level(logging.INFO, logger="llmft.sync")
    sync.enqueue(fake_checkpoint(output, 1, size=1024 * 1024), 1)
    sync.enqueue(fake_checkpoint(output, 2), 2)
    # The second save returned only once checkpoint-1 was complete in the bucket.
    assert read_manifest(remote.child("checkpoint-1")) is not None
    assert any("upload queue full" in r.getMessage() and "checkpoint-2 waits" in r.getMessage() for r in caplog.records)
    final_outputs(output)
    sync.finish()
    assert sorted(scan(remote).complete) == [1, 2]


def test_restore_takes_newest_complete_checkpoint_and_reports_incomplete_ones(bucket, tmp_path, caplog):
    remote = parse_location(f"{bucket}/runs/r2")
    source = tmp_path / "src"
    for step in (10, 20):
        upload_tree(fake_checkpoint(source, step), remote.child(f"checkpoint-{step}"), FAST)
    # An upload killed half-way: files, no manifest.
    write_object(remote.child("checkpoint-30/model.safetensors"), b"half")
    output = tmp_path / "out"
    (output / "checkpoint-20").mkdir(parents=True)
    (output / "checkpoint-20" / "stale.bin").write_bytes(b"left by an earlier attempt")

    caplog.set_level(logging.INFO, logger="llmft.sync")
    restored = CheckpointSync(str(remote), output, settings=FAST).restore()
    assert not restored.final_complete
    assert restored.step == 20 and restored.checkpoint == output / "checkpoint-20"
    assert tree_bytes(output / "checkpoint-20") == tree_bytes(source / "checkpoint-20")
    assert restored.skipped == ["checkpoint-30 (1 files, no manifest: its upload did not finish)"]
    text = caplog.text
    assert f"resuming from {remote}/checkpoint-20 (step 20)" in text
    assert "skipped: checkpoint-30" in text


def test_restore_falls_back_to_an_older_checkpoint_when_the_newest_is_corrupted(bucket, tmp_path):
    remote = parse_location(f"{bucket}/runs/r3")
    source = tmp_path / "src"
    for step in (10, 20):
        upload_tree(fake_checkpoint(source, step), remote.child(f"checkpoint-{step}"), FAST)
    # Same size, different bytes: only the manifest's sha256 can tell.
    damaged = bytearray((source / "checkpoint-20" / "model.safetensors").read_bytes())
    damaged[0] ^= 0xFF
    write_object(remote.child("checkpoint-20/model.safetensors"), bytes(damaged))

    restored = CheckpointSync(str(remote), tmp_path / "out", settings=FAST).restore()
    assert restored.step == 10
    assert restored.skipped[0].startswith("checkpoint-20 (could not be restored: corrupted download")


def test_restore_skips_a_checkpoint_whose_manifest_is_unreadable(bucket, tmp_path):
    remote = parse_location(f"{bucket}/runs/r4")
    source = tmp_path / "src"
    for step in (10, 20):
        upload_tree(fake_checkpoint(source, step), remote.child(f"checkpoint-{step}"), FAST)
    write_object(remote.child(f"checkpoint-20/{MANIFEST_NAME}"), b"{not json")

    restored = CheckpointSync(str(remote), tmp_path / "out", settings=FAST).restore()
    assert restored.step == 10
    assert restored.skipped[0].startswith("checkpoint-20 (could not be restored: ")
    assert "is not a readable manifest" in restored.skipped[0]


class _FailObjectReads(BaseHTTPRequestHandler):
    """A proxy in front of the real S3 server: listings pass, every object read answers 503."""

    def do_GET(self):
        if "list-type=" not in self.path:
            self.server.failed.append(self.path)
            self.send_response(503)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        upstream = http.client.HTTPConnection(self.server.upstream, timeout=30)
        upstream.request("GET", self.path, headers=dict(self.headers))  # same Host: the signature holds
        response = upstream.getresponse()
        body = response.read()
        self.send_response(response.status)
        for name, value in response.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_restore_stops_when_the_bucket_fails_instead_of_trying_older_checkpoints(bucket, s3_env, tmp_path, monkeypatch):
    """A bucket that lists but cannot serve objects must not make the run start from step 0."""
    remote = parse_location(f"{bucket}/runs/r5")
    source = tmp_path / "src"
    for step in (10, 20):
        upload_tree(fake_checkpoint(source, step), remote.child(f"checkpoint-{step}"), FAST)
    proxy = ThreadingHTTPServer(("127.0.0.1", 0), _FailObjectReads)
    proxy.upstream = s3_env["BUCKET_STORAGE_HOST"].removeprefix("http://")
    proxy.failed = []
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("BUCKET_STORAGE_HOST", f"http://127.0.0.1:{proxy.server_address[1]}")
        with pytest.raises(BucketUnreachable, match="kept failing"):
            CheckpointSync(str(remote), tmp_path / "out", settings=FAST).restore()
    finally:
        proxy.shutdown()
        proxy.server_close()
    assert len(proxy.failed) == FAST.attempts, "one object read, attempted exactly FAST.attempts times"
    assert not (tmp_path / "out" / "checkpoint-10").exists()


def test_restore_of_an_empty_remote_starts_fresh(bucket, tmp_path):
    restored = CheckpointSync(f"{bucket}/runs/new", tmp_path / "out", settings=FAST).restore()
    assert (restored.final_complete, restored.checkpoint, restored.skipped) == (False, None, [])


def test_finished_run_is_recognised_only_while_its_outputs_are_complete(bucket, tmp_path):
    remote = f"{bucket}/runs/done"
    output = tmp_path / "out"
    final_outputs(output)
    sync = CheckpointSync(remote, output, settings=FAST)
    sync.finish()
    assert CheckpointSync(remote, tmp_path / "again", settings=FAST).restore().final_complete
    # Someone removed the final model's manifest: the marker no longer vouches for the run.
    client = s3_client()
    client.delete_object(Bucket=bucket, Key=f"runs/done/checkpoint-final/{MANIFEST_NAME}")
    assert not CheckpointSync(remote, tmp_path / "third", settings=FAST).restore().final_complete


def test_finish_refuses_without_a_final_model_and_writes_no_marker(bucket, tmp_path):
    sync = CheckpointSync(f"{bucket}/runs/nofinal", tmp_path / "out", settings=FAST)
    (tmp_path / "out").mkdir()
    with pytest.raises(RuntimeError, match="neither .*checkpoint-final nor .*checkpoint-final-adapter"):
        sync.finish()
    assert RUN_COMPLETE_MARKER not in list_objects(parse_location(f"{bucket}/runs/nofinal"))


def test_trainer_callback_streams_checkpoints_from_a_real_training_run(bucket, s3_env, tiny_model_dir, tmp_path):
    """The callback inside a real transformers Trainer (tiny model, CPU), save_total_limit=1 locally
    and remotely: the Trainer deletes each old checkpoint right after the next save."""
    output = tmp_path / "out"
    remote = parse_location(f"{bucket}/runs/trainer")
    result = subprocess.run(
        [
            sys.executable,
            str(TRAIN_SCRIPT),
            "--model",
            str(tiny_model_dir),
            "--output",
            str(output),
            "--remote",
            str(remote),
            "--max-steps",
            "6",
            "--save-steps",
            "2",
            "--save-total-limit",
            "1",
        ],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, **s3_env},
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = scan(remote)
    assert sorted(run.complete) == [6]
    state = json.loads(
        s3_client().get_object(Bucket=bucket, Key=f"{remote.key}/checkpoint-6/trainer_state.json")["Body"].read()
    )
    assert state["global_step"] == 6
    assert set(read_manifest(remote.child("checkpoint-6")).files) >= {
        "model.safetensors",
        "optimizer.pt",
        "scheduler.pt",
        "rng_state.pth",
        "trainer_state.json",
    }
    assert run.finished() == (True, "")
    for step in (2, 4, 6):
        assert f"checkpoint-{step} queued for upload" in result.stderr


def test_seaweed_restart_keeps_endpoint_and_data(tmp_path):
    """The outage test's tool: a restarted server answers on the same endpoint with the same data."""
    import boto3

    server = SeaweedServer(
        tmp_path / "data",
        access_key="restart-test",
        secret_key="restart-secret-0123456789",
        log_path=tmp_path / "weed.log",
    )
    server.start()
    try:
        endpoint = server.endpoint
        server.create_bucket("kept")
        client = boto3.client(
            "s3",
            endpoint_url=endpoint,
            aws_access_key_id=server.access_key,
            aws_secret_access_key=server.secret_key,
            region_name="us-east-1",
        )
        client.put_object(Bucket="kept", Key="a/b.txt", Body=b"survives")
        server.restart()
        assert server.endpoint == endpoint and server.process.poll() is None
        assert client.get_object(Bucket="kept", Key="a/b.txt")["Body"].read() == b"survives"
    finally:
        server.stop()


def test_merged_lora_run_is_also_published_as_checkpoint_final_merged(bucket, tmp_path):
    """The original tutorial serves `<run>/checkpoint-final-merged`; a merged LoRA run provides it."""
    remote = f"{bucket}/runs/merged"
    output = tmp_path / "out"
    final_outputs(output)
    adapter = output / "checkpoint-final-adapter"
    adapter.mkdir()
    (adapter / "adapter_model.safetensors").write_bytes(b"lora")
    marker = CheckpointSync(remote, output, settings=FAST).finish()
    assert "checkpoint-final-merged" in marker["trees"]
    location = parse_location(remote)
    assert remote_bytes(location.child("checkpoint-final-merged")) == remote_bytes(location.child("checkpoint-final"))


def test_logs_remote_and_skip_download_from_the_chart(bucket, tmp_path):
    """`logsRemote` moves logs/ elsewhere; `debug.skip_checkpoint_download` starts fresh despite a checkpoint
    (the chart renders them as run_conf.logs_remote and run_conf.skip_checkpoint_download)."""
    remote = f"{bucket}/runs/chart-debug"
    output = tmp_path / "out"
    final_outputs(output)
    (output / "logs").mkdir(exist_ok=True)
    (output / "logs" / "events.out.tfevents.1").write_bytes(b"event")
    sync = CheckpointSync(remote, output, settings=FAST, logs_remote=f"{bucket}/tensorboard/chart-debug")
    sync.enqueue(fake_checkpoint(output, 3), 3)
    marker = sync.finish()
    assert "logs" not in marker["trees"] and marker["logs_remote"].endswith("tensorboard/chart-debug")
    assert "events.out.tfevents.1" in list_objects(parse_location(f"{bucket}/tensorboard/chart-debug"))
    assert CheckpointSync(remote, tmp_path / "o2", settings=FAST).restore().final_complete

    client = s3_client()
    client.delete_object(Bucket=bucket, Key=f"runs/chart-debug/{RUN_COMPLETE_MARKER}")
    assert CheckpointSync(remote, tmp_path / "o3", settings=FAST).restore().step == 3
    fresh = CheckpointSync(remote, tmp_path / "o4", settings=FAST, skip_download=True).restore()
    assert fresh.checkpoint is None and not (tmp_path / "o4" / "checkpoint-3").exists()
