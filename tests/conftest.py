"""Shared fixtures: a real S3 server (SeaweedFS), fresh buckets, tiny models.

The S3 server is session-scoped (one per pytest-xdist worker): `weed mini` on
127.0.0.1 with free random ports, telemetry and admin UI off, credentials
required, data in a temp folder. It is stopped by PID at the end.
"""

from __future__ import annotations

import os
import secrets
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from llmft.storage.seaweed import SeaweedServer

# Tests must never reach the Hugging Face Hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def shared_torch_extensions(tmp_path_factory):
    """One build of DeepSpeed's CPU collective (~30 s) per test run, shared by both xdist workers and every pod
    of the local runner (which passes the variable through), instead of one per worker and one per fixture."""
    os.environ.setdefault("TORCH_EXTENSIONS_DIR", str(tmp_path_factory.getbasetemp().parent / "torch_extensions"))


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("seaweed")
    server = SeaweedServer(
        root / "data",
        access_key="llmft-test-" + secrets.token_hex(4),
        secret_key=secrets.token_hex(16),
        log_path=root / "weed.log",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    """Point `llmft` at the test S3 server through the tutorial's variables."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    for name, value in s3_server.environment().items():
        monkeypatch.setenv(name, value)
    return s3_server.environment()


@pytest.fixture
def bucket(s3_server, s3_env) -> str:
    """A fresh, empty bucket for one test."""
    name = f"test-{uuid.uuid4().hex[:16]}"
    s3_server.create_bucket(name)
    return name


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random Llama with a real tokenizer (built once per worker, offline)."""
    from llmft.tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-model") / "tiny-llama", seed=0)


def pytest_collection_modifyitems(config, items):
    """Modules that hold a `slow` test run first, each kept whole (its module fixtures are built once).

    pytest-xdist hands work out in collection order, so a long training run collected last keeps one worker busy
    while the other has nothing left to do; started first, the short tests fill in around it.
    """
    slow_files = {item.nodeid.split("::")[0] for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in slow_files)
