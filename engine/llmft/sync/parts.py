"""A checkpoint written by several nodes: each node uploads its part, node 0 completes the checkpoint.

Without a shared filesystem every node's folder `checkpoint-<step>/` holds only what its own ranks wrote
(node 0: the model, trainer state, its RNG state and optimizer shards; node k: its ranks' RNG states and
optimizer shards). Each node's local main process uploads its files into the same bucket folder, then
writes its part manifest `.llmft-parts/node-<k>.json` (every file with size and sha256, and the run's
attempt token). Node 0 waits until every node's part of this attempt is there, checks every listed object's
size, and only then writes the checkpoint's `.llmft-manifest.json`: the union of the parts. So a checkpoint
counts as complete (restore, retention, `llmft storage ls`) only when every rank's files are in the bucket,
and a restore brings every node the whole checkpoint (each rank finds what it needs).
"""

from __future__ import annotations

import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmft.run_layout import MANIFEST_NAME
from llmft.storage import Location, Manifest
from llmft.storage.manifest import FileEntry
from llmft.storage.transfer import (
    SHA256_METADATA_KEY,
    TransferSettings,
    delete_object,
    head_object,
    list_objects,
    read_object,
    sha256_file,
    upload_file,
    write_object,
)

log = logging.getLogger("llmft.sync")

PARTS_DIR = ".llmft-parts"


class PartsMissing(RuntimeError):
    """Not every node's part of a checkpoint reached the bucket in time."""


def part_name(node: int) -> str:
    return f"{PARTS_DIR}/node-{node}.json"


def upload_part(folder: Path, destination: Location, node: int, token: str, settings: TransferSettings) -> Manifest:
    """Upload this node's files of one checkpoint (no tree manifest), then its part manifest last."""
    folder = Path(folder)
    relatives = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    # The tree is being rewritten: it is incomplete until node 0 writes the manifest again.
    delete_object(destination.child(MANIFEST_NAME), settings)
    delete_object(destination.child(part_name(node)), settings)

    def one(relative: str) -> tuple[str, FileEntry]:
        path = folder / relative
        digest = sha256_file(path)
        head = head_object(destination.child(relative), settings)
        size = path.stat().st_size
        if (
            head
            and int(head.get("ContentLength", -1)) == size
            and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == digest
        ):
            return relative, FileEntry(size, digest)
        return relative, upload_file(path, destination.child(relative), None, settings, sha256=digest)

    manifest = Manifest()
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for relative, entry in pool.map(one, relatives):
            manifest.files[relative] = entry
    body = json.loads(manifest.to_json())
    body["node"], body["token"] = node, token
    write_object(destination.child(part_name(node)), json.dumps(body, indent=1).encode(), settings)
    log.info("%s: node %d's part uploaded (%d files)", destination, node, len(manifest.files))
    return manifest


def read_part(destination: Location, node: int, token: str, settings: TransferSettings) -> Manifest | None:
    """Node `node`'s part of this attempt (`token`), or None while it is missing or from another attempt."""
    data = read_object(destination.child(part_name(node)), missing_ok=True, settings=settings)
    if data is None:
        return None
    body = json.loads(data)
    if body.get("token") != token:
        return None
    return Manifest.from_json(data)


def complete_checkpoint(
    destination: Location,
    nodes: int,
    token: str,
    settings: TransferSettings,
    timeout: float,
    abandon=lambda missing: False,
) -> Manifest:
    """Node 0: wait for every node's part, verify every object's size, write the manifest (the union) last.

    Raises `PartsMissing` naming the nodes whose parts did not arrive within `timeout` seconds, or as soon as
    `abandon(missing)` says they never will (they moved on to a newer checkpoint: this one is superseded).
    """
    deadline = time.monotonic() + timeout
    parts: dict[int, Manifest] = {}
    while True:
        for node in range(nodes):
            if node not in parts:
                part = read_part(destination, node, token, settings)
                if part is not None:
                    parts[node] = part
        missing = [node for node in range(nodes) if node not in parts]
        if not missing:
            break
        if time.monotonic() > deadline or abandon(missing):
            raise PartsMissing(
                f"{destination}: no part from node(s) {', '.join(map(str, missing))} "
                f"after {timeout:.0f}s; the checkpoint stays incomplete"
            )
        time.sleep(0.5)
    union = Manifest()
    for _node, part in sorted(parts.items()):
        for name, entry in part.files.items():
            if name in union.files and union.files[name] != entry:
                raise PartsMissing(f"{destination}: nodes wrote different contents for {name}")
            union.files[name] = entry
    sizes = list_objects(destination, settings)
    wrong = [name for name, entry in union.files.items() if sizes.get(name) != entry.size]
    if wrong:
        raise PartsMissing(f"{destination}: missing or wrong-size objects: {', '.join(sorted(wrong)[:5])}")
    write_object(destination.child(MANIFEST_NAME), union.to_json().encode(), settings)
    log.info(
        "%s complete in the bucket: %d files from %d nodes, manifest written last", destination, len(union.files), nodes
    )
    return union
