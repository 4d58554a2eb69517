"""Directory manifests: the marker that a tree in the bucket is complete.

An upload of a tree writes `MANIFEST_NAME` last, listing every file with its size
and sha256. Readers treat a tree without a manifest as incomplete (an upload that
was interrupted, or is still running) and never use it.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from llmft.run_layout import MANIFEST_NAME
from llmft.storage.errors import ManifestCorrupt
from llmft.storage.location import Location

if TYPE_CHECKING:
    from llmft.storage.transfer import TransferSettings

MANIFEST_VERSION = 1


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass
class Manifest:
    files: dict[str, FileEntry] = field(default_factory=dict)
    created: float = field(default_factory=time.time)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.files.values())

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": MANIFEST_VERSION,
                "created": self.created,
                "files": {
                    path: {"size": entry.size, "sha256": entry.sha256} for path, entry in sorted(self.files.items())
                },
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        data = json.loads(text)
        return cls(
            files={path: FileEntry(int(e["size"]), str(e["sha256"])) for path, e in data["files"].items()},
            created=float(data.get("created", 0.0)),
        )


def read_manifest(location: Location, settings: TransferSettings | None = None) -> Manifest | None:
    """The manifest of the tree at `location`, or None when the tree is incomplete or absent."""
    if location.is_local:
        path = location.path / MANIFEST_NAME
        return Manifest.from_json(path.read_text()) if path.is_file() else None
    from llmft.storage.transfer import read_object

    data = read_object(location.child(MANIFEST_NAME), missing_ok=True, settings=settings)
    if data is None:
        return None
    try:
        return Manifest.from_json(data)
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ManifestCorrupt(
            f"{location.child(MANIFEST_NAME)} is not a readable manifest ({error}): upload the tree again"
        ) from None


def is_complete(location: Location) -> bool:
    return read_manifest(location) is not None
