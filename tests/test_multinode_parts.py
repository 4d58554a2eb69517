"""A checkpoint written by several nodes (`llmft.sync.parts`), against the real S3 server: complete only when every
node's part of this attempt is in the bucket; then one manifest lists every rank's files."""

from __future__ import annotations

from pathlib import Path

import pytest

from llmft.storage import download_tree, parse_location
from llmft.storage.transfer import TransferSettings, list_objects
from llmft.sync import scan
from llmft.sync.parts import PartsMissing, complete_checkpoint, upload_part

SETTINGS = TransferSettings(attempts=2, backoff_seconds=0.1)


def node_folder(root: Path, node: int) -> Path:
    """What one node's ranks write into checkpoint-2/ (node 0 also the model and trainer state)."""
    folder = root / f"node-{node}" / "checkpoint-2"
    (folder / "global_step2").mkdir(parents=True)
    (folder / f"rng_state_{node}.pth").write_bytes(bytes([node]) * 100)
    (folder / "global_step2" / f"zero_pp_rank_{node}_mp_rank_00_optim_states.pt").write_bytes(b"s" * (50 + node))
    if node == 0:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def test_the_manifest_is_written_once_every_nodes_part_is_there(bucket, tmp_path):
    run = parse_location(f"{bucket}/run")
    target = run.child("checkpoint-2")
    upload_part(node_folder(tmp_path, 0), target, 0, "attempt-a", SETTINGS)
    with pytest.raises(PartsMissing, match=r"no part from node\(s\) 1 after 1s; the checkpoint stays incomplete"):
        complete_checkpoint(target, 2, "attempt-a", SETTINGS, timeout=1)
    assert scan(run).incomplete == {2: 4}  # node 0's 3 files and its part, no manifest: resume ignores it

    upload_part(node_folder(tmp_path, 1), target, 1, "attempt-a", SETTINGS)
    manifest = complete_checkpoint(target, 2, "attempt-a", SETTINGS, timeout=5)
    assert set(manifest.files) == {
        "trainer_state.json",
        "rng_state_0.pth",
        "rng_state_1.pth",
        "global_step2/zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "global_step2/zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }
    assert 2 in scan(run).complete
    # A restore brings every rank's files to any node.
    download_tree(target, tmp_path / "restored", SETTINGS)
    assert (tmp_path / "restored" / "rng_state_1.pth").read_bytes() == bytes([1]) * 100


def test_a_part_of_another_attempt_does_not_count_and_a_new_upload_reopens_the_checkpoint(bucket, tmp_path):
    target = parse_location(f"{bucket}/run/checkpoint-2")
    upload_part(node_folder(tmp_path, 0), target, 0, "attempt-b", SETTINGS)
    upload_part(node_folder(tmp_path, 1), target, 1, "attempt-a", SETTINGS)  # left by an earlier attempt
    with pytest.raises(PartsMissing, match=r"node\(s\) 1"):
        complete_checkpoint(target, 2, "attempt-b", SETTINGS, timeout=1)
    upload_part(tmp_path / "node-1" / "checkpoint-2", target, 1, "attempt-b", SETTINGS)
    complete_checkpoint(target, 2, "attempt-b", SETTINGS, timeout=5)
    assert ".llmft-manifest.json" in list_objects(target)
    # A node uploading this step again (a later attempt got here) makes it incomplete until node 0 completes it.
    upload_part(tmp_path / "node-1" / "checkpoint-2", target, 1, "attempt-c", SETTINGS)
    assert ".llmft-manifest.json" not in list_objects(target)


def test_waiting_stops_when_the_missing_node_moved_on(bucket, tmp_path):
    target = parse_location(f"{bucket}/run/checkpoint-2")
    upload_part(node_folder(tmp_path, 0), target, 0, "attempt-a", SETTINGS)
    asked = []

    def moved_on(missing):
        asked.append(missing)
        return True

    with pytest.raises(PartsMissing, match=r"node\(s\) 1"):
        complete_checkpoint(target, 2, "attempt-a", SETTINGS, timeout=600, abandon=moved_on)
    assert asked == [[1]]
