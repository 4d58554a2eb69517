"""`llmft report`: compare runs from their metrics.jsonl (bucket or local) in one PNG and one table.

A location may end in `*` to take every run folder under a prefix whose name
starts with what precedes it (a sweep: `default-bucket/experiments/sweep-alpha-*`).
"""

from __future__ import annotations

import json
import re
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llmft.errors import UserError
from llmft.evaluate.results import read_evaluations
from llmft.run_layout import METRICS, SUMMARY
from llmft.storage import Location, download_file, list_objects, parse_location
from llmft.storage.transfer import head_object


@dataclass
class Run:
    name: str
    records: list[dict]
    summary: dict = field(default_factory=dict)
    evaluations: dict[str, dict[str, float]] = field(default_factory=dict)  # eval/<name>/results.json metrics

    def series(self, key: str) -> tuple[list[float], list[float]]:
        points = [(r["step"], r[key]) for r in self.records if r.get(key) is not None and "step" in r]
        return [p[0] for p in points], [p[1] for p in points]

    def last(self, key: str) -> float | None:
        values = self.series(key)[1]
        return values[-1] if values else None


def _natural(name: str) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def expand(patterns: list[str]) -> list[Location]:
    """Run locations from the command line, with trailing-`*` patterns expanded."""
    runs: list[Location] = []
    for pattern in patterns:
        if not pattern.endswith("*"):
            runs.append(parse_location(pattern.rstrip("/")))
            continue
        stem = parse_location(pattern[:-1])
        parent_key, _, name_prefix = stem.key.rpartition("/")
        if stem.is_local:
            folder = Path(parent_key or ".")
            names = sorted(p.name for p in folder.glob(f"{name_prefix}*") if (p / METRICS).is_file())
            runs += [Location(None, str(folder / name)) for name in names]
            continue
        parent = Location(stem.bucket, parent_key)
        found = {
            rel.split("/", 1)[0]
            for rel in list_objects(parent)
            if rel.startswith(name_prefix) and rel.endswith("/metrics.jsonl") and rel.count("/") == 1
        }
        runs += [parent.child(name) for name in found]
        if not found:
            raise UserError(f"no run folder with metrics.jsonl matches {pattern}")
    return sorted(runs, key=lambda loc: _natural(loc.name))


def _read_text(location: Location, scratch: Path) -> str | None:
    if location.is_local:
        return location.path.read_text() if location.path.is_file() else None
    if head_object(location) is None:
        return None
    target = scratch / re.sub(r"[^\w.-]", "_", str(location))
    download_file(location, target)
    return target.read_text()


def load_run(location: Location, scratch: Path) -> Run:
    text = _read_text(location.child(METRICS), scratch)
    if text is None:
        raise UserError(f"{location} has no metrics.jsonl: is it a run folder (checkpointsRemote of a finetune run)?")
    records = [json.loads(line) for line in text.splitlines() if line.strip()]
    summary_text = _read_text(location.child(SUMMARY), scratch)
    return Run(
        location.name, records, json.loads(summary_text) if summary_text else {}, read_evaluations(location, scratch)
    )


def markdown_table(runs: list[Run]) -> str:
    def fmt(value, digits=4):
        return "-" if value is None else (f"{value:.{digits}f}" if isinstance(value, float) else str(value))

    # One column per evaluation metric any run has (`llmft evaluate`: <run>/eval/<name>/results.json).
    scores = sorted({(name, metric) for run in runs for name, values in run.evaluations.items() for metric in values})
    lines = [
        "| run | steps | final train loss | final eval loss | best eval loss | tokens | runtime (s) |"
        + "".join(f" {name}: {metric} |" for name, metric in scores),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |" + " ---: |" * len(scores),
    ]
    for run in runs:
        steps = run.series("loss")[0] + run.series("eval_loss")[0]
        evals = run.series("eval_loss")[1]
        summary = run.summary
        lines.append(
            "| "
            + " | ".join(
                [
                    run.name,
                    fmt(max(steps) if steps else None),
                    fmt(run.last("loss")),
                    fmt(run.last("eval_loss")),
                    fmt(min(evals) if evals else None),
                    fmt(summary.get("tokens_seen")),
                    fmt(summary.get("runtime_seconds"), 1),
                ]
                + [fmt(run.evaluations.get(name, {}).get(metric)) for name, metric in scores]
            )
            + " |"
        )
    return "\n".join(lines) + "\n"


def plot(runs: list[Run], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 5.5), dpi=120)
    colors = plt.get_cmap("tab10")
    for index, run in enumerate(runs):
        color = colors(index % 10)
        steps, losses = run.series("loss")
        if steps:
            axes.plot(steps, losses, color=color, linewidth=1.6, label=f"{run.name} (train)")
        steps, losses = run.series("eval_loss")
        if steps:
            axes.plot(
                steps,
                losses,
                color=color,
                linewidth=1.6,
                linestyle="--",
                marker="o",
                markersize=4,
                label=f"{run.name} (eval)",
            )
    axes.set_xlabel("training step")
    axes.set_ylabel("loss (cross-entropy per trained token)")
    axes.set_title(title)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8, loc="upper right", ncol=1 if len(runs) <= 4 else 2)
    figure.text(0.01, 0.01, "solid: training loss, dashed: evaluation loss", fontsize=8, alpha=0.7)
    figure.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def report(patterns: list[str], out_dir: Path, title: str = "Training and evaluation loss") -> tuple[Path, Path, str]:
    if len(patterns) == 1:  # an experiment of `llmft tune`: its own pictures (llmft.tune.plots)
        from llmft.tune.results import experiment_at

        experiment = experiment_at(patterns[0])
        if experiment is not None:
            from llmft.tune.plots import report as experiment_report

            return experiment_report(experiment, out_dir)
    locations = expand(patterns)
    if not locations:
        raise UserError("no runs given")
    with tempfile.TemporaryDirectory(prefix="llmft-report-") as scratch:
        runs = [load_run(location, Path(scratch)) for location in locations]
    table = markdown_table(runs)
    png, md = out_dir / "report.png", out_dir / "report.md"
    plot(runs, png, title)
    scores = ""
    if any(run.evaluations for run in runs):  # `llmft evaluate` results: a bar per run and metric
        from llmft.evaluate.plot import plot_scores

        plot_scores({run.name: run.evaluations for run in runs}, out_dir / "evaluation.png")
        scores = "![evaluation scores](evaluation.png)\n\n"
    md.write_text(f"# {title}\n\n![loss curves](report.png)\n\n{scores}{table}")
    return png, md, table
