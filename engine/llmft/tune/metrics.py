"""Which metrics a finetune run writes, and a finished trial's objective.

A run writes `metrics.jsonl` (one row per logging or evaluation step, `llmft.finetune.outputs`) and
`summary.json` (final figures). An objective names one of them:

- a metrics.jsonl key (`eval_loss`, `loss`, `rewards/margins`, `eval_rewards/margins`, ...): its value
  at each evaluation (or logging step) is the trial's intermediate value, the pruner's input, and
  its last value is the trial's result;
- a summary.json key (`final_eval_loss`, `tokens_per_second`, ...): the result; the intermediate
  values come from its metrics.jsonl twin where it has one (`final_eval_loss` <- `eval_loss`).

The catalog below lists what the engine's SFT and DPO recipes write; `eval_*` keys exist only when
the run evaluates (`training_args.eval_strategy` steps or epoch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmft.run_layout import METRICS, SUMMARY

# Logged at every logging step by the Trainer (and the engine's progress callback).
TRAIN_COMMON = ("loss", "grad_norm", "learning_rate", "tokens_seen", "tokens_per_second")
# Logged at every evaluation by the Trainer.
EVAL_COMMON = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
# What TRL's trainers add to both (the evaluation rows carry them with an `eval_` prefix).
METHOD_METRICS = {
    "sft": ("mean_token_accuracy", "entropy"),
    "dpo": (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
    ),
}
# summary.json keys that are numbers, and their metrics.jsonl twin (None: no intermediate values).
SUMMARY_METRICS = {
    "final_eval_loss": "eval_loss",
    "final_train_loss": "loss",
    "mean_train_loss": "loss",
    "first_train_loss": None,
    "tokens_per_second": None,
    "samples_per_second": None,
    "runtime_seconds": None,
}


@dataclass(frozen=True)
class MetricSource:
    """Where a metric comes from: `file` (metrics.jsonl or summary.json), and its per-step key."""

    name: str
    file: str
    step_key: str | None  # the metrics.jsonl key reported as intermediate values (None: none)
    needs_evaluation: bool


def catalog(method: str) -> dict[str, MetricSource]:
    """Every metric a `method` run writes, by name."""
    found: dict[str, MetricSource] = {}
    extra = METHOD_METRICS.get(method, ())
    for name in TRAIN_COMMON + extra:
        found[name] = MetricSource(name, METRICS, name, False)
    for name in EVAL_COMMON + tuple(f"eval_{key}" for key in extra):
        found[name] = MetricSource(name, METRICS, name, True)
    for name, twin in SUMMARY_METRICS.items():
        found[name] = MetricSource(name, SUMMARY, twin, twin is not None and twin.startswith("eval_"))
    return found


def read_rows(run_dir: Path) -> list[dict]:
    path = run_dir / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue  # a line the killed writer left half-written
    return rows


def read_summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / SUMMARY).read_text())
    except (OSError, ValueError):
        return {}


def final_value(source: MetricSource, run_dir: Path) -> float | None:
    """The metric's result for a finished run: summary.json's value or the last metrics.jsonl value."""
    if source.file == SUMMARY:
        value = read_summary(run_dir).get(source.name)
        return float(value) if isinstance(value, (int, float)) else None
    values = [row[source.name] for row in read_rows(run_dir) if isinstance(row.get(source.name), (int, float))]
    return float(values[-1]) if values else None


def curve(name: str, run_dir: Path) -> list[tuple[int, float]]:
    """(step, value) of a metrics.jsonl key."""
    return [
        (row["step"], float(row[name]))
        for row in read_rows(run_dir)
        if isinstance(row.get(name), (int, float)) and "step" in row
    ]
