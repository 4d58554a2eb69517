"""What can go wrong with the bucket, as exception types (not message text) callers can tell apart.

Every type is a `UserError` (one line, exit status 2, final for a Job): the message names the
endpoint, the location and the variable or action that fixes it. `BucketUnreachable` and
`CorruptObject` are `TransientError`s instead (exit status 1: the Job retries, the work resumes).
`BucketAccessError` groups the problems of the bucket as a whole (unreachable, refused, missing): no
other object there can be read either, so checkpoint restore stops on them instead of trying an
older checkpoint.
"""

from __future__ import annotations

from llmft.errors import TransientError, UserError


class StorageError(UserError):
    """A bucket problem the user can fix."""


class BucketAccessError(StorageError):
    """The bucket as a whole cannot be used: nothing else there is worth trying."""


class BucketUnreachable(BucketAccessError, TransientError):
    """The endpoint did not answer (or kept failing) through every retry."""


class AccessDenied(BucketAccessError):
    """No credentials, or the server rejected them."""


class BucketNotFound(BucketAccessError):
    """The bucket named by a location does not exist at the endpoint."""


class ObjectNotFound(StorageError):
    """A location names nothing: no object, or an empty prefix."""


class IncompleteTree(StorageError):
    """A prefix holds files but no manifest: its upload did not finish."""


class ManifestCorrupt(StorageError):
    """A tree's manifest is not a manifest this engine can read."""


class CorruptObject(StorageError, TransientError):
    """An object's bytes do not match the size and sha256 recorded for it."""


class UnsafeKey(StorageError):
    """An object key that would write outside the target folder."""
