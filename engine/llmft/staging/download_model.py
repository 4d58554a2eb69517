"""`llmft download-model`: stream a model into the bucket, file by file, manifest last.

The copy is a bounded pipeline: fetch threads put files on local disk and hand
each one to `workers` upload threads, which verify it (size, sha256 or git blob
id when the source knows them), upload it, and delete the local copy. A
semaphore caps the files on disk at `2 * workers`, so a 140 GiB model needs
scratch space for a few shards, not for the whole model; downloads and uploads
overlap all along. Large files are fetched one at a time (`large_fetches`), small
ones `workers` at a time (see `LARGE_FILE`).

Re-running skips files already complete in the bucket (same size and sha256 as the
destination's manifest or the object's `sha256` metadata); `overwrite` re-copies
everything and removes files an earlier copy left that are no longer selected.
The destination's old manifest is removed before the first change and the new
one is written after the last file, so readers never trust a half-done copy.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

from llmft.errors import TransientError, UserError
from llmft.progress import Progress, human_bytes
from llmft.staging.sources import Source, SourceFile, open_source, scratch_folder, select
from llmft.storage import MANIFEST_NAME, FileEntry, Location, Manifest, parse_location, read_manifest, upload_file
from llmft.storage.transfer import (
    SHA256_METADATA_KEY,
    TransferSettings,
    delete_object,
    head_object,
    list_objects,
    write_object,
)

log = logging.getLogger("llmft.download")

DEFAULT_WORKERS = 4
# Files at least this large are fetched `large_fetches` at a time (default one): on a shared link, parallel
# fetches of big files all finish together at the end, leaving the uploads nothing to overlap with. One at a
# time, each arrives at full speed and uploads while the next one downloads. Small files go in parallel.
LARGE_FILE = 64 * 1024 * 1024


@dataclass
class DownloadReport:
    source: str
    destination: str
    copied: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    bytes_copied: int = 0
    manifest: Manifest | None = None
    peak_files_on_disk: int = 0


class _Tee:
    """Feed one byte count to several `Progress` counters (per file and overall)."""

    def __init__(self, *targets):
        self.targets = [t for t in targets if t is not None]

    def update(self, amount: float) -> None:
        for target in self.targets:
            target.update(amount)


def _digests(path: Path, with_git: bool) -> tuple[int, str, str | None]:
    """Size, sha256 and (optionally) git blob sha1 of a file, in one read."""
    size = path.stat().st_size
    sha256 = hashlib.sha256()
    git = hashlib.sha1(b"blob %d\0" % size) if with_git else None
    with open(path, "rb") as handle:
        while block := handle.read(8 * 1024 * 1024):
            sha256.update(block)
            if git is not None:
                git.update(block)
    return size, sha256.hexdigest(), git.hexdigest() if git is not None else None


def verify_fetched(item: SourceFile, label: str, size: int, digest: str, git: str | None) -> None:
    """A fetched file must have the size and checksums its source listed (else the transfer was damaged)."""
    what = f"{item.path} from {label}"
    if item.size is not None and size != item.size:
        raise TransientError(f"{what} arrived with {size} bytes, the source lists {item.size}: run again")
    if item.sha256 and digest != item.sha256:
        raise TransientError(
            f"{what} is corrupted: sha256 {digest[:12]}... instead of {item.sha256[:12]}...; run again"
        )
    if git and item.blob_id and git != item.blob_id:
        raise TransientError(
            f"{what} is corrupted: git blob id {git[:12]}... instead of {item.blob_id[:12]}...; run again"
        )


def fetch_verified(source: Source, item: SourceFile, target: Path, scratch: Path, progress=None) -> Path:
    """Fetch one file of `source` to `target` (a local path), verified like a copy to the bucket."""
    path = source.fetch(item, scratch, progress)
    try:
        size, digest, git = _digests(path, with_git=item.blob_id is not None and item.sha256 is None)
        verify_fetched(item, source.label, size, digest, git)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    finally:
        source.release(item, path)
    return target


class _Copier:
    """The state of one copy: the destination's current contents and the fetch/upload pipeline."""

    def __init__(
        self,
        source: Source,
        destination: Location,
        scratch: Path,
        workers: int,
        settings: TransferSettings,
        overwrite: bool,
        large_fetches: int = 1,
    ):
        self.source = source
        self.destination = destination
        self.scratch = scratch
        self.workers = max(1, workers)
        self.large_fetches = max(1, large_fetches)
        self.settings = settings
        # Files are fetched one large one at a time, so few are uploading at once: each gets every worker.
        self.upload_settings = dataclasses.replace(settings, part_concurrency=self.workers)
        self.overwrite = overwrite
        self.previous: Manifest | None = None
        self.remote_sizes: dict[str, int] = {}
        self.entries: dict[str, FileEntry] = {}
        self.report = DownloadReport(source.label, str(destination))
        self._lock = threading.Lock()
        self._on_disk = 0
        self._errors: list[BaseException] = []
        self._failed = threading.Event()

    # ------------------------------------------------------------ what is already there

    def read_destination(self) -> None:
        """The destination's manifest and objects (this is also where an unreachable bucket fails)."""
        self.previous = read_manifest(self.destination, self.settings)
        self.remote_sizes = list_objects(self.destination, self.settings)

    def already_there(self, relative: str, entry: FileEntry) -> bool:
        if self.overwrite or self.remote_sizes.get(relative) != entry.size:
            return False
        if self.previous is not None and self.previous.files.get(relative) == entry:
            return True
        head = head_object(self.destination.child(relative), self.settings)
        return head is not None and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == entry.sha256

    def plan(self, files: list[SourceFile]) -> list[SourceFile]:
        """The files that must be fetched; records the entries of those already complete."""
        todo = []
        for item in files:
            if not self.overwrite and item.size is not None and self.remote_sizes.get(item.path) == item.size:
                digest = self.source.known_sha256(item)
                if digest and self.already_there(item.path, FileEntry(item.size, digest)):
                    self.entries[item.path] = FileEntry(item.size, digest)
                    self.report.skipped.append(item.path)
                    continue
            todo.append(item)
        return todo

    # ------------------------------------------------------------ the pipeline

    def _fail(self, error: BaseException) -> None:
        with self._lock:
            self._errors.append(error)
        self._failed.set()

    def _fetch(
        self, item: SourceFile, slots: threading.Semaphore, uploads: ThreadPoolExecutor, fetched: Progress | None
    ) -> Future | None:
        try:
            if self._failed.is_set():
                slots.release()
                return None
            with self._lock:
                self._on_disk += 1
                self.report.peak_files_on_disk = max(self.report.peak_files_on_disk, self._on_disk)
            started = time.monotonic()
            per_file = Progress(f"fetch {item.path}", item.size) if fetched is not None else None
            path = self.source.fetch(item, self.scratch, _Tee(per_file, fetched) if per_file else None)
            if per_file is not None:
                per_file.close()
                log.debug("fetched %s in %.1fs", item.path, time.monotonic() - started)
        except BaseException as error:  # noqa: BLE001 - reported by run()
            with self._lock:
                self._on_disk -= 1
            slots.release()
            self._fail(error)
            return None
        return uploads.submit(self._upload, item, path, slots)

    def _upload(self, item: SourceFile, path: Path, slots: threading.Semaphore) -> None:
        try:
            if self._failed.is_set():
                return
            size, digest, git = _digests(path, with_git=item.blob_id is not None and item.sha256 is None)
            self._verify(item, size, digest, git)
            entry = FileEntry(size, digest)
            if self.already_there(item.path, entry):
                with self._lock:
                    self.entries[item.path] = entry
                    self.report.skipped.append(item.path)
                self.uploaded.update(size)
                return
            started = time.monotonic()
            per_file = Progress(f"upload {item.path}", size)
            upload_file(
                path,
                self.destination.child(item.path),
                _Tee(per_file, self.uploaded),
                self.upload_settings,
                sha256=digest,
            )
            per_file.close()
            elapsed = max(time.monotonic() - started, 1e-6)
            log.info("copied %s (%s, %s/s upload)", item.path, human_bytes(size), human_bytes(size / elapsed))
            with self._lock:
                self.entries[item.path] = entry
                self.report.copied.append(item.path)
                self.report.bytes_copied += size
        except BaseException as error:  # noqa: BLE001 - reported by run()
            self._fail(error)
        finally:
            self.source.release(item, path)
            with self._lock:
                self._on_disk -= 1
            slots.release()

    def _verify(self, item: SourceFile, size: int, digest: str, git: str | None) -> None:
        verify_fetched(item, self.source.label, size, digest, git)

    def run(self, todo: list[SourceFile]) -> None:
        total = sum(item.size or 0 for item in todo)
        fetched = None if self.source.is_local else Progress(f"fetched from {self.source.label}", total)
        self.uploaded = Progress(f"uploaded to {self.destination}", total)
        slots = threading.BoundedSemaphore(2 * self.workers)
        # The largest file first (the longest transfer starts at once), then the small files in parallel,
        # then the other large ones, largest first.
        by_size = sorted(todo, key=lambda item: -(item.size or 0))
        large = [item for item in by_size if (item.size or 0) >= LARGE_FILE]
        small = [item for item in by_size if (item.size or 0) < LARGE_FILE]
        ordered = large[:1] + small + large[1:]
        with (
            ThreadPoolExecutor(self.large_fetches, thread_name_prefix="fetch-large") as large_fetchers,
            ThreadPoolExecutor(self.workers, thread_name_prefix="fetch") as fetchers,
            ThreadPoolExecutor(self.workers, thread_name_prefix="upload") as uploads,
        ):
            fetches = []
            for item in ordered:
                slots.acquire()
                if self._failed.is_set():
                    slots.release()
                    break
                pool = large_fetchers if (item.size or 0) >= LARGE_FILE else fetchers
                fetches.append(pool.submit(self._fetch, item, slots, uploads, fetched))
            wait(fetches)
            wait([upload for f in fetches if (upload := f.result()) is not None])
        if fetched is not None:
            fetched.close()
        self.uploaded.close()
        if self._errors:
            raise self._errors[0]


def bucket_folder(destination: str, command: str = "download-model") -> Location:
    """`destination` as a folder in the bucket (not a local path, not a whole bucket)."""
    dest = parse_location(destination)
    folder = "models" if command == "download-model" else "datasets"
    if dest.is_local:
        raise UserError(
            f"destination {destination} is a local path: {command} writes to the bucket "
            "(bucket/path or s3://bucket/path); to copy between folders use `llmft storage cp`"
        )
    if not dest.key.strip("/"):
        raise UserError(
            f"destination {destination} is a whole bucket: give a folder in it, e.g. {dest.bucket}/{folder}/NAME"
        )
    return dest


def download_model(
    source: str,
    destination: str,
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    scratch_dir: str | Path | None = None,
    settings: TransferSettings | None = None,
    large_fetches: int = 1,
    command: str = "download-model",
) -> DownloadReport:
    """Copy the model at `source` into the bucket folder `destination` (see the module docstring).

    `llmft download-data` copies a Hub dataset's files with the same code (`command` names it in errors).
    """
    settings = settings or TransferSettings()
    dest = bucket_folder(destination, command)
    model = open_source(source, revision=revision, settings=settings)
    scratch = scratch_folder(scratch_dir)
    try:
        copier = _Copier(model, dest, scratch, workers, settings, overwrite, large_fetches)
        copier.read_destination()
        files = model.list_files()
        copier.report.source = model.label  # now with the Hub commit
        chosen = select(files, include, exclude)
        if not chosen:
            raise UserError(
                f"no file of {model.label} matches the include/exclude globs "
                f"(include {list(include) or 'all'}, exclude {list(exclude) or 'none'}); "
                f"the source has {', '.join(f.path for f in files[:8])}{'...' if len(files) > 8 else ''}"
            )
        log.info(
            "%s -> %s: %d files (%s)%s",
            model.label,
            dest,
            len(chosen),
            human_bytes(sum(f.size or 0 for f in chosen)),
            ", overwriting" if overwrite else "",
        )
        todo = copier.plan(chosen)
        selected = {item.path for item in chosen}
        stale = sorted(set(copier.previous.files) - selected) if copier.previous else []
        if not todo and copier.previous is not None and copier.previous.files == copier.entries and not stale:
            log.info("%s is already complete in %s: nothing to copy", model.label, dest)
            copier.report.manifest = copier.previous
            return copier.report
        if copier.previous is not None:
            delete_object(dest.child(MANIFEST_NAME), settings)  # incomplete from here until the new manifest
        if todo:
            log.info(
                "copying %d files (%s); %d already complete in the bucket",
                len(todo),
                human_bytes(sum(f.size or 0 for f in todo)),
                len(copier.report.skipped),
            )
            copier.run(todo)
        if overwrite:
            for relative in stale:
                delete_object(dest.child(relative), settings)
                copier.report.removed.append(relative)
        manifest = Manifest(files={path: copier.entries[path] for path in sorted(copier.entries)})
        write_object(dest.child(MANIFEST_NAME), manifest.to_json().encode(), settings)
        copier.report.manifest = manifest
        leftovers = sorted(set(copier.remote_sizes) - selected - {MANIFEST_NAME} - set(copier.report.removed))
        if leftovers:
            log.warning(
                "%d object(s) under %s are not part of this model and were left in place (e.g. %s); "
                "--overwrite removes those an earlier copy put there",
                len(leftovers),
                dest,
                ", ".join(leftovers[:3]),
            )
        log.info(
            "done: %d files copied (%s), %d already complete; manifest written to %s",
            len(copier.report.copied),
            human_bytes(copier.report.bytes_copied),
            len(copier.report.skipped),
            dest.child(MANIFEST_NAME),
        )
        return copier.report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
