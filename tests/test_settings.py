"""The engine's LLMFT_* settings: one typed object, read at use, documented in one generated table."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llmft import settings
from llmft.errors import UserError

REPO = Path(__file__).resolve().parent.parent
# Not engine knobs: what the tuner hands to the trial processes it starts.
NOT_KNOBS = {"LLMFT_TUNE_TRIAL", "LLMFT_TUNE_STORAGE"}


def test_docs_settings_table_is_current():
    assert (REPO / "docs" / "settings.md").read_text() == settings.settings_reference(), (
        "docs/settings.md is stale: run `make docs`"
    )


def test_every_llmft_variable_the_engine_names_is_a_setting():
    named = set()
    for path in (REPO / "engine" / "llmft").rglob("*.py"):
        named |= set(re.findall(r"\bLLMFT_[A-Z][A-Z_]*[A-Z]\b", path.read_text()))
    known = {settings.env_name(name) for name in settings.EngineSettings.model_fields}
    assert named - NOT_KNOBS - known == set()


def test_settings_are_read_when_used(monkeypatch):
    monkeypatch.delenv("LLMFT_TRANSFER_WORKERS", raising=False)
    assert settings.current().transfer_workers == 8
    monkeypatch.setenv("LLMFT_TRANSFER_WORKERS", "3")
    assert settings.current().transfer_workers == 3
    monkeypatch.setenv("LLMFT_TRANSFER_WORKERS", "")
    assert settings.current().transfer_workers == 8, "an empty variable takes the default"


@pytest.mark.parametrize(
    "name, value, message",
    [
        ("LLMFT_TRANSFER_WORKERS", "0", "LLMFT_TRANSFER_WORKERS='0': input should be greater than or equal to 1"),
        ("LLMFT_SYNC_BACKOFF", "fast", "LLMFT_SYNC_BACKOFF='fast': input should be a valid number"),
        ("LLMFT_MULTIPART_CHUNKSIZE", "1024", "LLMFT_MULTIPART_CHUNKSIZE='1024': input should be greater than"),
        ("LLMFT_SYNC_NICE", "20", "LLMFT_SYNC_NICE='20': input should be less than or equal to 19"),
    ],
)
def test_a_bad_value_names_the_variable(monkeypatch, name, value, message):
    monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=re.escape(message)):
        settings.current()


def test_a_bad_value_stops_the_cli_with_one_line():
    env = {**os.environ, "LLMFT_TRANSFER_ATTEMPTS": "many"}
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "storage", "ls", "some-bucket/x"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        (
            "error: LLMFT_TRANSFER_ATTEMPTS='many': input should be a valid integer, unable to parse string as an "
            "integer; fix or unset it (docs/settings.md lists every LLMFT_* setting)"
        )
    ]
