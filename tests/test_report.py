"""`llmft report`: a sweep's metrics from the bucket become one PNG and one markdown table."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from llmft.storage import parse_location
from llmft.storage.transfer import write_object


def put_run(bucket: str, name: str, losses: list[float], evals: dict[int, float]) -> None:
    records = [
        {"step": 5 * (i + 1), "epoch": 0.1 * i, "loss": loss, "learning_rate": 1e-4} for i, loss in enumerate(losses)
    ]
    records += [{"step": step, "eval_loss": value} for step, value in evals.items()]
    text = "\n".join(json.dumps(r) for r in sorted(records, key=lambda r: r["step"])) + "\n"
    write_object(parse_location(f"{bucket}/experiments/{name}/metrics.jsonl"), text.encode())
    write_object(
        parse_location(f"{bucket}/experiments/{name}/summary.json"),
        json.dumps({"tokens_seen": 1234, "runtime_seconds": 12.5}).encode(),
    )


def test_sweep_report_from_bucket(bucket, s3_env, tmp_path):
    put_run(bucket, "sweep-alpha-16", [2.0, 1.5, 1.0], {10: 1.7, 15: 1.2})
    put_run(bucket, "sweep-alpha-4", [2.1, 1.9, 1.8], {10: 1.95, 15: 1.9})
    put_run(bucket, "other-run", [3.0], {})
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "report",
            f"{bucket}/experiments/sweep-alpha-*",
            "--out",
            str(tmp_path / "out"),
        ],
        env={**os.environ, **s3_env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("| sweep")]
    # Natural order (4 before 16); only the sweep's runs; final and best losses per run.
    assert rows == [
        "| sweep-alpha-4 | 15 | 1.8000 | 1.9000 | 1.9000 | 1234 | 12.5 |",
        "| sweep-alpha-16 | 15 | 1.0000 | 1.2000 | 1.2000 | 1234 | 12.5 |",
    ]
    png = tmp_path / "out" / "report.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    assert "![loss curves](report.png)" in (tmp_path / "out" / "report.md").read_text()


def test_missing_metrics_is_a_clear_error(bucket, s3_env, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "report", f"{bucket}/experiments/nothing", "--out", str(tmp_path)],
        env={**os.environ, **s3_env},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2 and "has no metrics.jsonl" in result.stderr
