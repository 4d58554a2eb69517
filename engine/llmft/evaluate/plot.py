"""`llmft report`'s picture of evaluation scores: one panel per `<evaluation>: <metric>`, one bar per run."""

from __future__ import annotations

from pathlib import Path

MAX_PANELS = 12


def plot_scores(evaluations: dict[str, dict[str, dict[str, float]]], path: Path) -> None:
    """`evaluations`: run name -> evaluation name -> metric -> value (what `read_evaluations` returns per run)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from llmft.evaluate.metrics import LOWER_IS_BETTER

    panels = sorted(
        {(name, metric) for scores in evaluations.values() for name, values in scores.items() for metric in values}
    )[:MAX_PANELS]
    runs = list(evaluations)
    columns = min(3, len(panels))
    rows = -(-len(panels) // columns)
    figure, axes = plt.subplots(
        rows, columns, figsize=(4.2 * columns, 0.35 * len(runs) * rows + 1.6 * rows), dpi=120, squeeze=False
    )
    colors = plt.get_cmap("tab10")
    for index, (name, metric) in enumerate(panels):
        axis = axes[index // columns][index % columns]
        values = [evaluations[run].get(name, {}).get(metric) for run in runs]
        shown = [(run, value) for run, value in zip(runs, values, strict=True) if value is not None]
        axis.barh(
            [run for run, _ in shown],
            [value for _, value in shown],
            color=[colors(runs.index(run) % 10) for run, _ in shown],
        )
        axis.invert_yaxis()
        better = "lower is better" if metric in LOWER_IS_BETTER else "higher is better"
        axis.set_title(f"{name}: {metric} ({better})", fontsize=9)
        axis.tick_params(labelsize=8)
        axis.grid(True, axis="x", alpha=0.3)
    for index in range(len(panels), rows * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
