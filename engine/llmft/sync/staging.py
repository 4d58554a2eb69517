"""Freeze a checkpoint folder for a background upload.

The Trainer deletes old checkpoint folders (`save_total_limit`) on a later save, maybe
while their upload is still queued or running. So on save, the folder is staged:
every file is hard-linked (no copy, no extra disk) into a private staging folder, and
falls back to a copy where hard links are not possible (another filesystem). A
deleted original then leaves the staged link intact.

A hard link shares the file's contents, so a file rewritten in place would change
under the upload; `snapshot` records size and mtime so the uploader can notice that
and upload again.
"""

from __future__ import annotations

import errno
import os
import shutil
from pathlib import Path

Snapshot = dict[str, tuple[int, int]]


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError as error:
        if error.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        shutil.copy2(source, target)


def stage(source: Path, staging_root: Path) -> Path:
    """Link (or copy) every file of `source` into `staging_root/<source.name>`; return that folder."""
    source = Path(source)
    target = Path(staging_root) / source.name
    if target.exists():
        shutil.rmtree(target)
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir():
            (target / relative).mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            (target / relative).parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(path, target / relative)
    target.mkdir(parents=True, exist_ok=True)
    return target


def copy_snapshot(source: Path, target: Path) -> Path:
    """A real copy of a small, still-growing file or folder (logs, metrics) for upload."""
    source, target = Path(source), Path(target)
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copy2(source, target)
    return target


def snapshot(folder: Path) -> Snapshot:
    """Size and mtime of every file: changes when a file is rewritten in place."""
    result: Snapshot = {}
    for path in sorted(Path(folder).rglob("*")):
        if path.is_file():
            info = path.stat()
            result[path.relative_to(folder).as_posix()] = (info.st_size, info.st_mtime_ns)
    return result


def discard(folder: Path) -> None:
    shutil.rmtree(folder, ignore_errors=True)
