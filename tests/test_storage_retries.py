"""One retry layer for S3: a failing request is attempted exactly as often as the settings say.

The failing endpoint is a real TCP server on loopback that counts what reaches it: one
answers every HTTP request with 503 ServiceUnavailable, another closes each
connection without answering, the third cuts every download body short. botocore's and
s3transfer's own retries would multiply the count: with botocore's 3 retries on, the first
test saw 16 requests instead of 4 (and sync's 12 attempts became 48 requests).
"""

from __future__ import annotations

import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmft.storage import BucketUnreachable, parse_location
from llmft.storage.transfer import (
    TransferSettings,
    download_file,
    list_objects,
    read_object,
    upload_file,
)

ERROR_BODY = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>ServiceUnavailable</Code><Message>try again</Message></Error>'
)


class _Answers503(BaseHTTPRequestHandler):
    def _fail(self):
        self.server.requests.append(f"{self.command} {self.path}")
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(503)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(ERROR_BODY)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(ERROR_BODY)

    do_GET = do_PUT = do_HEAD = do_POST = do_DELETE = _fail

    def log_message(self, *args):
        pass


class _ClosesConnections(socketserver.BaseRequestHandler):
    def handle(self):
        self.server.requests.append("connection")
        self.request.recv(65536)  # read the request, then close without a response


class _TruncatesBodies(BaseHTTPRequestHandler):
    """HEAD says the object has 1000 bytes; every GET promises them and sends 10 before closing."""

    protocol_version = "HTTP/1.1"

    def do_HEAD(self):
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("ETag", '"abc"')
        self.end_headers()

    def do_GET(self):
        self.server.requests.append(f"GET {self.path}")
        self.send_response(200)
        self.send_header("Content-Length", "1000")
        self.send_header("ETag", '"abc"')
        self.end_headers()
        self.wfile.write(b"x" * 10)
        self.wfile.flush()
        self.close_connection = True

    def log_message(self, *args):
        pass


class _ThreadingTCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


def _serve(server, monkeypatch):
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("BUCKET_STORAGE_HOST", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("BUCKET_STORAGE_ACCESS_KEY", "k")
    monkeypatch.setenv("BUCKET_STORAGE_SECRET_KEY", "s")
    return server


@pytest.fixture(params=["503", "close"])
def failing_endpoint(request, monkeypatch):
    handler = _Answers503 if request.param == "503" else None
    server = (
        ThreadingHTTPServer(("127.0.0.1", 0), handler)
        if handler
        else _ThreadingTCPServer(("127.0.0.1", 0), _ClosesConnections)
    )
    _serve(server, monkeypatch)
    yield server.requests
    server.shutdown()
    server.server_close()


@pytest.fixture
def truncating_endpoint(monkeypatch):
    server = _serve(ThreadingHTTPServer(("127.0.0.1", 0), _TruncatesBodies), monkeypatch)
    yield server.requests
    server.shutdown()
    server.server_close()


def test_each_operation_is_attempted_exactly_the_configured_times(failing_endpoint, tmp_path):
    settings = TransferSettings(attempts=4, backoff_seconds=0)
    location = parse_location("bucket/run/file.bin")
    path = tmp_path / "file.bin"
    path.write_bytes(b"x" * 1000)
    operations = {
        "read": lambda: read_object(location, settings=settings),
        "list": lambda: list_objects(location, settings),
        "upload": lambda: upload_file(path, location, settings=settings),
        "download": lambda: download_file(location, tmp_path / "back.bin", settings=settings),
    }
    for name, operation in operations.items():
        failing_endpoint.clear()
        with pytest.raises(BucketUnreachable, match="bucket storage at http://127.0.0.1"):
            operation()
        assert len(failing_endpoint) == 4, (name, failing_endpoint)


def test_a_body_cut_short_is_retried_by_the_same_layer_only(truncating_endpoint, tmp_path):
    """s3transfer would retry a broken download stream 5 times on its own; here only `retrying` does."""
    settings = TransferSettings(attempts=3, backoff_seconds=0)
    with pytest.raises(BucketUnreachable):
        download_file(parse_location("bucket/model.bin"), tmp_path / "model.bin", settings=settings)
    assert len(truncating_endpoint) == 3
    assert not (tmp_path / "model.bin").exists()


def test_the_attempts_setting_is_read_when_the_operation_runs(failing_endpoint, monkeypatch):
    monkeypatch.setenv("LLMFT_TRANSFER_ATTEMPTS", "3")
    monkeypatch.setenv("LLMFT_TRANSFER_BACKOFF", "0")
    with pytest.raises(BucketUnreachable):
        read_object(parse_location("bucket/key"))
    assert len(failing_endpoint) == 3


def test_checkpoint_sync_uses_its_own_attempts(failing_endpoint, monkeypatch):
    from llmft.sync import background_settings

    monkeypatch.setenv("LLMFT_SYNC_ATTEMPTS", "5")
    monkeypatch.setenv("LLMFT_SYNC_BACKOFF", "0")
    with pytest.raises(BucketUnreachable):
        read_object(parse_location("bucket/key"), settings=background_settings())
    assert len(failing_endpoint) == 5
