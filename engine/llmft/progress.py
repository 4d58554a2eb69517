"""Progress for long steps: bytes or items done, rate and ETA.

On a terminal the line is redrawn in place; elsewhere (`kubectl logs`, CI) a log
line is written every `LLMFT_PROGRESS_INTERVAL` seconds, so logs stay readable and short.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from typing import Protocol

from llmft import settings

log = logging.getLogger("llmft.progress")


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressSink(Protocol):
    """What a transfer reports its bytes to: a `Progress`, or something feeding several."""

    def update(self, amount: float) -> None: ...


class Progress:
    """Thread-safe progress counter for one long step (`label`) of `total` units."""

    def __init__(self, label: str, total: float | None, unit: str = "bytes"):
        self.label = label
        self.total = total
        self.unit = unit
        self.done = 0.0
        self.started = time.monotonic()
        self.interval = settings.current().progress_interval
        self._last_report = self.started
        self._lock = threading.Lock()
        self._tty = sys.stderr.isatty()

    def update(self, amount: float) -> None:
        with self._lock:
            self.done += amount
            now = time.monotonic()
            due = (now - self._last_report) >= (0.2 if self._tty else self.interval)
            if due:
                self._last_report = now
                self._report(final=False)

    def _fmt(self, value: float) -> str:
        return human_bytes(value) if self.unit == "bytes" else f"{value:.0f} {self.unit}"

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        rate_text = f"{human_bytes(rate)}/s" if self.unit == "bytes" else f"{rate:.1f} {self.unit}/s"
        if self.total:
            percent = 100.0 * self.done / self.total
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            eta_text = human_duration(eta) if eta != float("inf") else "?"
            return (
                f"{self.label}: {self._fmt(self.done)}/{self._fmt(self.total)} ({percent:.0f}%), "
                f"{rate_text}, ETA {eta_text}"
            )
        return f"{self.label}: {self._fmt(self.done)}, {rate_text}"

    def _report(self, final: bool) -> None:
        text = self.line()
        if self._tty:
            sys.stderr.write("\r" + text + ("\n" if final else "\x1b[K"))
            sys.stderr.flush()
        else:
            log.info(text)

    def close(self) -> None:
        with self._lock:
            elapsed = time.monotonic() - self.started
            if elapsed >= 1.0 or self._tty:
                self._report(final=True)
