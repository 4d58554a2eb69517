"""The embedded S3 server of the local runner: one detached `weed mini`, shared by all local runs.

Its data folder, generated credentials (mode 0600) and PID live under the state
dir, so objects survive between runs (a sweep in a bash loop, a resumed job) and
`llmft local s3 stop` ends exactly the process that `start` launched.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from llmft.local.state import state_dir
from llmft.storage.seaweed import SeaweedServer, server_client

log = logging.getLogger("llmft.local.s3")

DEFAULT_BUCKETS = ("default-bucket",)


@dataclass
class EmbeddedS3:
    endpoint: str
    access_key: str
    secret_key: str
    pid: int

    def environment(self) -> dict[str, str]:
        return {
            "BUCKET_STORAGE_HOST": self.endpoint,
            "BUCKET_STORAGE_ACCESS_KEY": self.access_key,
            "BUCKET_STORAGE_SECRET_KEY": self.secret_key,
        }


def _root() -> Path:
    root = state_dir() / "s3"
    root.mkdir(parents=True, exist_ok=True)
    return root


def _credentials() -> tuple[str, str]:
    path = _root() / "credentials.json"
    if path.is_file():
        data = json.loads(path.read_text())
        return data["access_key"], data["secret_key"]
    access_key, secret_key = "llmft-" + secrets.token_hex(6), secrets.token_hex(20)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"access_key": access_key, "secret_key": secret_key}, handle)
    return access_key, secret_key


def _is_our_weed(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"weed") for part in cmdline[:1]) and b"mini" in cmdline


def status() -> EmbeddedS3 | None:
    """The running embedded server, or None."""
    record = _root() / "server.json"
    if not record.is_file():
        return None
    data = json.loads(record.read_text())
    if not _is_our_weed(data["pid"]):
        record.unlink(missing_ok=True)
        return None
    access_key, secret_key = _credentials()
    return EmbeddedS3(data["endpoint"], access_key, secret_key, data["pid"])


def start(buckets: tuple[str, ...] = DEFAULT_BUCKETS) -> EmbeddedS3:
    """Start the embedded server if it is not running (idempotent) and make sure `buckets` exist."""
    running = status()
    if running is None:
        access_key, secret_key = _credentials()
        server = SeaweedServer(_root() / "data", access_key, secret_key, log_path=_root() / "weed.log")
        log.info("starting the embedded S3 server (SeaweedFS) with data in %s", _root() / "data")
        server.start()
        assert server.process is not None, "start() launched it"
        pid = server.process.pid
        record = {"pid": pid, "endpoint": server.endpoint, "started": time.time()}
        (_root() / "server.json").write_text(json.dumps(record))
        running = EmbeddedS3(server.endpoint, access_key, secret_key, pid)
        server.process = None  # detached: it outlives this process until `llmft local s3 stop`
    _ensure_buckets(running, buckets)
    return running


def _ensure_buckets(server: EmbeddedS3, buckets: tuple[str, ...]) -> None:
    client = server_client(server.endpoint, server.access_key, server.secret_key)
    existing = {b["Name"] for b in client.list_buckets().get("Buckets", [])}
    for name in buckets:
        if name not in existing:
            client.create_bucket(Bucket=name)


def stop() -> bool:
    """Stop the embedded server started by `start` (by its recorded PID). True if one was running."""
    import signal

    running = status()
    if running is None:
        return False
    os.kill(running.pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _is_our_weed(running.pid):
        time.sleep(0.2)
    if _is_our_weed(running.pid):
        os.kill(running.pid, signal.SIGKILL)
    (_root() / "server.json").unlink(missing_ok=True)
    return True
