"""`make bench` cannot rot: every benchmark runs end to end in quick mode (tiny sizes).

Quick-mode numbers mean nothing, so nothing here asserts a speed: only that each benchmark
runs through the real harness (`python -m benchmarks.run --quick`) and reports its figures
in latest.json, latest.md and a chart. One test per benchmark so pytest-xdist can spread them.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest
from harness import REPO

sys.path.insert(0, str(REPO))

from benchmarks.run import BENCHMARKS

pytestmark = pytest.mark.slow


def test_every_listed_benchmark_has_a_script():
    assert all((REPO / "benchmarks" / f"bench_{name}.py").is_file() for name in BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_benchmark_reports_its_figures(name, tmp_path):
    out = tmp_path / "results"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--only", name, "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]

    report = json.loads((out / "latest.json").read_text())
    assert report["quick"] is True and report["failures"] == {}
    outcome = report["results"][name]
    assert outcome["figures"], f"{name} reported no figures"
    for fig in outcome["figures"]:
        assert fig["name"] and math.isfinite(fig["value"]) and fig["value"] >= 0
        assert fig["meets"] in (True, False, None)
        assert (fig["target"] is None) == (fig["meets"] is None)  # a target always comes with its verdict
    assert outcome["setup"] and outcome["measurements"]
    table = (out / "latest.md").read_text()
    assert "QUICK MODE" in table
    assert all(fig["name"] in table for fig in outcome["figures"])
    assert (out / f"{name}.png").stat().st_size > 1000


def test_gpu_check_runs_on_the_cpu_and_writes_its_report(tmp_path):
    """`make gpu-check` runs on a GPU machine only later; `--cpu` (tiny sizes) keeps the script from rotting."""
    out = tmp_path / "gpu"
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--cpu", "--out", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert completed.returncode == 0, completed.stderr[-4000:]
    report = json.loads((out / "gpu_check.json").read_text())
    assert set(report["throughput"]) == {"full packed", "full padded", "lora packed", "lora padded"}
    assert all(run["tokens_per_s"] > 0 and run["flops_per_token"] > 0 for run in report["throughput"].values())
    assert report["peak"]["flops_per_s"] > 0
    assert report["resume"] == {**report["resume"], "status": "ok", "identical_weights": True}
    assert report["deepspeed"]["status"] == "skipped"
    assert "MFU, full packed" in (out / "gpu_check.md").read_text()


def test_readme_table_is_rewritten_between_its_markers_only():
    from benchmarks.readme import BEGIN, END, rewrite

    report = {
        "date": "2026-12-02T00:00:00+00:00",
        "quick": False,
        "failures": {},
        "machine": {
            "cpus": 2,
            "processor": "cpu",
            "platform": "linux",
            "load_average_1min": {"start": 0.1, "end": 0.2},
        },
        "results": {
            "resume": {
                "title": "Resume",
                "setup": "s",
                "wall_seconds": 120,
                "figures": [{"name": "ratio", "value": 1.1, "target": "<= 1.15", "meets": True, "explain": ""}],
            }
        },
    }
    readme = f"intro\n{BEGIN}\nold table\n{END}\nhow each figure is measured\n"
    rewritten = rewrite(readme, report)
    assert rewritten.startswith("intro\n") and rewritten.endswith(f"{END}\nhow each figure is measured\n")
    assert "old table" not in rewritten
    assert "| Resume | ratio | 1.100 | <= 1.15 | yes |" in rewritten and "about 2.0 minutes" in rewritten
