"""Which metrics a finetune run writes, and a finished trial's objective.

A run writes `metrics.jsonl` (one row per logging or evaluation step, `llmft.finetune.outputs`) and
`summary.json` (final figures). An objective names one of them:

- a metrics.jsonl key (`eval_loss`, `loss`, `rewards/margins`, `eval_rewards/margins`, ...): its value
  at each evaluation (or logging step) is the trial's intermediate value, the pruner's input, and
  its last value is the trial's result;
- a summary.json key (`final_eval_loss`, `tokens_per_second`, ...): the result; the intermediate
  values come from its metrics.jsonl twin where it has one (`final_eval_loss` <- `eval_loss`);
- `evaluation/<metric>` (with the spec's `tune.evaluation`): the result of evaluating the trial's final
  model, read from `eval/<name>/results.json`; no intermediate values.

The catalog of what the engine's SFT and DPO recipes write is `llmft.finetune.metric_catalog`.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmft.finetune.metric_catalog import MetricSource
from llmft.run_layout import EVAL_RESULTS, METRICS, SUMMARY


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
    """The metric's result for a finished run: summary.json's value, the last metrics.jsonl value, or an
    evaluation's result (`evaluation/<metric>` from `eval/<name>/results.json`)."""
    if source.file.endswith(EVAL_RESULTS):
        try:
            value = json.loads((run_dir / source.file).read_text())["metrics"].get(source.name.split("/", 1)[1])
        except (OSError, ValueError, KeyError, AttributeError):
            return None
        return float(value) if isinstance(value, (int, float)) else None
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
