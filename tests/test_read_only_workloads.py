"""The staging workloads run as the charts deploy them: root filesystem read-only, writes only to volumes.

`llmft local` enforces a container's `readOnlyRootFilesystem` (llmft.local.runner): its process starts in a
folder that stands in for the image (mode 0555, also its HOME and TMPDIR unless the chart sets them), none of
the caller's home, temp or cache folders, and the pod fails if anything was written there. Each chart here runs
with its default security values; the finetune, inference and evaluate charts do the same in their own local-run
tests (tests/test_finetune_overrides.py, tests/test_inference_chart_local.py, tests/test_evaluate_training.py).
The tune chart's workers are the finetune engine's processes and have no local-run test of their own.
"""

from __future__ import annotations

import os
import subprocess
import sys

from harness import CHARTS, OVERRIDES

from llmft.storage import list_objects, parse_location, read_manifest


def local(chart: str, values: str, sets: list[str], env: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "llmft", "local", str(CHARTS / chart), "-f", str(OVERRIDES / chart / values)]
    for item in sets:
        command += ["--set", item]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_model_and_data_charts_run_with_a_read_only_root(bucket, s3_env, tiny_model_dir, tmp_path):
    env = {**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state")}
    model = f"{bucket}/models/tiny"
    result = local(
        "download-model-to-bucket",
        "tiny-random-model-to-minio.yaml",
        [f"modelID={tiny_model_dir}", f"bucketModelPath={model}"],
        env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_manifest(parse_location(model)) is not None

    data = f"{bucket}/datasets/tiny"
    result = local("download-data-to-bucket", "tiny-synthetic-to-minio.yaml", [f"bucketDataDir={data}"], env)
    assert result.returncode == 0, result.stderr[-3000:]
    assert {"tiny-synthetic-eval.jsonl", "tiny-synthetic-train.jsonl"} <= set(list_objects(parse_location(data)))
    assert "read-only root filesystem" not in result.stderr
