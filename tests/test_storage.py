"""The bucket storage layer against a real S3 server (SeaweedFS)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.storage import (
    MANIFEST_NAME,
    copy,
    download_tree,
    is_complete,
    list_objects,
    parse_location,
    read_manifest,
    upload_tree,
)
from llmft.storage.client import s3_client
from llmft.storage.location import Location, safe_join
from llmft.storage.seaweed import SeaweedServer
from llmft.storage.transfer import TransferSettings

MIB = 1024 * 1024
# A small multipart threshold so a 12 MiB file goes up in three parts (S3's minimum part is 5 MiB).
MULTIPART = TransferSettings(
    workers=4, multipart_threshold=5 * MIB, multipart_chunksize=5 * MIB, attempts=2, backoff_seconds=0.1
)


def make_tree(root: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"a": 1}',
        "nested/deeper/weights.bin": os.urandom(12 * MIB + 123),
        "nested/tokenizer.json": b"tok" * 1000,
        "empty.txt": b"",
    }
    for relative, data in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


@pytest.mark.parametrize(
    "text, bucket, key",
    [
        ("s3://b/models/x", "b", "models/x"),
        ("default-bucket/models/tiny", "default-bucket", "models/tiny"),
        ("default-bucket", "default-bucket", ""),
        ("/abs/path", None, "/abs/path"),
        ("./rel/path", None, "./rel/path"),
        ("../up", None, "../up"),
    ],
)
def test_location_rule(text, bucket, key):
    location = parse_location(text)
    assert (location.bucket, location.key) == (bucket, key)


def test_unsupported_scheme_is_a_clear_error():
    with pytest.raises(UserError, match="gs:// is not supported"):
        parse_location("gs://bucket/x")


def test_tree_round_trip_with_multipart_file_and_manifest(bucket, tmp_path):
    source = tmp_path / "src"
    files = make_tree(source)
    destination = parse_location(f"{bucket}/models/tree")
    report = upload_tree(source, destination, MULTIPART)
    assert sorted(report.transferred) == sorted(files)
    manifest = read_manifest(destination)
    assert manifest is not None and set(manifest.files) == set(files)
    assert manifest.files["nested/deeper/weights.bin"].size == 12 * MIB + 123
    # The big file really went up as a multipart upload: its ETag carries the part count.
    head = s3_client().head_object(Bucket=bucket, Key="models/tree/nested/deeper/weights.bin")
    assert head["ETag"].strip('"').endswith("-3")

    target = tmp_path / "dst"
    download_tree(parse_location(f"s3://{bucket}/models/tree"), target, MULTIPART)
    for relative, data in files.items():
        assert (target / relative).read_bytes() == data
    assert not list(target.rglob("*.part"))


def test_reupload_skips_unchanged_files(bucket, tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    destination = parse_location(f"{bucket}/models/again")
    upload_tree(source, destination, MULTIPART)
    (source / "config.json").write_bytes(b'{"a": 2}')
    report = upload_tree(source, destination, MULTIPART)
    assert report.transferred == ["config.json"]
    assert sorted(report.skipped) == ["empty.txt", "nested/deeper/weights.bin", "nested/tokenizer.json"]
    assert read_manifest(destination).files["config.json"].size == len(b'{"a": 2}')


def test_interrupted_upload_leaves_no_manifest(bucket, tmp_path, s3_env):
    """Kill a real `llmft storage cp` mid-upload: the tree is reported incomplete and refused."""
    source = tmp_path / "many"
    for index in range(60):
        (source / f"part-{index:02d}.bin").parent.mkdir(parents=True, exist_ok=True)
        (source / f"part-{index:02d}.bin").write_bytes(os.urandom(2 * MIB))
    destination = f"{bucket}/ckpt/checkpoint-10"
    env = {**os.environ, **s3_env, "LLMFT_TRANSFER_WORKERS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-m", "llmft", "storage", "cp", str(source), destination],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    location = parse_location(destination)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and len(list_objects(location)) < 3:
        time.sleep(0.05)
    process.kill()
    process.wait()
    uploaded = list_objects(location)
    assert 3 <= len(uploaded) < 60, "the kill should land mid-upload"
    assert MANIFEST_NAME not in uploaded
    assert not is_complete(location)
    with pytest.raises(UserError, match="incomplete"):
        download_tree(location, tmp_path / "out")
    listing = subprocess.run(
        [sys.executable, "-m", "llmft", "storage", "ls", f"{bucket}/ckpt"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert "checkpoint-10/  [incomplete (no manifest)]" in listing.stdout


def test_corrupted_object_is_detected_on_download(bucket, tmp_path):
    source = tmp_path / "src"
    make_tree(source)
    destination = parse_location(f"{bucket}/models/corrupt")
    upload_tree(source, destination, MULTIPART)
    # Same size, different bytes: only the checksum can tell.
    s3_client().put_object(Bucket=bucket, Key="models/corrupt/nested/tokenizer.json", Body=b"TOK" * 1000)
    with pytest.raises(UserError, match=r"corrupted download of .*nested/tokenizer.json"):
        download_tree(destination, tmp_path / "dst", MULTIPART)
    assert not (tmp_path / "dst" / "nested" / "tokenizer.json").exists()


def test_manifest_key_escaping_the_prefix_is_refused(bucket, tmp_path):
    manifest = {"version": 1, "created": 0, "files": {"../../escaped.txt": {"size": 2, "sha256": "00"}}}
    s3_client().put_object(Bucket=bucket, Key=f"evil/{MANIFEST_NAME}", Body=json.dumps(manifest).encode())
    with pytest.raises(UserError, match="escape the target folder"):
        download_tree(parse_location(f"{bucket}/evil"), tmp_path / "dst")
    assert not (tmp_path / "escaped.txt").exists()


@pytest.mark.parametrize("relative", ["../x", "a/../../x", "/etc/passwd", "a/b/../../../x"])
def test_safe_join_refuses_escapes(tmp_path, relative):
    with pytest.raises(UserError):
        safe_join(tmp_path, relative)


def test_single_file_copy_up_and_down(bucket, tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text('{"messages": []}\n')
    copy(str(path), f"{bucket}/datasets/")
    copy(f"s3://{bucket}/datasets/train.jsonl", str(tmp_path / "back.jsonl"))
    assert (tmp_path / "back.jsonl").read_text() == path.read_text()


def run_cli(*args: str, env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "llmft", *args], env=env, capture_output=True, text=True)


def test_wrong_credentials_give_one_line_error(bucket, s3_env, tmp_path):
    env = {**os.environ, **s3_env, "BUCKET_STORAGE_SECRET_KEY": "wrong", "LLMFT_TRANSFER_ATTEMPTS": "1"}
    result = run_cli("storage", "ls", f"{bucket}/anything", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "rejected the credentials" in lines[0]
    assert s3_env["BUCKET_STORAGE_HOST"] in lines[0]
    assert "BUCKET_STORAGE_ACCESS_KEY and BUCKET_STORAGE_SECRET_KEY" in lines[0]
    assert "wrong" not in lines[0], "secrets never appear in messages"


def test_missing_bucket_suggests_local_form(s3_env, tmp_path):
    (tmp_path / "mydata").mkdir()
    (tmp_path / "mydata" / "train.jsonl").write_text("{}\n")
    env = {**os.environ, **s3_env, "LLMFT_TRANSFER_ATTEMPTS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "storage", "cp", "mydata/train.jsonl", "/tmp/x"],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "bucket 'mydata' does not exist" in result.stderr
    assert "write ./mydata/train.jsonl" in result.stderr
    assert "Traceback" not in result.stderr


def test_unreachable_endpoint_names_the_variable(tmp_path):
    from llmft.storage.seaweed import free_ports

    env = {
        **os.environ,
        "BUCKET_STORAGE_HOST": f"http://127.0.0.1:{free_ports(1)[0]}",
        "BUCKET_STORAGE_ACCESS_KEY": "k",
        "BUCKET_STORAGE_SECRET_KEY": "s",
        "LLMFT_TRANSFER_ATTEMPTS": "1",
    }
    result = run_cli("storage", "ls", "some-bucket/x", env=env)
    assert result.returncode == 1  # may pass on its own: a Job retries it
    assert result.stderr.startswith("error: cannot reach bucket storage at http://127.0.0.1:")
    assert "check BUCKET_STORAGE_HOST" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_location_child_and_prefix():
    location = Location("b", "models/x/")
    assert location.prefix == "models/x/"
    assert location.child("a.json").key == "models/x/a.json"
    assert Location("b", "").prefix == ""


def test_upload_to_missing_bucket_is_a_clear_error(s3_env, tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("x")
    with pytest.raises(UserError, match="bucket 'no-such-bucket-here' does not exist at http://127.0.0.1"):
        copy(str(path), "no-such-bucket-here/a.txt")


def test_ls_tells_complete_trees_from_folders_of_trees(bucket, tmp_path, s3_env):
    source = tmp_path / "ckpt"
    source.mkdir()
    (source / "w.bin").write_bytes(b"w")
    upload_tree(source, parse_location(f"{bucket}/experiments/run-a/checkpoint-5"))
    env = {**os.environ, **s3_env}
    experiments = run_cli("storage", "ls", f"{bucket}/experiments", env=env).stdout
    assert "run-a/  [folders]" in experiments and "no manifest" not in experiments
    run = run_cli("storage", "ls", f"{bucket}/experiments/run-a", env=env).stdout
    assert "checkpoint-5/  [complete]" in run and "no manifest" not in run


def test_server_side_tree_copy_is_complete_and_verified(bucket, tmp_path):
    from llmft.storage.transfer import copy_remote_tree

    source = tmp_path / "src"
    files = make_tree(source)
    original = parse_location(f"{bucket}/run/checkpoint-final")
    upload_tree(source, original, MULTIPART)
    alias = parse_location(f"{bucket}/run/checkpoint-final-merged")
    copy_remote_tree(original, alias, MULTIPART)
    assert read_manifest(alias).files == read_manifest(original).files
    download_tree(alias, tmp_path / "dst", MULTIPART)
    assert all((tmp_path / "dst" / relative).read_bytes() == data for relative, data in files.items())
    with pytest.raises(UserError, match="incomplete"):
        copy_remote_tree(parse_location(f"{bucket}/run/nothing"), parse_location(f"{bucket}/run/x"))


def test_copy_never_replaces_a_different_file_unless_asked(bucket, tmp_path):
    """`llmft storage cp` onto an existing, different file (local or in the bucket) is refused before anything is
    written; the same content is a no-op, `--overwrite` replaces; a folder never lands on a file."""
    mine = tmp_path / "mine.txt"
    mine.write_text("mine")
    other = tmp_path / "other.txt"
    other.write_text("other")
    with pytest.raises(UserError, match=r"already exists and differs .*pass --overwrite"):
        copy(str(other), str(mine))
    assert mine.read_text() == "mine"
    copy(str(mine), str(mine.with_name("copy.txt")))
    copy(str(mine), str(mine.with_name("copy.txt")))  # the same bytes again: fine
    copy(str(other), str(mine), overwrite=True)
    assert mine.read_text() == "other"

    remote = f"{bucket}/files/a.txt"
    copy(str(mine), remote)
    (tmp_path / "changed.txt").write_text("changed")
    with pytest.raises(UserError, match=rf"s3://{bucket}/files/a.txt already exists and differs"):
        copy(str(tmp_path / "changed.txt"), remote)
    mine.write_text("edited locally")
    with pytest.raises(UserError, match="mine.txt already exists and differs"):
        copy(remote, str(mine))  # a download onto a different local file too
    assert mine.read_text() == "edited locally"

    tree = tmp_path / "tree"
    make_tree(tree)
    with pytest.raises(UserError, match="mine.txt is a file, so a folder cannot be copied onto it"):
        copy(str(tree), str(mine))


def test_server_that_loses_a_port_before_binding_it_starts_on_fresh_ones(tmp_path):
    """Free ports are picked, then released for `weed` to bind: another process may take one first."""
    server = SeaweedServer(tmp_path / "s3", access_key="k" * 12, secret_key="s" * 24)
    ports = server.reserve_ports()
    thief = socket.socket()
    thief.bind(("127.0.0.1", ports["master.port"]))
    thief.listen()
    s3_port = ports["s3.port"]
    try:
        server.start(keep_ports=True)
        assert server.ports["s3.port"] == s3_port  # clients (or a relay) already point there
        assert server.ports["master.port"] != thief.getsockname()[1]
        server.create_bucket("after-retry")
    finally:
        server.stop()
        thief.close()
