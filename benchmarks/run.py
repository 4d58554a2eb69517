"""`make bench`: run every benchmark, write results/latest.json, results/latest.md and PNG charts.

    python -m benchmarks.run [--quick] [--only NAME ...] [--out DIR]

`--quick` uses tiny sizes (seconds) so `make test` keeps the scripts from rotting;
its numbers mean nothing and are not written to results/ unless --out says so.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

BENCHMARKS = ("training", "checkpoint_upload", "staging", "resume", "tune")
HERE = Path(__file__).resolve().parent


def available() -> list[str]:
    return [name for name in BENCHMARKS if (HERE / f"bench_{name}.py").is_file()]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_all(names: list[str], quick: bool) -> dict:
    results, failures = {}, {}
    load_before = os.getloadavg()
    for name in names:
        module = importlib.import_module(f"benchmarks.bench_{name}")
        print(f"== {name} ({'quick' if quick else 'full'})", flush=True)
        started = time.perf_counter()
        try:
            results[name] = module.run(quick=quick)
            results[name]["wall_seconds"] = round(time.perf_counter() - started, 1)
        except Exception:  # noqa: BLE001 - one broken benchmark must not hide the others
            failures[name] = traceback.format_exc()
            print(failures[name], file=sys.stderr)
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "processor": cpu_model(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            # Other processes' load: ratios of interleaved runs tolerate it, absolute times do not.
            "load_average_1min": {"start": round(load_before[0], 2), "end": round(os.getloadavg()[0], 2)},
        },
        "quick": quick,
        "results": results,
        "failures": failures,
    }


def markdown(report: dict) -> str:
    machine = report["machine"]
    load = machine["load_average_1min"]
    lines = [
        f"Measured {report['date']} on {machine['cpus']} CPUs ({machine['processor']}, {machine['platform']}; "
        f"1-minute load average {load['start']} at the start, {load['end']} at the end)"
        + (" - QUICK MODE, sizes too small to mean anything" if report["quick"] else "")
        + ".",
        "",
        "| benchmark | ratio | value | target | met |",
        "| --- | --- | ---: | --- | --- |",
    ]
    for outcome in report["results"].values():
        for fig in outcome["figures"]:
            met = {True: "yes", False: "no", None: "-"}[fig["meets"]]
            lines.append(
                f"| {outcome['title']} | {fig['name']} | {fig['value']:.3f} | {fig['target'] or '-'} | {met} |"
            )
    for name in report["failures"]:
        lines.append(f"| {name} | FAILED (see log) | - | - | - |")
    lines.append("")
    for outcome in report["results"].values():
        lines.append(f"- **{outcome['title']}**: {outcome['setup']}")
        for fig in outcome["figures"]:
            if fig["explain"]:
                lines.append(f"  - {fig['name']}: {fig['explain']}")
    return "\n".join(lines) + "\n"


def charts(report: dict, out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for name, outcome in report["results"].items():
        figures = outcome["figures"]
        if not figures:
            continue
        fig, axes = plt.subplots(figsize=(12, 0.6 * len(figures) + 1.6), dpi=110)
        labels = [f["name"] for f in figures]
        values = [f["value"] for f in figures]
        colors = ["tab:green" if f["meets"] else ("tab:red" if f["meets"] is False else "tab:gray") for f in figures]
        axes.barh(labels, values, color=colors)
        for index, fig_data in enumerate(figures):
            axes.text(
                values[index],
                index,
                f" {values[index]:.2f}" + (f" (target {fig_data['target']})" if fig_data["target"] else ""),
                va="center",
            )
        axes.axvline(1.0, color="black", linewidth=0.8, linestyle=":")
        axes.set_xlabel("ratio (1.0 = same as the baseline)")
        axes.set_title(outcome["title"], fontsize=10)
        axes.set_xlim(0, max(values + [1.0]) * 1.8)
        axes.invert_yaxis()
        fig.tight_layout()
        path = out_dir / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the scripts run, numbers mean nothing")
    parser.add_argument("--only", nargs="*", choices=BENCHMARKS, help="run only these benchmarks")
    parser.add_argument("--out", help="output folder (default: benchmarks/results, or none in quick mode)")
    args = parser.parse_args(argv)
    names = [n for n in (args.only or available()) if n in available()]
    report = run_all(names, args.quick)
    out = Path(args.out) if args.out else (None if args.quick else HERE / "results")
    text = markdown(report)
    print(text)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "latest.json").write_text(json.dumps(report, indent=2) + "\n")
        (out / "latest.md").write_text(text)
        for path in charts(report, out):
            print(f"chart: {path}")
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
