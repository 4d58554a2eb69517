"""S3 client settings from the environment, and typed one-line errors for what goes wrong.

Endpoint and credentials come from `BUCKET_STORAGE_HOST`, `BUCKET_STORAGE_ACCESS_KEY`
and `BUCKET_STORAGE_SECRET_KEY` (the tutorial's names), falling back to the standard
`AWS_ENDPOINT_URL`, `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`. With a custom
endpoint (MinIO, SeaweedFS, Ceph) path-style addressing is used; with none, boto3's
AWS defaults apply.

The client never retries on its own (botocore's retries are off): `llmft.storage.transfer.retrying`
is the one retry layer, so one request is tried exactly as often as the settings say.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass

from llmft.storage.errors import (
    AccessDenied,
    BucketNotFound,
    BucketUnreachable,
    CorruptObject,
    StorageError,
)

_DEFAULT_REGION = "us-east-1"


@dataclass(frozen=True)
class StorageSettings:
    endpoint: str | None
    access_key: str | None
    secret_key: str | None
    region: str
    endpoint_variable: str
    credential_variables: str

    @classmethod
    def from_env(cls) -> StorageSettings:
        env = os.environ
        endpoint, endpoint_variable = _first(env, "BUCKET_STORAGE_HOST", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        if endpoint and "://" not in endpoint:
            endpoint = "http://" + endpoint
        access_key, access_variable = _first(env, "BUCKET_STORAGE_ACCESS_KEY", "AWS_ACCESS_KEY_ID")
        secret_key, secret_variable = _first(env, "BUCKET_STORAGE_SECRET_KEY", "AWS_SECRET_ACCESS_KEY")
        region = env.get("BUCKET_STORAGE_REGION") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
        return cls(
            endpoint=endpoint or None,
            access_key=access_key or None,
            secret_key=secret_key or None,
            region=region or _DEFAULT_REGION,
            endpoint_variable=endpoint_variable or "BUCKET_STORAGE_HOST",
            credential_variables=" and ".join(v for v in (access_variable, secret_variable) if v)
            or "BUCKET_STORAGE_ACCESS_KEY and BUCKET_STORAGE_SECRET_KEY",
        )

    @property
    def endpoint_label(self) -> str:
        return self.endpoint or "AWS S3 (no BUCKET_STORAGE_HOST set)"


def _first(env, *names: str) -> tuple[str | None, str | None]:
    for name in names:
        if env.get(name):
            return env[name], name
    return None, None


_clients: dict[tuple, object] = {}
_clients_lock = threading.Lock()


def s3_client(settings: StorageSettings | None = None):
    """A boto3 S3 client for `settings` (default: the environment), cached and thread-safe."""
    settings = settings or StorageSettings.from_env()
    cache_key = (settings.endpoint, settings.access_key, settings.secret_key, settings.region)
    with _clients_lock:
        client = _clients.get(cache_key)
        if client is None:
            client = _make_client(settings)
            _clients[cache_key] = client
    return client


def _make_client(settings: StorageSettings):
    import boto3
    from botocore.config import Config

    config = Config(
        region_name=settings.region,
        # One try per call: `transfer.retrying` is the only retry layer (with botocore's 3 retries on top,
        # one failing request was sent attempts x 4 times; tests/test_storage_retries.py counts them).
        retries={"mode": "standard", "total_max_attempts": 1},
        connect_timeout=10,
        read_timeout=120,
        max_pool_connections=32,
        # Payloads are not signed (no SigV4 sha256 of every byte): integrity comes from the
        # x-amz-checksum-* headers the server checks (`transfer.upload_file`) and from TLS.
        s3={"payload_signing_enabled": False, **({"addressing_style": "path"} if settings.endpoint else {})},
        # SeaweedFS and older MinIO reject the newer default CRC checksums on some calls.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=settings.endpoint,
        aws_access_key_id=settings.access_key,
        aws_secret_access_key=settings.secret_key,
        config=config,
    )


_CHECKSUM_CODES = {"BadDigest", "XAmzContentChecksumMismatch"}
_CREDENTIAL_CODES = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "Forbidden"}


def _unwrap(error: BaseException) -> BaseException:
    """Find the real botocore error inside boto3's and s3transfer's wrappers.

    `S3UploadFailedError` chains it; the transfer manager's `RetriesExceededError` (a download
    whose body broke off) keeps it as `last_exception`.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    seen: BaseException | None = error
    while seen is not None and not isinstance(seen, (ClientError, BotoCoreError, OSError)):
        seen = getattr(seen, "last_exception", None) or seen.__cause__ or seen.__context__
    return seen or error


def is_transient(error: BaseException) -> bool:
    """Errors worth retrying: the server is down, slow, answered 5xx, or a response broke off."""
    error = _unwrap(error)
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        ConnectTimeoutError,
        EndpointConnectionError,
        IncompleteReadError,
        ReadTimeoutError,
        ResponseStreamingError,
    )
    from s3transfer.exceptions import (
        RetriesExceededError,  # s3transfer gives up only on broken streams
    )

    if isinstance(
        error,
        (
            EndpointConnectionError,
            ConnectionClosedError,
            ConnectTimeoutError,
            ReadTimeoutError,
            IncompleteReadError,
            ResponseStreamingError,
            RetriesExceededError,
            ConnectionError,
            TimeoutError,
        ),
    ):
        return True
    if isinstance(error, ClientError):
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        code = error.response.get("Error", {}).get("Code", "")
        # BadDigest: the bytes that arrived do not match the checksum sent with them (damaged on the way).
        return status >= 500 or code in {
            "SlowDown",
            "RequestTimeout",
            "InternalError",
            "ServiceUnavailable",
            *_CHECKSUM_CODES,
        }
    return False


def storage_error(
    error: BaseException, location: object, settings: StorageSettings | None = None
) -> StorageError | None:
    """Translate a botocore error into a typed one-line `StorageError`, or None if it is not the user's to fix."""
    from botocore.exceptions import ClientError, NoCredentialsError

    settings = settings or StorageSettings.from_env()
    error = _unwrap(error)
    where = settings.endpoint_label
    if isinstance(error, NoCredentialsError):
        return AccessDenied(
            f"no bucket credentials for {where}: set BUCKET_STORAGE_ACCESS_KEY and BUCKET_STORAGE_SECRET_KEY"
        )
    if is_transient(error) and not isinstance(error, ClientError):
        return BucketUnreachable(
            f"cannot reach bucket storage at {where} ({type(error).__name__}): "
            f"check {settings.endpoint_variable} and that the server is running"
        )
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _CREDENTIAL_CODES:
            return AccessDenied(
                f"bucket storage at {where} rejected the credentials ({code}) for {location}: "
                f"check {settings.credential_variables}"
            )
        if code == "NoSuchBucket":
            bucket = getattr(location, "bucket", None) or "?"
            hint = ""
            local_twin = f"{bucket}/{getattr(location, 'key', '')}".rstrip("/")
            if os.path.exists(bucket) or os.path.exists(local_twin):
                hint = f"; a local path {local_twin!r} exists: write ./{local_twin} to use it"
            return BucketNotFound(
                f"bucket {bucket!r} does not exist at {where} (location {location}): create it or fix the path{hint}"
            )
        if code in _CHECKSUM_CODES:
            return CorruptObject(
                f"bucket storage at {where} refused the bytes sent to {location} on every attempt: they did not "
                f"match their checksum ({code}); the file changed while it was sent, or the path damages data"
            )
        if is_transient(error):
            return BucketUnreachable(
                f"bucket storage at {where} kept failing for {location} (HTTP {status} {code}): "
                "check that the server is healthy, then run again"
            )
    return None
