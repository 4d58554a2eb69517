"""`llmft report EXPERIMENT`: an experiment's pictures and tables, from experiment.json alone.

- history.png: each trial's objective by trial number (completed dots, pruned crosses at their last
  reported value) and the best so far;
- parallel.png: parallel coordinates, one line per completed trial from each parameter's value to the
  objective, coloured by the objective;
- intermediate.png: the reported metric against the training step, completed trials solid, pruned
  trials dashed and ending where they were stopped;
- report.md: the trials table (`llmft tune status`), the best trial, and the parameter importances
  (Optuna's fANOVA evaluator) once enough trials completed.
"""

from __future__ import annotations

import math
from pathlib import Path

from llmft.tune import results as experiment_results

HISTORY, PARALLEL, INTERMEDIATE, MARKDOWN = "history.png", "parallel.png", "intermediate.png", "report.md"


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _shown(row: dict) -> float | None:
    if row["value"] is not None:
        return row["value"]
    values = list(row["intermediate"].values())
    return values[-1] if values else None


def history(data: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    metric, direction = data["objective"]["metric"], data["objective"]["direction"]
    rows = data["trials"]
    done = [(row["number"], row["value"]) for row in rows if row["state"] == "complete" and row["value"] is not None]
    pruned = [(row["number"], _shown(row)) for row in rows if row["state"] == "pruned" and _shown(row) is not None]
    if done:
        axes.scatter(*zip(*done, strict=True), color="tab:blue", label="completed", zorder=3)
        best, line = None, []
        for number, value in sorted(done):
            better = best is None or (value < best if direction == "minimize" else value > best)
            best = value if better else best
            line.append((number, best))
        last = max(row["number"] for row in rows)
        if line[-1][0] < last:
            line.append((last, line[-1][1]))  # the best so far holds to the last trial
        axes.step(*zip(*line, strict=True), where="post", color="tab:red", label="best so far")
    if pruned:
        axes.scatter(
            *zip(*pruned, strict=True), color="tab:gray", marker="x", label="pruned (last reported value)", zorder=3
        )
    from matplotlib.ticker import MaxNLocator

    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("trial")
    axes.set_ylabel(metric)
    axes.set_title(f"{data['name']}: optimisation history ({direction} {metric})")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=8)
    _save(figure, path)


def parallel(data: dict, path: Path) -> None:
    plt = _pyplot()
    rows = [row for row in data["trials"] if row["state"] == "complete" and row["value"] is not None]
    names = sorted({name for row in data["trials"] for name in row["params"]})
    metric = data["objective"]["metric"]
    figure, axes = plt.subplots(figsize=(max(6, 2 * (len(names) + 1)), 4.5), dpi=120)
    columns = names + [metric]
    scales = {}
    for name in columns:
        values = [row["value"] if name == metric else row["params"].get(name) for row in rows]
        scales[name] = _scale(values, log=name != metric and _looks_log(data, name))
    if rows:
        values = [row["value"] for row in rows]
        low, high = min(values), max(values)
        colours = plt.get_cmap("viridis_r" if data["objective"]["direction"] == "minimize" else "viridis")
        for row in rows:
            points = [scales[name](row["value"] if name == metric else row["params"].get(name)) for name in columns]
            shade = 0.5 if high == low else (row["value"] - low) / (high - low)
            axes.plot(range(len(columns)), points, color=colours(shade), linewidth=1.5, alpha=0.9)
    axes.set_xticks(range(len(columns)))
    axes.set_xticklabels(columns, fontsize=8)
    axes.set_yticks([0, 1])
    axes.set_yticklabels(["low", "high"])
    for index in range(len(columns)):
        axes.axvline(index, color="black", linewidth=0.6, alpha=0.5)
    axes.set_title(f"{data['name']}: parameters of completed trials (colour: {metric})")
    _save(figure, path)


def _looks_log(data: dict, name: str) -> bool:
    for parameter in data.get("search_space", []):
        if (parameter.get("name") or parameter["key"].rsplit(".", 1)[-1]) == name:
            return bool(parameter.get("log"))
    return False


def _scale(values: list, log: bool):
    """Map a column's values to [0, 1]; categorical values by their order of appearance."""
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) != len(values):
        order = {json_key: index for index, json_key in enumerate(dict.fromkeys(map(str, values)))}
        top = max(len(order) - 1, 1)
        return lambda value: order.get(str(value), 0) / top

    def transform(value) -> float:
        return math.log(value) if use_log else float(value)

    use_log = log and bool(numbers) and min(numbers) > 0
    numbers = [transform(v) for v in numbers]
    low, high = (min(numbers), max(numbers)) if numbers else (0.0, 1.0)
    return lambda value: 0.5 if high == low else (transform(value) - low) / (high - low)


def intermediate(data: dict, path: Path) -> None:
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(8, 4.5), dpi=120)
    for row in data["trials"]:
        if not row["intermediate"]:
            continue
        steps = [int(step) for step in row["intermediate"]]
        values = list(row["intermediate"].values())
        style = {"complete": ("tab:blue", "-"), "pruned": ("tab:gray", "--")}.get(row["state"], ("tab:orange", ":"))
        axes.plot(
            steps,
            values,
            color=style[0],
            linestyle=style[1],
            marker="o",
            markersize=3,
            label=f"trial {row['number']} ({row['state']})",
        )
        if row["state"] == "pruned":
            axes.scatter([steps[-1]], [values[-1]], color="tab:gray", marker="x", s=50, zorder=3)
    axes.set_xlabel("training step")
    axes.set_ylabel(data.get("reported_metric") or data["objective"]["metric"])
    axes.set_title(f"{data['name']}: intermediate values (solid: completed, dashed: pruned)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=7, ncol=2 if len(data["trials"]) > 8 else 1)
    _save(figure, path)


def _save(figure, path: Path) -> None:
    plt = _pyplot()
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)


def importances(data: dict) -> dict[str, float] | None:
    """fANOVA importances of the parameters over the completed trials (None with fewer than 3)."""
    import optuna
    from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

    space: dict[str, BaseDistribution] = {}
    for parameter in data.get("search_space", []):
        name = parameter.get("name") or parameter["key"].rsplit(".", 1)[-1]
        if parameter["type"] == "categorical":
            space[name] = CategoricalDistribution(parameter["values"])
        elif parameter["type"] == "int":
            space[name] = IntDistribution(
                int(parameter["min"]),
                int(parameter["max"]),
                log=parameter.get("log", False),
                step=int(parameter.get("step") or 1),
            )
        else:
            space[name] = FloatDistribution(
                parameter["min"], parameter["max"], log=parameter.get("log", False), step=parameter.get("step")
            )
    done = [row for row in data["trials"] if row["state"] == "complete" and row["value"] is not None]
    if len(done) < 3 or not space:
        return None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction=data["objective"]["direction"])
    for row in done:
        study.add_trial(optuna.trial.create_trial(params=row["params"], distributions=space, value=row["value"]))
    return optuna.importance.get_param_importances(study)


def report(data: dict, out_dir: Path) -> tuple[Path, Path, str]:
    """Write the pictures and report.md; returns (history png, report.md, the table)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    history(data, out_dir / HISTORY)
    parallel(data, out_dir / PARALLEL)
    intermediate(data, out_dir / INTERMEDIATE)
    table = experiment_results.status_table(data)
    parts = [
        f"# Experiment {data['name']}",
        "",
        table,
        f"![optimisation history]({HISTORY})",
        "",
        f"![parallel coordinates]({PARALLEL})",
        "",
        f"![intermediate values]({INTERMEDIATE})",
        "",
    ]
    if data["best"] is not None:
        parts += ["## Best trial", "", "```", experiment_results.best_text(data).rstrip(), "```", ""]
    found = importances(data)
    if found:
        parts += ["## Parameter importance (fANOVA)", "", "| parameter | importance |", "| --- | ---: |"]
        parts += [f"| {name} | {value:.3f} |" for name, value in found.items()] + [""]
    markdown = out_dir / MARKDOWN
    markdown.write_text("\n".join(parts))
    return out_dir / HISTORY, markdown, table
