"""A relaunched run's start-up: the restore overlaps the imports, the time line is reported, unused
libraries stay out, and uploads are verified by the server instead of being read back.

The training test runs the real `llmft sft CONFIG` program (a subprocess, tiny model, CPU) against
the test SeaweedFS server: a first run leaves checkpoint-1 in the bucket, its run-complete marker is
deleted (a pod that died after its save), and the relaunch is inspected.
"""

from __future__ import annotations

import base64
import hashlib
import json
import subprocess
import sys

import pytest
import yaml

from benchmarks.bench_resume import resume_config, write_chat
from llmft.run_layout import MANIFEST_NAME, RUN_COMPLETE_MARKER
from llmft.storage import parse_location
from llmft.storage.client import s3_client
from llmft.storage.errors import CorruptObject
from llmft.storage.transfer import TransferSettings, head_object, list_objects, upload_file
from llmft.sync.remote_ops import upload_verified_tree

# Runs `llmft sft CONFIG` as the process's program (what `python -m llmft` does), then reports which
# optional libraries the run imported.
PROGRAM = """
import atexit, json, sys
from llmft.cli import main
atexit.register(lambda: print("MODULES " + json.dumps({name: sys.modules.get(name) is not None
                                                       for name in ("peft", "deepspeed", "trl", "torch")})))
sys.argv = ["llmft", "sft", sys.argv[1]]
sys.exit(main())
"""


def _config(path, tiny_model_dir, data, output, remote, max_steps):
    path.write_text(yaml.safe_dump(resume_config(tiny_model_dir, data, output, max_steps, remote)))
    return path


def _program(config):
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(config)], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    modules = next(line for line in done.stdout.splitlines() if line.startswith("MODULES "))
    return done, json.loads(modules.split(" ", 1)[1])


@pytest.mark.slow
def test_relaunch_restores_beside_the_imports_reports_its_time_line_and_keeps_peft_and_deepspeed_out(
    bucket, s3_env, tiny_model_dir, tmp_path
):
    data = write_chat(tmp_path / "chat.jsonl")
    remote = f"{bucket}/runs/startup"
    _program(_config(tmp_path / "first.yaml", tiny_model_dir, data, tmp_path / "first", remote, max_steps=1))
    s3_client().delete_object(Bucket=bucket, Key=f"runs/startup/{RUN_COMPLETE_MARKER}")  # died after its save

    done, modules = _program(
        _config(tmp_path / "again.yaml", tiny_model_dir, data, tmp_path / "again", remote, max_steps=2)
    )

    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["resumed_from"] and summary["resumed_from"].endswith("checkpoint-1")
    timeline = summary["timeline"]
    assert timeline["origin"] == "process start"
    seconds = timeline["seconds"]
    order = ["interpreter", "imports", "data", "model", "trainer", "optimizer", "first_step", "first_step_done"]
    assert [seconds[name] for name in order] == sorted(seconds[name] for name in order), seconds
    # The download began before the heavy imports were done: it overlaps them.
    assert seconds["interpreter"] <= seconds["restore_started"] < seconds["imports"]
    assert seconds["restore_started"] < seconds["restore_done"] <= seconds["optimizer"]
    assert "start-up time line (from process start): interpreter" in done.stderr
    # A full-parameter run without DeepSpeed never imports peft or DeepSpeed; trl only because it trains with it.
    assert modules == {"peft": False, "deepspeed": False, "trl": True, "torch": True}


def test_an_imported_run_keeps_its_libraries(tmp_path):
    """Marking libraries absent is only for a process whose program the run is (not for tests or notebooks)."""
    from llmft.commands.finetune import unused_libraries
    from llmft.finetune.config import load_config

    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(tmp_path / "d.jsonl")}]}},
        "training_args": {"output_dir": str(tmp_path / "out")},
        "run_conf": {"model": str(tmp_path)},
    }
    full = load_config({**config, "peft_conf": {"peft_type": "NO_PEFT"}})
    lora = load_config({**config, "peft_conf": {"peft_type": "LORA"}})
    zero3 = load_config(
        {**config, "peft_conf": {"peft_type": "LORA"}, "launch_conf": {"distributed_type": "auto-deepspeed-stage3"}}
    )
    assert unused_libraries(full) == ["peft", "deepspeed"]
    assert unused_libraries(lora) == ["deepspeed"]
    assert unused_libraries(zero3) == []


def test_uploads_are_checked_by_the_server_and_not_read_back(bucket, tmp_path):
    folder = tmp_path / "checkpoint-3"
    folder.mkdir()
    (folder / "small.bin").write_bytes(b"x" * 1000)
    (folder / "big.bin").write_bytes(bytes(range(256)) * (24 * 1024 * 1024 // 256))  # multipart at a 16 MiB threshold
    settings = TransferSettings(multipart_threshold=16 * 1024 * 1024, multipart_chunksize=8 * 1024 * 1024, attempts=1)
    operations: list[tuple[str, str]] = []

    def note(params, model, **kwargs):
        operations.append((model.name, params.get("Key", "")))

    client = s3_client()
    client.meta.events.register("before-parameter-build.s3", note)
    try:
        manifest = upload_verified_tree(folder, parse_location(f"{bucket}/run/checkpoint-3"), settings, "test")
    finally:
        client.meta.events.unregister("before-parameter-build.s3", note)

    # Nothing uploaded is downloaded again: the only object read is the manifest.
    reads = [key for name, key in operations if name == "GetObject"]
    assert reads and all(key.endswith(MANIFEST_NAME) for key in reads), reads
    assert [key for name, key in operations if name == "PutObject" and key.endswith("small.bin")]
    assert [key for name, key in operations if name == "CreateMultipartUpload"]
    # The server stored (and so checked) the sha256 the manifest records for the single-PUT file.
    head = head_object(parse_location(f"{bucket}/run/checkpoint-3/small.bin"))
    expected = base64.b64encode(hashlib.sha256(b"x" * 1000).digest()).decode()
    assert head["ChecksumSHA256"] == expected
    assert manifest.files["small.bin"].sha256 == hashlib.sha256(b"x" * 1000).hexdigest()


def test_bytes_that_do_not_match_their_checksum_are_refused_by_the_server(bucket, tmp_path):
    path = tmp_path / "weights.bin"
    path.write_bytes(b"the real bytes")
    wrong = hashlib.sha256(b"what the hash was taken of").hexdigest()
    with pytest.raises(CorruptObject, match="did not match their checksum"):
        upload_file(
            path, parse_location(f"{bucket}/x/weights.bin"), settings=TransferSettings(attempts=1), sha256=wrong
        )
    assert list_objects(parse_location(f"{bucket}/x")) == {}
