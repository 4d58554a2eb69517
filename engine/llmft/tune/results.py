"""An experiment's trials as data (experiment.json) and as tables (`llmft tune status|best`).

The tuner rewrites `<experiment>/experiment.json` whenever a trial changes state, and copies it to
`<checkpointsRemote>/experiment.json` when the experiment uses the bucket, so status, best and report
work from the bucket too, with no access to the study storage.
"""

from __future__ import annotations

import json
import logging
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from llmft.errors import UserError
from llmft.finetune.outputs import write_json
from llmft.run_layout import FINAL
from llmft.tune import metrics, trials
from llmft.tune.spec import TuneSpec
from llmft.tune.study import ERROR, OUTPUTS, OWNER

log = logging.getLogger("llmft.tune")

EXPERIMENT = "experiment.json"
SPEC = "spec.yaml"


def collect(study, spec: TuneSpec, experiment_dir: Path) -> dict:
    """Every trial with its values, state, objective, curves and where its model is."""
    source = spec.objective_source()
    rows = []
    for trial in study.get_trials(deepcopy=False):
        folder = trials.trial_dir(experiment_dir, trial.number)
        output = folder / trials.OUTPUT
        # What the worker that ran the trial recorded (it may be another pod), else this folder's files.
        recorded = dict(trial.user_attrs.get(OUTPUTS) or outputs_of(output))
        recorded["pruned_at"] = recorded.get("pruned_at") or trial.user_attrs.get(trials.PRUNED_ATTR)
        remote = trials.remote_dir(spec, trial.number)
        serve, adapter = recorded.get("serve"), recorded.get("adapter")
        rows.append(
            {
                "number": trial.number,
                "state": trial.state.name.lower(),
                "params": dict(trial.params),
                "value": trial.value if trial.state.name == "COMPLETE" else None,
                "intermediate": {str(step): value for step, value in sorted(trial.intermediate_values.items())},
                "metrics": {key: value for key, value in trial.user_attrs.items() if not key.startswith("llmft:")},
                "worker": trial.system_attrs.get(OWNER),
                "error": trial.user_attrs.get(ERROR),
                "pruned_at": recorded.get("pruned_at"),
                "steps": recorded.get("steps"),
                "local": str(output),
                "remote": remote,
                "checkpoint_final": _join(remote or str(output), serve),
                "adapter": _join(remote or str(output), adapter) if adapter else None,
                "started": _time(trial.datetime_start),
                "finished": _time(trial.datetime_complete),
            }
        )
    complete = [row for row in rows if row["state"] == "complete" and row["value"] is not None]
    sign = 1 if spec.tune.objective.direction == "minimize" else -1
    best = min(complete, key=lambda row: sign * row["value"]) if complete else None
    return {
        "name": spec.name,
        "updated": _time(datetime.now(UTC)),
        "objective": spec.tune.objective.model_dump(mode="json"),
        "algorithm": spec.tune.algorithm.name,
        "early_stopping": spec.tune.early_stopping.name,
        "max_trial_count": spec.tune.max_trial_count,
        "basemodel": spec.basemodel,
        "checkpointsRemote": spec.checkpointsRemote or None,
        "search_space": [p.model_dump(mode="json", exclude_none=True) for p in spec.tune.search_space],
        "reported_metric": source.step_key,
        "state": experiment_state(rows, spec),
        "best": best["number"] if best else None,
        "trials": rows,
    }


def outputs_of(output: Path) -> dict:
    """Where a trial's models are (names inside its folder), how far it trained, and where it was pruned."""
    summary = metrics.read_summary(output)
    steps = summary.get("steps")
    if steps is None:
        rows = metrics.read_rows(output)
        steps = rows[-1].get("step") if rows else None
    return {
        "serve": summary.get("serve") or (FINAL if (output / FINAL).is_dir() else None),
        "adapter": (summary.get("outputs") or {}).get("adapter"),
        "steps": steps,
        "pruned_at": trials.was_pruned(output.parent),
    }


def experiment_state(rows: list[dict], spec: TuneSpec) -> str:
    tune = spec.tune
    failed = sum(row["state"] == "fail" for row in rows)
    if failed > tune.max_failed_trial_count:
        return "failed"
    goal = tune.objective.goal
    if goal is not None and any(reached(row["value"], goal, tune.objective.direction) for row in rows):
        return "goal-reached"
    if rows and all(row["state"] in ("complete", "pruned", "fail") for row in rows):
        return "completed"
    return "running"


def reached(value: float | None, goal: float, direction: str) -> bool:
    if value is None:
        return False
    return value <= goal if direction == "minimize" else value >= goal


def _join(base: str, name: str | None) -> str | None:
    return f"{base.rstrip('/')}/{name}" if name else None


def _time(moment) -> str | None:
    return moment.isoformat(timespec="seconds") if moment else None


def publish(results: dict, experiment_dir: Path, spec: TuneSpec) -> None:
    """experiment.json locally and, with checkpointsRemote, in the bucket (best effort: the study is the truth)."""
    write_json(experiment_dir / EXPERIMENT, results)
    if not spec.checkpointsRemote:
        return
    from llmft.storage import parse_location, upload_file

    try:
        upload_file(experiment_dir / EXPERIMENT, parse_location(f"{spec.checkpointsRemote.rstrip('/')}/{EXPERIMENT}"))
    except Exception as error:  # noqa: BLE001 - the next state change uploads again
        log.warning("could not upload %s to %s: %s", EXPERIMENT, spec.checkpointsRemote, error)


def load(where: str) -> dict:
    """experiment.json from an experiment folder, a bucket folder (`bucket/path`, `s3://...`), or the file."""
    from llmft.storage import download_file, parse_location

    location = parse_location(where.rstrip("/"))
    if location.is_local:
        path = location.path if location.path.is_file() else location.path / EXPERIMENT
        if not path.is_file():
            raise UserError(
                f"{where}: no {EXPERIMENT} here; give an experiment folder (printed by `llmft tune`), "
                "its checkpointsRemote, or the spec file"
            )
        return json.loads(path.read_text())
    target = location if location.key.endswith(".json") else location.child(EXPERIMENT)
    with tempfile.TemporaryDirectory(prefix="llmft-tune-") as scratch:
        local = Path(scratch) / EXPERIMENT
        try:
            download_file(target, local)
        except UserError:
            raise
        except Exception as error:  # noqa: BLE001 - a missing object: say what was expected
            raise UserError(
                f"{target}: cannot read {EXPERIMENT} ({error}); is this an experiment's checkpointsRemote?"
            ) from None
        return json.loads(local.read_text())


def experiment_at(where: str) -> dict | None:
    """The experiment.json data when `where` is an experiment (folder or bucket folder), else None."""
    from llmft.storage import parse_location
    from llmft.storage.transfer import head_object

    if where.endswith("*"):
        return None
    location = parse_location(where.rstrip("/"))
    if location.is_local:
        return load(where) if (location.path / EXPERIMENT).is_file() else None
    return load(where) if head_object(location.child(EXPERIMENT)) is not None else None


# -------------------------------------------------------------------------------------------- tables


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e5):
            return f"{value:.3g}"
        return f"{value:.4g}"
    return str(value)


def status_table(results: dict) -> str:
    names = sorted({name for row in results["trials"] for name in row["params"]})
    metric = results["objective"]["metric"]
    header = ["trial", "state", *names, metric, "steps", "checkpoint-final"]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for row in results["trials"]:
        state = row["state"] + (" (best)" if row["number"] == results["best"] else "")
        if row["pruned_at"]:
            state += f" at step {row['pruned_at']['step']}"
        value = row["value"] if row["value"] is not None else _last(row["intermediate"])
        cells = [
            str(row["number"]),
            state,
            *[_fmt(row["params"].get(name)) for name in names],
            _fmt(value),
            _fmt(row["steps"]),
            row["checkpoint_final"] or "-",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    counts: dict[str, int] = {}
    for row in results["trials"]:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    tally = ", ".join(f"{count} {state}" for state, count in sorted(counts.items()))
    head = (
        f"experiment {results['name']}: {results['state']}; {len(results['trials'])} of "
        f"{results['max_trial_count']} trials ({tally}); {results['objective']['direction']} {metric} with "
        f"{results['algorithm']}, early stopping {results['early_stopping']}"
    )
    return head + "\n\n" + "\n".join(lines) + "\n"


def _last(intermediate: dict) -> float | None:
    return list(intermediate.values())[-1] if intermediate else None


def best_trial(results: dict) -> dict:
    if results["best"] is None:
        raise UserError(f"experiment {results['name']} has no completed trial yet ({results['state']})")
    return next(row for row in results["trials"] if row["number"] == results["best"])


def best_text(results: dict) -> str:
    row = best_trial(results)
    metric = results["objective"]["metric"]
    lines = [
        f"best trial of {results['name']}: trial {row['number']}, {metric} = {_fmt(row['value'])}",
        "hyperparameters:",
    ]
    lines += [f"  {name}: {json.dumps(value)}" for name, value in row["params"].items()]
    if row["metrics"]:
        lines.append("metrics: " + ", ".join(f"{key} {_fmt(value)}" for key, value in row["metrics"].items()))
    model = row["checkpoint_final"]
    lines.append(f"servable model: {model or '-'}")
    if row["adapter"]:
        lines.append(f"adapter: {row['adapter']}")
    if model and row["remote"]:
        lines.append(f"serve it: helm template charts/llm-inference-vllm --set model={model} | kubectl apply -f -")
    elif model:
        lines.append(f"serve it: llmft serve {model}")
    return "\n".join(lines) + "\n"
