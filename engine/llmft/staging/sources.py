"""Where `llmft download-model` / `download-data` read from: a local folder or a bucket tree (the Hub is in
`hub.py`; `parse_hub_url` reads its `hf://` locations).

A source lists its files (relative path, size, and the sha256 when it is known
without reading the file) and fetches one file at a time to local disk, so the
copy pipeline can overlap fetching and uploading and keep only the files in
flight on disk.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.storage import (
    MANIFEST_NAME,
    Location,
    Manifest,
    download_file,
    parse_location,
    read_manifest,
)
from llmft.storage.location import safe_join
from llmft.storage.transfer import TransferSettings, list_objects, sha256_file

HUB_SCHEME = "hf://"
# `hf://datasets/org/name[/path]` is a Hub dataset (huggingface_hub's HfFileSystem spelling); `datasets`
# is a reserved name on the Hub, so no model id starts with it.
HUB_DATASETS = "datasets/"
# Hub ids: `name` or `org/name`, letters, digits, '-', '_', '.'.
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
# Dataset ids are always `org/name`.
_HUB_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class HubRef:
    """A Hub location: a model repository, or a dataset repository with an optional file or folder in it."""

    repo_type: str  # "model" or "dataset"
    repo_id: str
    path: str = ""  # a file or folder of the repository; empty: all of it

    @property
    def url(self) -> str:
        if self.repo_type == "model":
            return f"{HUB_SCHEME}{self.repo_id}"
        return f"{HUB_SCHEME}{HUB_DATASETS}{self.repo_id}" + (f"/{self.path}" if self.path else "")


def parse_hub_url(text: str) -> HubRef:
    """`hf://org/name` (a model) or `hf://datasets/org/name[/path]` (a dataset, or a file or folder of it)."""
    rest = text[len(HUB_SCHEME) :] if text.startswith(HUB_SCHEME) else text
    rest = rest.strip().strip("/")
    if not rest.startswith(HUB_DATASETS):
        return HubRef("model", rest)
    parts = rest[len(HUB_DATASETS) :].split("/")
    repo_id, path = "/".join(parts[:2]), "/".join(parts[2:])
    if len(parts) < 2 or not _HUB_DATASET_ID.match(repo_id):
        raise UserError(
            f"{text} does not name a Hub dataset: write hf://datasets/Organization/DatasetName, optionally "
            "followed by /folder or /file in it (chart value hubDataset.id: Organization/DatasetName)"
        )
    problem = hub_path_problem(path)
    if problem:
        raise UserError(f"{text}: {problem}")
    return HubRef("dataset", repo_id, path)


def hub_path_problem(path: str) -> str | None:
    """Why `path` cannot name a file or folder inside a Hub repository (None when it can)."""
    if not path:
        return None
    if path.startswith("/") or "\\" in path:
        return f"the path {path!r} must be relative to the repository root, with / between folders"
    if any(part in ("", ".", "..") for part in path.rstrip("/").split("/")):
        return f"the path {path!r} may not contain '..', '.' or empty parts: name a file or folder of the repository"
    return None


@dataclass(frozen=True)
class SourceFile:
    """One file of a source. `sha256` is set when the source knows it without reading the file."""

    path: str
    size: int | None
    sha256: str | None = None
    blob_id: str | None = None  # the git blob sha1 (Hub files stored in git, not LFS)


class Source:
    """A model source: list files, fetch one to local disk, release it."""

    label: str = ""
    is_local: bool = False  # files are read in place, nothing is fetched

    def list_files(self) -> list[SourceFile]:
        raise NotImplementedError

    def known_sha256(self, item: SourceFile) -> str | None:
        """The sha256 of `item` if it can be had without fetching it (cheaply)."""
        return item.sha256

    def fetch(self, item: SourceFile, scratch: Path, progress=None) -> Path:
        """Put `item` on local disk (under `scratch` unless it already is) and return its path."""
        raise NotImplementedError

    def release(self, item: SourceFile, path: Path) -> None:
        """Delete the local copy made by `fetch` (sources that are already local keep theirs)."""
        path.unlink(missing_ok=True)


def select(files: list[SourceFile], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[SourceFile]:
    """Keep files matching any `include` glob (all when none) and no `exclude` glob.

    Same rules as `huggingface-cli download --include/--exclude`: fnmatch on the
    path relative to the model root, `*` also matches `/`, and a pattern ending in
    `/` means everything in that folder.
    """

    def normal(patterns):
        return [p + "*" if p.endswith("/") else p for p in patterns if p]

    include, exclude = normal(include), normal(exclude)
    chosen = []
    for item in files:
        if include and not any(fnmatch.fnmatchcase(item.path, p) for p in include):
            continue
        if any(fnmatch.fnmatchcase(item.path, p) for p in exclude):
            continue
        chosen.append(item)
    return chosen


def looks_like_hub_id(text: str) -> bool:
    return bool(_HUB_ID.match(text)) and "/" in text


class LocalSource(Source):
    """A model folder on this machine (or in the container). Files are uploaded in place."""

    is_local = True

    def __init__(self, root: Path):
        self.root = Path(root).expanduser()
        self.label = str(root)
        if not self.root.is_dir():
            raise UserError(
                f"source folder {root} does not exist (a local source is a folder path starting with / or ./)"
            )

    def list_files(self) -> list[SourceFile]:
        files = []
        for path in sorted(self.root.rglob("*")):
            relative = path.relative_to(self.root).as_posix()
            # Skip our own manifest, partial downloads, and huggingface_hub's local_dir bookkeeping.
            if (
                not path.is_file()
                or path.name == MANIFEST_NAME
                or path.name.endswith((".part", ".incomplete"))
                or relative.startswith(".cache/huggingface/")
            ):
                continue
            files.append(SourceFile(relative, path.stat().st_size))
        return files

    def known_sha256(self, item: SourceFile) -> str | None:
        return sha256_file(self.root / item.path)

    def fetch(self, item: SourceFile, scratch: Path, progress=None) -> Path:
        return self.root / item.path

    def release(self, item: SourceFile, path: Path) -> None:
        return None


class BucketSource(Source):
    """A complete tree in the bucket (one with a manifest); every file is verified on download."""

    def __init__(self, location: Location, text: str, settings: TransferSettings):
        self.location = location
        self.text = text
        self.settings = settings
        self.label = str(location)
        self.manifest: Manifest | None = None  # set by list_files

    def _hint(self) -> str:
        if not self.text.startswith("s3://") and looks_like_hub_id(self.text):
            return (
                f"; `{self.text}` is read as a bucket path (bucket/path): to download the Hub model "
                f"write hf://{self.text}"
            )
        return ""

    def list_files(self) -> list[SourceFile]:
        try:
            manifest = read_manifest(self.location, self.settings)
            if manifest is None:
                if list_objects(self.location, self.settings):
                    raise UserError(
                        f"source {self.location} is incomplete: it has files but no manifest "
                        f"({MANIFEST_NAME}), so its upload did not finish; upload it again"
                    )
                raise UserError(f"source {self.location} does not exist or is empty")
        except UserError as error:  # keep the type (e.g. BucketNotFound), add the hint
            raise type(error)(f"{error}{self._hint()}") from None
        for relative in manifest.files:
            safe_join(Path("/model"), relative)  # refuse keys that would escape the scratch folder
        self.manifest = manifest
        return [SourceFile(relative, entry.size, entry.sha256) for relative, entry in manifest.files.items()]

    def fetch(self, item: SourceFile, scratch: Path, progress=None) -> Path:
        assert self.manifest is not None, "list_files() lists the files to fetch"
        target = safe_join(scratch, item.path)
        download_file(self.location.child(item.path), target, self.manifest.files[item.path], progress, self.settings)
        return target


def open_source(text: str, *, revision: str | None = None, settings: TransferSettings | None = None) -> Source:
    """The source named by `text`: `hf://org/name`, `hf://datasets/org/name[/path]`, a bucket location or a
    local folder."""
    settings = settings or TransferSettings()
    text = text.strip()
    if text.startswith(HUB_SCHEME):
        from llmft.staging.hub import HubSource

        ref = parse_hub_url(text)
        return HubSource(ref.repo_id, revision=revision, repo_type=ref.repo_type, path=ref.path)
    if revision:
        raise UserError(f"--revision {revision} only applies to Hub sources (hf://org/name), not {text}")
    location = parse_location(text)
    if location.is_local:
        return LocalSource(location.path)
    return BucketSource(location, text, settings)


def scratch_folder(base: str | os.PathLike | None) -> Path:
    """A private folder for files in flight: under `base` (the pod's scratch volume) or the temp dir."""
    import tempfile

    if base is not None:
        Path(base).mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix="llmft-download-", dir=base))
