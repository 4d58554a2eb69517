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

from benchmarks.run import BENCHMARKS  # noqa: E402

pytestmark = pytest.mark.slow


def test_every_listed_benchmark_has_a_script():
    assert all((REPO / "benchmarks" / f"bench_{name}.py").is_file() for name in BENCHMARKS)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_benchmark_reports_its_figures(name, tmp_path):
    out = tmp_path / "results"
    completed = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--only", name, "--out", str(out)],
                               cwd=REPO, capture_output=True, text=True, timeout=600)
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
