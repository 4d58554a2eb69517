"""The bucket operations of checkpoint sync: verified tree upload, pruning, retention.

Each is a plain function over `llmft.storage` so the background worker and
`CheckpointSync.finish` share them, and tests can call them directly.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from llmft.progress import human_bytes
from llmft.run_layout import MANIFEST_NAME, checkpoint_name
from llmft.storage import Location, Manifest, read_manifest, upload_tree
from llmft.storage.transfer import (
    TransferSettings,
    delete_object,
    delete_tree,
    list_objects,
    upload_file,
)
from llmft.sync.remote_run import scan

log = logging.getLogger("llmft.sync")


class VerificationError(RuntimeError):
    """The bucket does not hold what was uploaded."""


def verify_tree(destination: Location, expected: Manifest, settings: TransferSettings) -> dict[str, int]:
    """Read the remote manifest back and check every listed object exists with its size (one listing,
    returned); the bytes themselves were checked by the server as they arrived (`upload_file`)."""
    remote = read_manifest(destination, settings)
    if remote is None or remote.files != expected.files:
        raise VerificationError(f"{destination}: the manifest in the bucket does not match the upload")
    sizes = list_objects(destination, settings)
    wrong = [name for name, entry in expected.files.items() if sizes.get(name) != entry.size]
    if wrong:
        raise VerificationError(f"{destination}: missing or wrong-size objects: {', '.join(sorted(wrong)[:5])}")
    return sizes


def upload_verified_tree(folder: Path, destination: Location, settings: TransferSettings, label: str) -> Manifest:
    """`upload_tree` (manifest last), then verify, then delete stale objects the manifest does not list.

    Stale objects come from an earlier, interrupted upload to the same prefix (a
    killed pod): they were never part of a complete tree, and are removed so the
    prefix holds exactly the new checkpoint.
    """
    started = time.monotonic()
    report = upload_tree(folder, destination, settings, label=label)
    assert report.manifest is not None
    listed = verify_tree(destination, report.manifest, settings)
    stale = [name for name in listed if name != MANIFEST_NAME and name not in report.manifest.files]
    for name in stale:
        delete_object(destination.child(name), settings)
    log.info(
        "%s complete in the bucket: %d files, %s in %.1fs%s",
        destination,
        len(report.manifest.files),
        human_bytes(report.manifest.total_bytes),
        time.monotonic() - started,
        f" ({len(stale)} stale objects of an interrupted upload removed)" if stale else "",
    )
    return report.manifest


def upload_verified_file(path: Path, destination: Location, settings: TransferSettings) -> None:
    """One file, checked by the server on arrival and by a HEAD after it (`upload_file` does both)."""
    upload_file(path, destination, settings=settings)


def apply_retention(remote: Location, newest: int, limit: int | None, settings: TransferSettings) -> list[str]:
    """After `checkpoint-<newest>` is complete: delete incomplete checkpoints older than it, and
    complete ones beyond the `limit` newest (counting only steps up to `newest`).

    Never touches anything newer than `newest`: those belong to an earlier attempt
    that got further, and this run overwrites them when it gets there.
    """
    run = scan(remote, settings)
    doomed = [step for step in run.incomplete if step < newest]
    if limit is not None and limit > 0:
        kept = sorted((step for step in run.complete if step <= newest), reverse=True)[:limit]
        doomed += [step for step in run.complete if step < newest and step not in kept]
    removed = []
    for step in sorted(doomed):
        name = checkpoint_name(step)
        delete_tree(remote.child(name), settings)
        removed.append(name)
        why = "incomplete (an interrupted upload)" if step in run.incomplete else f"save_total_limit={limit}"
        log.info("removed %s from %s: %s", name, remote, why)
    return removed


def remove_incomplete_checkpoints(remote: Location, settings: TransferSettings) -> list[str]:
    """Delete every checkpoint-<step> without a manifest (at the end of a run)."""
    run = scan(remote, settings)
    removed = []
    for step in sorted(run.incomplete):
        delete_tree(remote.child(checkpoint_name(step)), settings)
        removed.append(checkpoint_name(step))
        log.info("removed incomplete checkpoint-%d from %s (an interrupted upload)", step, remote)
    return removed
