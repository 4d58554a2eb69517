"""The time line of a run's start: when each phase was done, in seconds from the start of the process.

A relaunched pod's cost is the time to its first training step. The phases that make it up are
marked as they finish (`mark`): `interpreter` (Python up, the `llmft` command entered), `imports`
(torch, transformers, trl, datasets), `data` (read and validated), `model` (loaded), `trainer` (built),
`optimizer` (the Trainer restored the checkpoint's weights, optimizer, scheduler and RNG state),
`first_step` (the first optimizer step after those began) and `first_step_done`. The restore of a
remote checkpoint runs beside them (in a child process, or a thread), so it is a span (`restore_started`,
`restore_done`). The log gets one line at the first step and summary.json a `timeline` block.

The origin is the process's start time (from /proc) when the run is the process's program
(`llmft sft CONFIG`); a run started from Python inside a longer-lived process (tests, benchmarks)
counts from the call of `start`.
"""

from __future__ import annotations

import logging
import os
import threading
import time

log = logging.getLogger("llmft.timeline")

_lock = threading.Lock()
_origin: float | None = None
_origin_kind = ""
_marks: dict[str, float] = {}

# The order of the phases in the log line and the summary block.
PHASES = (
    "interpreter",
    "imports",
    "restore_started",
    "restore_done",
    "data",
    "model",
    "trainer",
    "optimizer",
    "first_step",
    "first_step_done",
)


def process_start_time() -> float | None:
    """When this process started (seconds since the epoch), from /proc; None where /proc is missing."""
    try:
        with open("/proc/self/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        started_ticks = int(fields[19])  # field 22 of stat(5); the first two are before the ")"
        with open("/proc/stat") as handle:
            boot = next(int(line.split()[1]) for line in handle if line.startswith("btime "))
        return boot + started_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def start(program: bool) -> None:
    """Begin a time line: from the process's start when the run is the process's program, else from now."""
    global _origin, _origin_kind
    with _lock:
        _marks.clear()
        origin = process_start_time() if program else None
        _origin, _origin_kind = (origin, "process start") if origin is not None else (time.time(), "run start")
    if program:
        mark("interpreter")


def started() -> bool:
    return _origin is not None


def mark(name: str, when: float | None = None) -> None:
    """Note that phase `name` was done (now, or at `when`, seconds since the epoch); the first mark wins."""
    if _origin is None:
        return
    with _lock:
        _marks.setdefault(name, (when if when is not None else time.time()) - _origin)


def as_dict() -> dict | None:
    """The summary.json block: seconds from the origin at which each phase was done."""
    if _origin is None:
        return None
    with _lock:
        marks = dict(_marks)
    ordered = {name: round(marks[name], 3) for name in PHASES if name in marks}
    ordered.update({name: round(value, 3) for name, value in marks.items() if name not in PHASES})
    block: dict = {"origin": _origin_kind, "seconds": ordered}
    if "restore_started" in marks and "restore_done" in marks:
        block["restore_seconds"] = round(marks["restore_done"] - marks["restore_started"], 3)
        # The restore ran beside imports and data; what the run waited for it is what it took past them.
        waited_from = max((marks[name] for name in ("imports", "data") if name in marks), default=0.0)
        block["restore_waited_seconds"] = round(
            max(0.0, marks["restore_done"] - max(waited_from, marks["restore_started"])), 3
        )
    return block


def line() -> str:
    block = as_dict() or {"seconds": {}}
    parts = [f"{name.replace('_', ' ')} {value:.2f}s" for name, value in block["seconds"].items()]
    return f"start-up time line (from {block.get('origin', 'run start')}): " + ", ".join(parts)


def callback():
    """A TrainerCallback marking `optimizer` (training begins: the checkpoint is loaded) and the first step."""
    from transformers import TrainerCallback

    class TimelineCallback(TrainerCallback):
        def __init__(self):
            self.logged = False

        def on_train_begin(self, args, state, control, **kwargs):
            mark("optimizer")

        def on_step_begin(self, args, state, control, **kwargs):
            mark("first_step")

        def on_step_end(self, args, state, control, **kwargs):
            if not self.logged:
                self.logged = True
                mark("first_step_done")
                if state.is_world_process_zero:
                    log.info("%s", line())

    return TimelineCallback()
