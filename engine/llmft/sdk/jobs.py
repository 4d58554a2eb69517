"""What the SDK returns about a job: `Job`, its `Step`s and training `Progress`, and `BestResult` of a tune.

A job is what one `train`, `tune` or `serve` call started: its steps run in order (the model and dataset
initializers, then the training node(s), the tuner or the server). States follow the Kubeflow SDK's names:
a job is Created, Running, Complete or Failed; a step is Pending, Running, Succeeded or Failed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

CREATED, RUNNING, COMPLETE, FAILED = "Created", "Running", "Complete", "Failed"
JOB_STATES = (CREATED, RUNNING, COMPLETE, FAILED)
PENDING, SUCCEEDED = "Pending", "Succeeded"

MODEL_INITIALIZER = "model-initializer"
DATASET_INITIALIZER = "dataset-initializer"


@dataclass
class Progress:
    """Training progress from the run's metrics.jsonl: the last logged step, of `total` (max_steps when the
    config sets it), its loss, and an ETA from the rate since the training step started."""

    step: int
    total: int | None = None
    loss: float | None = None
    eval_loss: float | None = None
    epoch: float | None = None
    eta_seconds: float | None = None

    @property
    def percent(self) -> float | None:
        return 100.0 * self.step / self.total if self.total else None


@dataclass
class Step:
    """One step of a job: an initializer, a training node, the tuner or the server."""

    name: str
    state: str = PENDING
    exit_code: int | None = None
    reason: str = ""
    pod: str | None = None
    started: float | None = None
    finished: float | None = None


@dataclass
class Job:
    name: str
    kind: str  # train, tune or serve
    state: str
    steps: list[Step] = field(default_factory=list)
    created: float | None = None
    checkpoints_remote: str | None = None
    progress: Progress | None = None
    url: str | None = None  # serve: the OpenAI base URL
    reason: str = ""

    def step(self, name: str) -> Step:
        for step in self.steps:
            if step.name == name:
                return step
        raise KeyError(f"job {self.name} has no step {name!r}; its steps: {', '.join(s.name for s in self.steps)}")


@dataclass
class BestResult:
    """The best trial of a tune experiment."""

    trial: int
    parameters: dict[str, Any]
    objective: dict[str, Any]  # metric, direction, value
    metrics: dict[str, Any]
    checkpoint: str | None  # the servable checkpoint-final (merged LoRA or full model)
    adapter: str | None = None


def job_state(steps: list[Step]) -> str:
    """The job's state from its steps: Failed if any failed, Complete when all succeeded, Running once one
    started, else Created."""
    if any(step.state == FAILED for step in steps):
        return FAILED
    if steps and all(step.state == SUCCEEDED for step in steps):
        return COMPLETE
    if any(step.state in (RUNNING, SUCCEEDED) for step in steps):
        return RUNNING
    return CREATED


def progress_from_rows(
    rows: list[dict], total: int | None, started: float | None, now: float | None = None
) -> Progress | None:
    """Progress from metrics.jsonl rows; None before the first logged step."""
    if not rows:
        return None
    train = [row for row in rows if "loss" in row]
    evals = [row for row in rows if "eval_loss" in row]
    step = max(int(row.get("step", 0)) for row in rows)
    eta = None
    if total and started and step > 0:
        elapsed = max((now or time.time()) - started, 0.0)
        eta = elapsed / step * max(total - step, 0)
    loss = train[-1]["loss"] if train else None
    return Progress(
        step=step,
        total=total,
        loss=loss if loss is None or math.isfinite(loss) else None,
        eval_loss=evals[-1]["eval_loss"] if evals else None,
        epoch=rows[-1].get("epoch"),
        eta_seconds=eta,
    )
