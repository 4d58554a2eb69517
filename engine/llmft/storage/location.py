"""One rule for every location a user writes (configs and CLI arguments alike).

- starts with `/`, `./`, `../` or `~` (or is `.` / `..`): a local path;
- `s3://bucket/key`: in the bucket;
- anything else, `bucket/key` (the tutorial's form): in the bucket.
"""

from __future__ import annotations

import os
import posixpath
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.storage.errors import UnsafeKey

_LOCAL_PREFIXES = ("/", "./", "../", "~")


@dataclass(frozen=True)
class Location:
    """A local path (`bucket is None`) or an object key / prefix in a bucket."""

    bucket: str | None
    key: str

    @property
    def is_local(self) -> bool:
        return self.bucket is None

    @property
    def path(self) -> Path:
        if not self.is_local:
            raise ValueError(f"{self} is not a local path")
        return Path(self.key)

    @property
    def prefix(self) -> str:
        """The key as a folder prefix: empty for the bucket root, else ending in '/'."""
        return self.key.rstrip("/") + "/" if self.key.strip("/") else ""

    def child(self, relative: str) -> Location:
        if self.is_local:
            return Location(None, str(Path(self.key) / relative))
        return Location(self.bucket, self.prefix + relative)

    @property
    def name(self) -> str:
        return posixpath.basename(self.key.rstrip("/"))

    def __str__(self) -> str:
        return self.key if self.is_local else f"s3://{self.bucket}/{self.key}"


def parse_location(text: str | os.PathLike) -> Location:
    """Parse a location string or path (see the module docstring for the rule)."""
    if isinstance(text, os.PathLike):
        return Location(None, os.fspath(text))
    raw = str(text).strip()
    if not raw:
        raise UserError("empty location: give a local path (./dir) or a bucket path (bucket/path)")
    if raw.startswith("s3://"):
        rest = raw[len("s3://") :]
        bucket, _, key = rest.partition("/")
        if not bucket:
            raise UserError(f"location {raw!r} has no bucket name: write s3://BUCKET/path")
        return Location(bucket, key.lstrip("/"))
    if raw.startswith(_LOCAL_PREFIXES) or raw in (".", ".."):
        return Location(None, os.path.expanduser(raw))
    if "://" in raw:
        scheme = raw.split("://", 1)[0]
        raise UserError(
            f"location {raw!r}: scheme {scheme}:// is not supported here; "
            "use s3://bucket/path, bucket/path, or a local path starting with / or ./"
        )
    bucket, _, key = raw.partition("/")
    return Location(bucket, key.lstrip("/"))


def safe_join(root: Path, relative: str) -> Path:
    """Join a key-derived relative path under `root`, refusing escapes.

    Object keys are attacker-controlled data: a key like `model/../../etc/x` or an
    absolute path must never write outside the download folder.
    """
    parts = relative.replace("\\", "/").split("/")
    target = (root / relative).resolve()
    if (
        relative.startswith("/")
        or ".." in parts
        or not relative.strip("/")
        or not target.is_relative_to(root.resolve())
    ):
        raise UnsafeKey(f"refusing to download key {relative!r}: it would escape the target folder {root}")
    return target
