"""`llmft download-model`: streaming a model into the real S3 server from a folder, a bucket and the Hub.

The Hub cannot be reached from here: `HubStandIn` (tests/hub_standin.py) is a local
HTTP server that stands in for the Hub's API, and `huggingface_hub`'s real client
talks to it through HF_ENDPOINT.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hub_standin import HubStandIn, offline_off, subprocess_environment

from llmft.errors import UserError
from llmft.staging.download_model import download_model
from llmft.storage import MANIFEST_NAME, download_tree, list_objects, parse_location, read_manifest
from llmft.storage.transfer import TransferSettings, sha256_file, write_object

LLMFT = str(Path(sys.executable).parent / "llmft")
FAST = TransferSettings(workers=4, attempts=1, backoff_seconds=0.1)


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_same_tree(bucket_location: str, expected_root: Path, tmp_path: Path, skip=()) -> None:
    """The bucket copy has a manifest, and downloading it gives back exactly the expected files."""
    location = parse_location(bucket_location)
    manifest = read_manifest(location)
    assert manifest is not None, f"{bucket_location} has no manifest"
    expected = {k: v for k, v in local_files(expected_root).items() if not any(k.startswith(s) for s in skip)}
    assert set(manifest.files) == set(expected)
    for relative, data in expected.items():
        assert manifest.files[relative].size == len(data)
    back = tmp_path / "back"
    shutil.rmtree(back, ignore_errors=True)
    download_tree(location, back)
    assert local_files(back) == expected


@pytest.fixture
def hub(tiny_model_dir, monkeypatch):
    """The Hub stand-in serving the tiny model as org/tiny (with an extra original/ folder), and a gated copy."""
    with HubStandIn() as server:
        folder = tiny_model_dir.parent / "tiny-with-original"
        if not folder.exists():
            shutil.copytree(tiny_model_dir, folder)
            (folder / "original").mkdir()
            (folder / "original" / "consolidated.00.pth").write_bytes(os.urandom(50_000))
        server.add_repo("org/tiny", folder)
        server.add_repo("org/gated", tiny_model_dir, gated=True, tokens=("hf_granted",))
        offline_off(monkeypatch, server.endpoint)
        yield server


# ---------------------------------------------------------------- local folder source


def test_local_folder_copy_rerun_skips_and_overwrite_recopies(bucket, tiny_model_dir, tmp_path):
    destination = f"{bucket}/models/tiny"
    first = download_model(str(tiny_model_dir), destination, settings=FAST)
    assert sorted(first.copied) == sorted(local_files(tiny_model_dir))
    assert first.skipped == []
    assert_same_tree(destination, tiny_model_dir, tmp_path)
    # The manifest records each file's real sha256.
    manifest = read_manifest(parse_location(destination))
    assert manifest.files["model.safetensors"].sha256 == sha256_file(tiny_model_dir / "model.safetensors")

    again = download_model(str(tiny_model_dir), destination, settings=FAST)
    assert again.copied == [] and sorted(again.skipped) == sorted(first.copied)

    fresh = download_model(str(tiny_model_dir), destination, overwrite=True, settings=FAST)
    assert sorted(fresh.copied) == sorted(first.copied) and fresh.skipped == []
    assert_same_tree(destination, tiny_model_dir, tmp_path)


def test_changed_file_is_recopied_and_interrupted_copy_completes(bucket, tiny_model_dir, tmp_path):
    source = tmp_path / "model"
    shutil.copytree(tiny_model_dir, source)
    destination = f"{bucket}/models/m"
    download_model(str(source), destination, settings=FAST)
    # A file changed at the source (same size, other bytes) is copied again; the rest is skipped.
    config = source / "config.json"
    size = config.stat().st_size
    config.write_bytes(b" " * (size - 2) + b"{}")
    report = download_model(str(source), destination, settings=FAST)
    assert report.copied == ["config.json"]
    assert_same_tree(destination, source, tmp_path)
    # An interrupted copy (files uploaded, manifest never written) is finished by re-running.
    location = parse_location(destination)
    from llmft.storage.transfer import delete_object

    delete_object(location.child(MANIFEST_NAME))
    delete_object(location.child("tokenizer.json"))
    report = download_model(str(source), destination, settings=FAST)
    assert report.copied == ["tokenizer.json"]
    assert_same_tree(destination, source, tmp_path)


def test_include_and_exclude_globs(bucket, tiny_model_dir):
    destination = f"{bucket}/models/globbed"
    report = download_model(
        str(tiny_model_dir), destination, include=["*.json"], exclude=["generation_*"], settings=FAST
    )
    assert sorted(report.copied) == ["config.json", "llmft-tiny-model.json", "tokenizer.json", "tokenizer_config.json"]
    with pytest.raises(UserError, match="no file of .* matches the include/exclude globs"):
        download_model(str(tiny_model_dir), destination, include=["*.gguf"], settings=FAST)


def test_overwrite_removes_files_of_an_earlier_copy_no_longer_selected(bucket, tiny_model_dir):
    destination = f"{bucket}/models/narrowed"
    download_model(str(tiny_model_dir), destination, settings=FAST)
    report = download_model(str(tiny_model_dir), destination, exclude=["*.jinja"], overwrite=True, settings=FAST)
    assert report.removed == ["chat_template.jinja"]
    assert "chat_template.jinja" not in list_objects(parse_location(destination))
    assert "chat_template.jinja" not in read_manifest(parse_location(destination)).files


# ---------------------------------------------------------------- bucket source


def test_bucket_to_bucket_and_bucket_source_errors(bucket, tiny_model_dir, tmp_path):
    download_model(str(tiny_model_dir), f"{bucket}/models/a", settings=FAST)
    report = download_model(f"s3://{bucket}/models/a", f"{bucket}/models/b", settings=FAST)
    assert len(report.copied) == len(local_files(tiny_model_dir))
    assert_same_tree(f"{bucket}/models/b", tiny_model_dir, tmp_path)

    # A source without a manifest is an unfinished upload: refused.
    write_object(parse_location(f"{bucket}/half/config.json"), b"{}")
    with pytest.raises(UserError, match="incomplete: it has files but no manifest"):
        download_model(f"{bucket}/half", f"{bucket}/models/c", settings=FAST)
    # `org/name` is a bucket path by the location rule; the error points at hf:// for a Hub id.
    with pytest.raises(UserError, match=r"bucket 'TinyLlama' does not exist.*write hf://TinyLlama/TinyLlama-1.1B"):
        download_model("TinyLlama/TinyLlama-1.1B-Chat-v1.0", f"{bucket}/models/d", settings=FAST)


def test_destination_must_be_a_bucket_folder(bucket, tiny_model_dir, tmp_path):
    with pytest.raises(UserError, match="is a local path"):
        download_model(str(tiny_model_dir), str(tmp_path / "out"), settings=FAST)
    with pytest.raises(UserError, match="is a whole bucket"):
        download_model(str(tiny_model_dir), bucket, settings=FAST)
    with pytest.raises(UserError, match="bucket 'no-such-bucket-here' does not exist"):
        download_model(str(tiny_model_dir), "no-such-bucket-here/models/x", settings=FAST)


def test_unreachable_bucket_is_one_line_error(tiny_model_dir, tmp_path):
    env = {
        **os.environ,
        "BUCKET_STORAGE_HOST": "http://127.0.0.1:9",
        "BUCKET_STORAGE_ACCESS_KEY": "a",
        "BUCKET_STORAGE_SECRET_KEY": "b",
        "LLMFT_TRANSFER_ATTEMPTS": "1",
    }
    result = subprocess.run(
        [LLMFT, "download-model", str(tiny_model_dir), "somebucket/models/x"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1  # may pass on its own: the Job retries (exit status 2 is final)
    assert result.stderr.strip().splitlines()[-1].startswith("error: cannot reach bucket storage at http://127.0.0.1:9")
    assert "Traceback" not in result.stderr


# ---------------------------------------------------------------- the Hub (through the stand-in)


def test_hub_model_streams_into_the_bucket_and_rerun_skips_lfs_files(bucket, hub, tiny_model_dir, tmp_path):
    destination = f"{bucket}/models/from-hub"
    report = download_model("hf://org/tiny", destination, exclude=["original/*"], settings=FAST)
    assert "original/consolidated.00.pth" not in report.copied
    assert_same_tree(destination, tiny_model_dir, tmp_path)
    # The weights came the way the Hub serves LFS files: a redirect to the CDN origin.
    assert any(path.startswith("/lfs-cdn/") for path in hub.downloads())

    hub.requests.clear()
    again = download_model("hf://org/tiny", destination, exclude=["original/*"], settings=FAST)
    assert again.copied == [] and "model.safetensors" in again.skipped
    # Known by its sha256 from the Hub's file listing, the complete weights file was not fetched again.
    assert not any(path.startswith("/lfs-cdn/") for path in hub.downloads())


def test_hub_revision_and_include(bucket, hub):
    commit = hub.repos["org/tiny"].commit
    report = download_model(
        "hf://org/tiny", f"{bucket}/models/pinned", revision=commit, include=["original/"], settings=FAST
    )
    assert report.copied == ["original/consolidated.00.pth"]
    assert f"(commit {commit[:12]})" in report.source


@pytest.mark.parametrize(
    "source, kwargs, token, message",
    [
        (
            "hf://org/missing",
            {},
            None,
            r"model org/missing not found on the Hub at http://127\.0\.0\.1:\d+: check modelID",
        ),
        ("hf://org/tiny", {"revision": "v9"}, None, r"revision 'v9' not found in model org/tiny: check modelRevision"),
        ("hf://org/gated", {}, None, r"model org/gated is gated: accept its conditions at .* HF_TOKEN"),
        ("hf://org/gated", {}, "hf_wrong", r"gated and the token in HF_TOKEN has no access"),
        ("hf://not a model", {}, None, r"is not a Hub model id"),
    ],
)
def test_hub_errors_are_one_line(bucket, hub, monkeypatch, source, kwargs, token, message):
    if token:
        monkeypatch.setenv("HF_TOKEN", token)
    with pytest.raises(UserError, match=message) as caught:
        download_model(source, f"{bucket}/models/x", settings=FAST, **kwargs)
    assert "\n" not in str(caught.value)
    assert list_objects(parse_location(f"{bucket}/models/x")) == {}


def test_gated_hub_model_with_a_granted_token(bucket, hub, monkeypatch, tiny_model_dir, tmp_path):
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    download_model("hf://org/gated", f"{bucket}/models/gated", settings=FAST)
    assert_same_tree(f"{bucket}/models/gated", tiny_model_dir, tmp_path)


def test_unreachable_hub(bucket, monkeypatch):
    offline_off(monkeypatch, "http://127.0.0.1:9")
    with pytest.raises(UserError, match=r"cannot reach the Hugging Face Hub at http://127\.0\.0\.1:9"):
        download_model("hf://org/tiny", f"{bucket}/models/x", settings=FAST)


def test_streaming_keeps_only_files_in_flight_on_disk(bucket, tmp_path, monkeypatch):
    """12 weight shards, 2 workers: never more than 2 x 2 shards on scratch, and scratch is emptied."""
    model = tmp_path / "sharded"
    model.mkdir()
    for index in range(12):
        (model / f"model-{index:05d}.safetensors").write_bytes(os.urandom(300_000))
    (model / "config.json").write_text("{}")
    scratch = tmp_path / "scratch"
    # A bandwidth cap makes each fetch take a while, so files would pile up if nothing bounded them.
    with HubStandIn(bytes_per_second=8_000_000) as server:
        server.add_repo("org/sharded", model)
        offline_off(monkeypatch, server.endpoint)
        seen, done = [0], threading.Event()

        def watch():  # sample what is actually on the scratch disk
            while not done.is_set():
                # os.walk skips folders removed while it walks (files leave scratch all the time).
                shards = sum(
                    name.startswith("model-") and name.endswith(".safetensors")
                    for _, _, names in os.walk(scratch)
                    for name in names
                )
                seen[0] = max(seen[0], shards)
                time.sleep(0.002)

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            report = download_model(
                "hf://org/sharded", f"{bucket}/models/sharded", workers=2, scratch_dir=scratch, settings=FAST
            )
        finally:
            done.set()
            watcher.join()
    assert len(report.copied) == 13
    assert 1 <= report.peak_files_on_disk <= 4
    assert seen[0] <= 4
    assert list(scratch.iterdir()) == []
    assert_same_tree(f"{bucket}/models/sharded", model, tmp_path)


def test_cli_from_the_hub_prints_a_summary(bucket, hub, s3_env, tmp_path):
    env = subprocess_environment(hub.endpoint)
    env["HF_HOME"] = str(tmp_path / "hf-home")
    result = subprocess.run(
        [LLMFT, "download-model", "hf://org/tiny", f"{bucket}/models/cli", "--exclude", "original/*", "--workers", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "copied 7 file(s)" in result.stdout
    assert "manifest written" in result.stderr
