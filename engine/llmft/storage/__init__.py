"""Bucket storage: locations, S3 client settings, manifests and verified transfers.

Every workload reads and writes the bucket through this package (never `mc` or
`aws` in a chart). The public surface:

- `parse_location(text)`: `s3://bucket/key`, the tutorial's `bucket/key`, or a local path.
- `upload_tree` / `download_tree` / `upload_file` / `download_file` / `copy`:
  parallel multipart transfers, retried, every file verified by size and sha256.
- `read_manifest` / `is_complete`: a tree is complete only when its manifest exists.
- `llmft.storage.errors`: what goes wrong as types (`BucketUnreachable`, `AccessDenied`,
  `BucketNotFound`, `ObjectNotFound`, `IncompleteTree`, `CorruptObject`, ...), all `UserError`s.
"""

from llmft.storage.errors import (
    AccessDenied,
    BucketAccessError,
    BucketNotFound,
    BucketUnreachable,
    CorruptObject,
    IncompleteTree,
    ManifestCorrupt,
    ObjectNotFound,
    StorageError,
    UnsafeKey,
)
from llmft.storage.location import Location, parse_location
from llmft.storage.manifest import (
    MANIFEST_NAME,
    FileEntry,
    Manifest,
    is_complete,
    read_manifest,
)
from llmft.storage.transfer import (
    TransferReport,
    copy,
    download_file,
    download_tree,
    list_objects,
    upload_file,
    upload_tree,
)

__all__ = [
    "MANIFEST_NAME",
    "AccessDenied",
    "BucketAccessError",
    "BucketNotFound",
    "BucketUnreachable",
    "CorruptObject",
    "FileEntry",
    "IncompleteTree",
    "Location",
    "Manifest",
    "ManifestCorrupt",
    "ObjectNotFound",
    "StorageError",
    "TransferReport",
    "UnsafeKey",
    "copy",
    "download_file",
    "download_tree",
    "is_complete",
    "list_objects",
    "parse_location",
    "read_manifest",
    "upload_file",
    "upload_tree",
]
