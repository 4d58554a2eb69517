"""Verified, parallel, retried transfers between local paths and the bucket.

Upload of a tree: hash and upload every file in parallel (multipart above the
threshold), skip files whose remote copy already matches, then write the manifest
last.

Each byte is hashed once on this machine: the file's sha256 (for the manifest) is computed once
and sent as the object's `x-amz-checksum-sha256`, which the server checks against what it received
and echoes back; multipart parts carry a CRC32 the server checks per part (cheap next to sha256).
The client does not sign payloads (`client.py`), so botocore does not hash the bytes again for
SigV4. After an upload a HEAD (no bytes) confirms size, sha256 metadata and, where the endpoint
keeps checksums, the echoed sha256; nothing is read back. Download of a tree: trust only the
manifest, download every listed file in parallel to a `.part` file, verify size and sha256, then
rename into place.

Retries: `retrying` is the one retry layer. botocore's retries are off (`client.py`) and
so are s3transfer's download retries (`num_download_attempts=1`), so one operation (a
request, or one file's whole transfer) is attempted exactly `TransferSettings.attempts`
times. A failed part of a multipart transfer therefore restarts that file, not the tree.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import random
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TypeVar, overload

from llmft import settings as engine_settings
from llmft.errors import UserError
from llmft.progress import Progress, ProgressSink, human_bytes
from llmft.storage.client import is_transient, s3_client, storage_error
from llmft.storage.errors import CorruptObject, IncompleteTree, ObjectNotFound
from llmft.storage.location import Location, parse_location, safe_join
from llmft.storage.manifest import MANIFEST_NAME, FileEntry, Manifest, read_manifest

log = logging.getLogger("llmft.storage")

T = TypeVar("T")

MIB = 1024 * 1024
SHA256_METADATA_KEY = "sha256"


def _knob(name: str):
    """A field whose default is the engine setting `name` when the object is made (see `llmft.settings`)."""
    return field(default_factory=lambda: getattr(engine_settings.current(), name))


@dataclass(frozen=True)
class TransferSettings:
    """Transfer knobs: unset fields come from the `LLMFT_TRANSFER_*`/`LLMFT_MULTIPART_*` settings."""

    workers: int = _knob("transfer_workers")
    multipart_threshold: int = _knob("multipart_threshold")
    multipart_chunksize: int = _knob("multipart_chunksize")
    attempts: int = _knob("transfer_attempts")
    backoff_seconds: float = _knob("transfer_backoff")
    max_backoff_seconds: float = 30.0
    max_bandwidth: int | None = _knob("transfer_max_bandwidth")
    # Threads for one multipart file's parts. Default: half of `workers` (at least 2), since a tree moves
    # `workers` files at once. A pipeline with only one or two files in flight (model staging) sets it to
    # `workers`, so that one file alone can fill a link whose connections are each capped.
    part_concurrency: int | None = None

    def boto_config(self):
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.multipart_threshold,
            multipart_chunksize=self.multipart_chunksize,
            max_concurrency=self.part_concurrency or max(2, self.workers // 2),
            use_threads=True,
            max_bandwidth=self.max_bandwidth,
            num_download_attempts=1,  # `retrying` retries the whole file; see the module docstring
        )


@dataclass
class TransferReport:
    transferred: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    bytes_transferred: int = 0
    manifest: Manifest | None = None


def checksum_header(hex_digest: str) -> str:
    """The base64 form of a sha256 hex digest that S3's `x-amz-checksum-sha256` carries."""
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def sha256_file(path: Path, chunk: int = 8 * MIB) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def retrying(action: Callable[[], T], what: str, settings: TransferSettings, location: object) -> T:
    """Run `action` up to `settings.attempts` times, retrying transient errors with exponential backoff
    and jitter: the one retry layer of bucket access.

    What still fails after the last attempt, or is not worth retrying, becomes a typed one-line
    `StorageError` when the user can fix it (`client.storage_error`); anything else is re-raised.
    """
    delay = settings.backoff_seconds
    for attempt in range(1, settings.attempts + 1):
        try:
            return action()
        except UserError:
            raise
        except Exception as error:
            if is_transient(error) and attempt < settings.attempts:
                log.warning(
                    "%s failed (%s), retry %d/%d in %.1fs",
                    what,
                    type(error).__name__,
                    attempt,
                    settings.attempts - 1,
                    delay,
                )
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, settings.max_backoff_seconds)
                continue
            translated = storage_error(error, location)
            if translated is not None:
                raise translated from None
            raise
    raise AssertionError("unreachable")


# ---------------------------------------------------------------- single objects


@overload
def read_object(
    location: Location, missing_ok: Literal[False] = False, settings: TransferSettings | None = None
) -> bytes: ...
@overload
def read_object(location: Location, missing_ok: bool, settings: TransferSettings | None = None) -> bytes | None: ...
def read_object(location: Location, missing_ok: bool = False, settings: TransferSettings | None = None) -> bytes | None:
    settings = settings or TransferSettings()
    client = s3_client()

    def fetch():
        try:
            return client.get_object(Bucket=location.bucket, Key=location.key)["Body"].read()
        except client.exceptions.NoSuchKey:
            if missing_ok:
                return None
            raise ObjectNotFound(f"{location} does not exist") from None

    return retrying(fetch, f"read {location}", settings, location)


def write_object(location: Location, data: bytes, settings: TransferSettings | None = None) -> None:
    settings = settings or TransferSettings()
    client = s3_client()
    retrying(
        lambda: client.put_object(Bucket=location.bucket, Key=location.key, Body=data),
        f"write {location}",
        settings,
        location,
    )


def delete_object(location: Location, settings: TransferSettings | None = None) -> None:
    settings = settings or TransferSettings()
    client = s3_client()
    retrying(
        lambda: client.delete_object(Bucket=location.bucket, Key=location.key), f"delete {location}", settings, location
    )


def head_object(location: Location, settings: TransferSettings | None = None) -> dict | None:
    """The object's metadata (size, sha256 metadata, and its stored checksum where the endpoint keeps one)."""
    settings = settings or TransferSettings()
    client = s3_client()

    def head():
        from botocore.exceptions import ClientError

        try:
            return client.head_object(Bucket=location.bucket, Key=location.key, ChecksumMode="ENABLED")
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    return retrying(head, f"stat {location}", settings, location)


def list_objects(location: Location, settings: TransferSettings | None = None) -> dict[str, int]:
    """All objects under the prefix `location` (recursive): relative key to size."""
    settings = settings or TransferSettings()
    client = s3_client()
    prefix = location.prefix

    def listing() -> dict[str, int]:
        found: dict[str, int] = {}
        paginator = client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=location.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if relative and not relative.endswith("/"):
                    found[relative] = int(item["Size"])
        return found

    return retrying(listing, f"list {location}", settings, location)


def delete_tree(location: Location, settings: TransferSettings | None = None) -> int:
    """Delete every object under a prefix, the manifest first (so readers stop trusting it)."""
    settings = settings or TransferSettings()
    keys = list_objects(location, settings)
    if MANIFEST_NAME in keys:
        delete_object(location.child(MANIFEST_NAME), settings)
    for relative in keys:
        if relative != MANIFEST_NAME:
            delete_object(location.child(relative), settings)
    return len(keys)


# ---------------------------------------------------------------- files


def upload_file(
    path: Path,
    destination: Location,
    progress: ProgressSink | None = None,
    settings: TransferSettings | None = None,
    sha256: str | None = None,
) -> FileEntry:
    """Upload one file (multipart above the threshold), recording its sha256 as object metadata.

    The server checks the bytes it receives: against the file's sha256 for a single PUT, against
    each part's CRC32 for a multipart upload (see the module docstring). A HEAD then confirms size
    and sha256 (`VerifyFailed` otherwise, a transient error: the upload is tried again).
    """
    settings = settings or TransferSettings()
    path = Path(path)
    size = path.stat().st_size
    digest = sha256 or sha256_file(path)
    client = s3_client()
    extra: dict = {"Metadata": {SHA256_METADATA_KEY: digest}}
    single = size < settings.multipart_threshold  # s3transfer's own rule for PutObject versus multipart
    if single:
        extra["ChecksumSHA256"] = checksum_header(digest)
    else:
        extra["ChecksumAlgorithm"] = "CRC32"

    def upload():
        sent = [0]

        def callback(amount: int) -> None:
            sent[0] += amount
            if progress:
                progress.update(amount)

        try:
            client.upload_file(
                str(path),
                destination.bucket,
                destination.key,
                ExtraArgs=extra,
                Config=settings.boto_config(),
                Callback=callback,
            )
        except Exception:
            if progress:  # the retry re-sends these bytes
                progress.update(-sent[0])
            raise

    retrying(upload, f"upload {path} -> {destination}", settings, destination)
    head = head_object(destination, settings)
    problem = upload_mismatch(head, size, digest, extra.get("ChecksumSHA256"))
    if problem:
        raise CorruptObject(f"upload of {path} to {destination} did not verify: {problem}; upload it again")
    return FileEntry(size, digest)


def upload_mismatch(head: dict | None, size: int, digest: str, checksum: str | None) -> str | None:
    """Why a HEAD after an upload does not match what was sent (None: it matches)."""
    if head is None:
        return "the object is missing"
    if int(head["ContentLength"]) != size:
        return f"the bucket has {head['ContentLength']} bytes, the file {size}"
    if head.get("Metadata", {}).get(SHA256_METADATA_KEY) != digest:
        return "its sha256 metadata differs"
    stored = head.get("ChecksumSHA256")
    if checksum and stored and stored != checksum:  # endpoints without checksums echo none
        return "the checksum the server computed differs"
    return None


def download_file(
    source: Location,
    path: Path,
    expected: FileEntry | None = None,
    progress: ProgressSink | None = None,
    settings: TransferSettings | None = None,
) -> FileEntry:
    """Download one object to `path` via a `.part` file; verify size and sha256 before renaming."""
    settings = settings or TransferSettings()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    client = s3_client()
    if expected is None:
        head = head_object(source, settings)
        if head is None:
            raise ObjectNotFound(f"{source} does not exist")
        recorded = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
        expected = FileEntry(int(head["ContentLength"]), recorded) if recorded else None

    def download():
        got = [0]

        def callback(amount: int) -> None:
            got[0] += amount
            if progress:
                progress.update(amount)

        try:
            client.download_file(
                source.bucket, source.key, str(partial), Config=settings.boto_config(), Callback=callback
            )
        except Exception:
            if progress:
                progress.update(-got[0])
            raise

    retrying(download, f"download {source}", settings, source)
    size = partial.stat().st_size
    digest = sha256_file(partial)
    if expected is not None and (size != expected.size or digest != expected.sha256):
        partial.unlink(missing_ok=True)
        raise CorruptObject(
            f"corrupted download of {source}: expected {expected.size} bytes sha256 {expected.sha256[:12]}..., "
            f"got {size} bytes sha256 {digest[:12]}...; the bucket copy is damaged, upload it again"
        )
    os.replace(partial, path)
    return FileEntry(size, digest)


# ---------------------------------------------------------------- trees


def _local_files(root: Path) -> list[str]:
    files = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.name != MANIFEST_NAME and not path.name.endswith(".part"):
            files.append(path.relative_to(root).as_posix())
    return files


def upload_tree(
    root: Path, destination: Location, settings: TransferSettings | None = None, label: str | None = None
) -> TransferReport:
    """Upload every file under `root`, then the manifest. Files already matching remotely are skipped.

    An existing remote manifest is deleted first, so a re-upload that is interrupted
    leaves the tree marked incomplete rather than claiming stale contents.
    """
    settings = settings or TransferSettings()
    root = Path(root)
    if not root.is_dir():
        raise UserError(f"{root} is not a folder")
    relatives = _local_files(root)
    sizes = {relative: (root / relative).stat().st_size for relative in relatives}
    previous = read_manifest(destination, settings)
    remote_sizes = list_objects(destination, settings)
    if previous is not None:
        delete_object(destination.child(MANIFEST_NAME), settings)
    report = TransferReport()
    progress = Progress(label or f"upload {destination}", sum(sizes.values()))

    def one(relative: str) -> tuple[str, FileEntry, bool]:
        path = root / relative
        target = destination.child(relative)
        digest = sha256_file(path)
        entry = FileEntry(sizes[relative], digest)
        if remote_sizes.get(relative) == entry.size:
            known = previous.files.get(relative) if previous else None
            if known == entry:
                progress.update(entry.size)
                return relative, entry, False
            head = head_object(target, settings)
            if head and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == digest:
                progress.update(entry.size)
                return relative, entry, False
        return relative, upload_file(path, target, progress, settings, sha256=digest), True

    manifest = Manifest()
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for relative, entry, sent in pool.map(one, relatives):
            manifest.files[relative] = entry
            (report.transferred if sent else report.skipped).append(relative)
            if sent:
                report.bytes_transferred += entry.size
    progress.close()
    write_object(destination.child(MANIFEST_NAME), manifest.to_json().encode(), settings)
    report.manifest = manifest
    log.info(
        "uploaded %s to %s: %d files sent (%s), %d unchanged skipped",
        root,
        destination,
        len(report.transferred),
        human_bytes(report.bytes_transferred),
        len(report.skipped),
    )
    return report


def download_tree(
    source: Location, root: Path, settings: TransferSettings | None = None, label: str | None = None
) -> TransferReport:
    """Download a complete tree (one with a manifest) into `root`, verifying every file."""
    settings = settings or TransferSettings()
    root = Path(root)
    manifest = read_manifest(source, settings)
    if manifest is None:
        if list_objects(source, settings):
            raise IncompleteTree(
                f"{source} is incomplete: it has files but no manifest ({MANIFEST_NAME}), so its upload "
                "did not finish; upload it again"
            )
        raise ObjectNotFound(f"{source} does not exist or is empty")
    targets = {relative: safe_join(root, relative) for relative in manifest.files}
    report = TransferReport(manifest=manifest)
    progress = Progress(label or f"download {source}", manifest.total_bytes)

    def one(relative: str) -> bool:
        entry = manifest.files[relative]
        target = targets[relative]
        if target.is_file() and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
            progress.update(entry.size)
            return False
        download_file(source.child(relative), target, entry, progress, settings)
        return True

    root.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        for relative, sent in zip(manifest.files, pool.map(one, list(manifest.files)), strict=True):
            (report.transferred if sent else report.skipped).append(relative)
            if sent:
                report.bytes_transferred += manifest.files[relative].size
    progress.close()
    log.info(
        "downloaded %s to %s: %d files (%s), %d already present",
        source,
        root,
        len(report.transferred),
        human_bytes(report.bytes_transferred),
        len(report.skipped),
    )
    return report


def copy_remote_tree(source: Location, destination: Location, settings: TransferSettings | None = None) -> Manifest:
    """Server-side copy of a complete tree within the S3 service (no bytes pass through this machine).

    Files are copied in parallel (multipart copies above the threshold), each checked by size,
    then the source's manifest is written last at the destination.
    """
    settings = settings or TransferSettings()
    manifest = read_manifest(source, settings)
    if manifest is None:
        raise IncompleteTree(f"{source} is incomplete (no manifest): refusing to copy it")
    client = s3_client()
    if read_manifest(destination, settings) is not None:
        delete_object(destination.child(MANIFEST_NAME), settings)

    def one(relative: str) -> None:
        target = destination.child(relative)
        retrying(
            lambda: client.copy(
                {"Bucket": source.bucket, "Key": source.child(relative).key},
                target.bucket,
                target.key,
                Config=settings.boto_config(),
            ),
            f"copy {source.child(relative)} -> {target}",
            settings,
            target,
        )
        head = head_object(target, settings)
        if head is None or int(head["ContentLength"]) != manifest.files[relative].size:
            raise OSError(f"server-side copy to {target} did not verify: remote size differs")

    with ThreadPoolExecutor(max_workers=settings.workers) as pool:
        list(pool.map(one, list(manifest.files)))
    write_object(destination.child(MANIFEST_NAME), manifest.to_json().encode(), settings)
    return manifest


def is_remote_tree(location: Location) -> bool:
    """True when `location` names a prefix (not a single object) in the bucket."""
    if location.key and not location.key.endswith("/") and head_object(location) is not None:
        return False
    return bool(list_objects(location))


def _refuse_overwrite(destination: Location, digest: str | None, overwrite: bool, settings: TransferSettings) -> None:
    """A file copy must not silently replace a different file that is already there (`--overwrite` may)."""
    if overwrite:
        return
    if destination.is_local:
        if destination.path.is_dir():
            raise UserError(f"{destination.path} is a folder; give the file's own path as the destination")
        if not destination.path.is_file() or (digest and sha256_file(destination.path) == digest):
            return
    else:
        head = head_object(destination, settings)
        if head is None or (digest and head.get("Metadata", {}).get(SHA256_METADATA_KEY) == digest):
            return
    raise UserError(
        f"{destination} already exists and differs from what would be copied; pass --overwrite to "
        "replace it, or choose another destination"
    )


def _refuse_tree_onto_file(destination: Location) -> None:
    if destination.is_local and destination.path.is_file():
        raise UserError(f"{destination.path} is a file, so a folder cannot be copied onto it; give a folder path")


def copy(
    source: str | Location,
    destination: str | Location,
    settings: TransferSettings | None = None,
    overwrite: bool = False,
) -> TransferReport:
    """Copy a file or a tree between any two locations (the engine of `llmft storage cp`).

    A tree never lands on a file; a file replaces a different existing file only with `overwrite`
    (a tree copy skips files that are already the same and replaces the others, as a re-run should).
    """
    settings = settings or TransferSettings()
    src = source if isinstance(source, Location) else parse_location(source)
    dst = destination if isinstance(destination, Location) else parse_location(destination)
    if src.is_local:
        path = src.path
        if not path.exists():
            raise UserError(f"{path} does not exist")
        if path.is_dir():
            _refuse_tree_onto_file(dst)
        elif dst.is_local and dst.path.is_dir():
            dst = dst.child(path.name)
        elif not dst.is_local and (dst.key.endswith("/") or not dst.key):
            dst = dst.child(path.name)
        if path.is_file():
            _refuse_overwrite(dst, sha256_file(path), overwrite, settings)
        if dst.is_local:
            if path.is_dir():
                shutil.copytree(path, dst.path, dirs_exist_ok=True)
            else:
                dst.path.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, dst.path)
            return TransferReport(transferred=[str(path)])
        if path.is_dir():
            return upload_tree(path, dst, settings)
        entry = upload_file(path, dst, Progress(f"upload {dst}", path.stat().st_size), settings)
        return TransferReport(transferred=[path.name], bytes_transferred=entry.size)
    if is_remote_tree(src):
        if dst.is_local:
            _refuse_tree_onto_file(dst)
            return download_tree(src, dst.path, settings)
        with tempfile.TemporaryDirectory(prefix="llmft-copy-") as scratch:
            download_tree(src, Path(scratch), settings)
            return upload_tree(Path(scratch), dst, settings)
    head = head_object(src, settings)
    if head is None:
        raise ObjectNotFound(f"{src} does not exist")
    digest = head.get("Metadata", {}).get(SHA256_METADATA_KEY)
    if dst.is_local:
        target = dst.path / src.name if (dst.path.is_dir() or str(dst.key).endswith("/")) else dst.path
        _refuse_overwrite(Location(None, str(target)), digest, overwrite, settings)
        entry = download_file(src, target, None, Progress(f"download {src}", int(head["ContentLength"])), settings)
        return TransferReport(transferred=[src.name], bytes_transferred=entry.size)
    if dst.key.endswith("/") or not dst.key:
        dst = dst.child(src.name)
    _refuse_overwrite(dst, digest, overwrite, settings)
    with tempfile.TemporaryDirectory(prefix="llmft-copy-") as scratch:
        local = Path(scratch) / src.name
        download_file(src, local, settings=settings)
        entry = upload_file(local, dst, settings=settings)
        return TransferReport(transferred=[src.name], bytes_transferred=entry.size)
