"""The engine's own knobs: one typed object read from `LLMFT_*` environment variables.

These are tuning and local-machine settings (transfer parallelism, retries, sync cadence,
local folders), not part of a run's config: the chart-to-engine interface is the config
file (`llmft.finetune.config`). Every module reads its knobs through `current()`, at use
and never at import, so a variable set after import (a test's monkeypatch, a subprocess's
environment) counts. A bad value is one `UserError` naming every variable at fault.

`llmft settings-reference` prints the table in docs/settings.md from the field docstrings
below (`make docs`; a test fails when the committed table is stale).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from llmft.errors import UserError

ENV_PREFIX = "LLMFT_"
MIB = 1024 * 1024


class EngineSettings(BaseSettings):
    """Every `LLMFT_*` knob with its type, default and bounds (an unset or empty variable takes the default)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="ignore", frozen=True, use_attribute_docstrings=True
    )

    # ------------------------------------------------------------------ bucket transfers
    transfer_workers: int = Field(default=8, ge=1, le=256)
    """Files transferred at once in a tree upload or download; a multipart file uses half as many
    threads for its parts (at least 2)."""

    transfer_attempts: int = Field(default=6, ge=1, le=100)
    """Attempts per bucket operation (one request, or one file's whole transfer) in commands and staging
    before giving up. The only retry layer: botocore's and s3transfer's own retries are off."""

    transfer_backoff: float = Field(default=1.0, ge=0, le=600)
    """Seconds before the first retry of a failed bucket request; doubles with every retry up to 30 s
    (each wait jittered between half and one and a half times)."""

    transfer_max_bandwidth: int | None = Field(default=None, gt=0)
    """Bytes per second per file transfer (unset: unlimited); keeps a background upload off a shared link."""

    multipart_threshold: int = Field(default=64 * MIB, ge=5 * MIB)
    """Files of at least this many bytes go up and down in parts."""

    multipart_chunksize: int = Field(default=32 * MIB, ge=5 * MIB, le=5 * 1024 * MIB)
    """Bytes per part of a multipart transfer (S3 allows 5 MiB to 5 GiB)."""

    # ------------------------------------------------------------------ several nodes
    rendezvous_timeout: int = Field(default=600, ge=1)
    """Seconds the nodes of a multi-node run wait for each other: for node 0's rendezvous endpoint, for the
    other nodes' pods, and inside torchrun's rendezvous (its join_timeout)."""

    # ------------------------------------------------------------------ checkpoint sync
    sync_attempts: int = Field(default=12, ge=1, le=1000)
    """Attempts per bucket request of checkpoint sync (replaces `LLMFT_TRANSFER_ATTEMPTS` there): with the
    defaults about four minutes of retrying before a checkpoint upload round fails."""

    sync_backoff: float = Field(default=2.0, ge=0, le=600)
    """Seconds before checkpoint sync's first retry of a request; doubles up to `LLMFT_SYNC_MAX_BACKOFF`."""

    sync_max_backoff: float = Field(default=30.0, ge=0, le=3600)
    """The longest wait between two retries of a checkpoint sync request, in seconds."""

    sync_max_pending: int = Field(default=2, ge=1, le=100)
    """Checkpoints staged but not yet uploaded before a save waits for an upload (training blocks only then)."""

    sync_interval: float = Field(default=60.0, gt=0)
    """Seconds between uploads of `logs/` and `metrics.jsonl` while training runs."""

    sync_retry_pause: float = Field(default=10.0, ge=0)
    """Seconds between two rounds of a checkpoint upload that failed after all its request retries."""

    sync_nice: int = Field(default=10, ge=0, le=19)
    """CPU niceness added to the upload threads so they yield to training (0: same priority)."""

    # ------------------------------------------------------------------ logs and reports
    progress_interval: float = Field(default=10.0, gt=0)
    """Seconds between two progress lines of a long step when the output is not a terminal."""

    peak_flops: float | None = Field(default=None, gt=0)
    """Peak FLOP/s per device for the MFU estimate in summary.json, when the device is not in the engine's
    table of GPUs (e.g. `9.89e14`; unset: MFU is null for unknown devices)."""

    # ------------------------------------------------------------------ local folders
    state_dir: Path | None = None
    """The local runner's state (runs, embedded S3 data); unset: `$XDG_STATE_HOME/llmft`, else
    `~/.local/state/llmft`."""

    cache_dir: Path | None = None
    """Where models read from the bucket or the Hub are cached; unset: `~/.cache/llmft`."""


def env_name(field_name: str) -> str:
    return ENV_PREFIX + field_name.upper()


_cache: dict[tuple[tuple[str, str], ...], EngineSettings] = {}


def current() -> EngineSettings:
    """The settings from the environment as it is now (parsed again whenever an `LLMFT_*` variable changed)."""
    key = tuple(sorted((name, value) for name, value in os.environ.items() if name.upper().startswith(ENV_PREFIX)))
    found = _cache.get(key)
    if found is None:
        try:
            found = EngineSettings()
        except ValidationError as error:
            raise UserError(_one_line(error)) from None
        _cache.clear()  # only the newest environment is worth keeping
        _cache[key] = found
    return found


def _one_line(error: ValidationError) -> str:
    problems = [
        f"{env_name(str(item['loc'][0]))}={item.get('input')!r}: {item['msg'].lower()}"
        for item in error.errors()
        if item["loc"]
    ]
    return "; ".join(problems) + "; fix or unset it (docs/settings.md lists every LLMFT_* setting)"


_TYPE_NAMES = {int: "integer", float: "number", Path: "path"}


def _type_text(annotation: Any) -> str:
    """`int | None` reads as "integer": unset is listed as the default."""
    inner = [arg for arg in getattr(annotation, "__args__", (annotation,)) if arg is not type(None)]
    return _TYPE_NAMES.get(inner[0], str(annotation))


def _bounds_text(field) -> str:
    parts = []
    for item in field.metadata:
        for attribute, sign in (("ge", ">="), ("gt", ">"), ("le", "<="), ("lt", "<")):
            value = getattr(item, attribute, None)
            if value is not None:
                parts.append(f"{sign} {_number(value)}")
    return ", ".join(parts)


def _number(value) -> str:
    if isinstance(value, int) and value >= 1024 * MIB and value % (1024 * MIB) == 0:
        return f"{value // (1024 * MIB)} GiB"
    if isinstance(value, int) and value >= MIB and value % MIB == 0:
        return f"{value // MIB} MiB"
    return f"{value:g}" if isinstance(value, float) else str(value)


def settings_reference() -> str:
    """docs/settings.md: one row per knob, from the fields above."""
    lines = [
        "# Engine settings",
        "",
        (
            "<!-- Generated by `llmft settings-reference` from engine/llmft/settings.py; do not edit by hand. "
            "Run `make docs` after changing the settings. -->"
        ),
        "",
        (
            "The engine's own knobs, read from the environment when they are used (`llmft.settings`). They tune "
            "transfers, checkpoint sync and logging, or name local folders; what a run trains is in its config "
            "file ([config-reference.md](config-reference.md)). An unset or empty variable takes the default; a "
            "value of the wrong type or out of bounds stops the command with one line naming the variable."
        ),
        "",
        "| Variable | Type | Default | Bounds | What it does |",
        "|---|---|---|---|---|",
    ]
    for name, field in EngineSettings.model_fields.items():
        default = "unset" if field.default is None else f"`{_number(field.default)}`"
        description = " ".join((field.description or "").split())
        lines.append(
            f"| `{env_name(name)}` | {_type_text(field.annotation)} | {default} | "
            f"{_bounds_text(field) or '-'} | {description} |"
        )
    return "\n".join(lines) + "\n"
