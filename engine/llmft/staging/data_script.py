"""Run a user's data script (the first container of the data staging Job).

The script turns any source into JSONL files in an output folder. It runs as a
child process of this one with `DATASETS_DIR` set to that folder (the chart's
`/downloads/datasets/`, which the tutorial's scripts also write to literally).
When `pip_packages` are given they are installed first with pip into a folder of
their own, put first on the script's `PYTHONPATH`: the only pip at start in the
suite, in this container only, and it needs network access to the package index.
This container has no bucket credentials; the next one validates and uploads.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from llmft.errors import TransientError, UserError
from llmft.progress import human_bytes

log = logging.getLogger("llmft.data")


def install_packages(packages: list[str], target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-cache-dir",
        "--disable-pip-version-check",
        "--no-input",
        "--target",
        str(target),
        *packages,
    ]
    log.info("installing pipPackages for the data script: %s", " ".join(packages))
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise UserError(
            f"pip could not install pipPackages {packages} (exit status {result.returncode}, its "
            "output is above): check the names and versions, and that this pod can reach the "
            "package index"
        )


def run_data_script(
    script: str | Path, output_dir: str | Path, pip_packages: Sequence[str] = (), packages_dir: str | Path | None = None
) -> list[Path]:
    """Run `script` so it writes JSONL files into `output_dir`; return the files it wrote."""
    script, output = Path(script), Path(output_dir)
    if not script.is_file():
        raise UserError(f"data script {script} does not exist (the chart mounts dataScript there)")
    output.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, DATASETS_DIR=str(output), PYTHONUNBUFFERED="1")
    if pip_packages:
        target = Path(packages_dir) if packages_dir else output.parent / ".script-packages"
        install_packages(list(pip_packages), target)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(target), env.get("PYTHONPATH", "")) if p)
    log.info("running the data script %s (output folder %s)", script, output)
    result = subprocess.run([sys.executable, str(script)], env=env, cwd=str(output.parent), check=False)
    if result.returncode != 0:
        # Retried by the Job (exit status 1): a script that downloads may have met a network failure.
        raise TransientError(
            f"the data script {script} failed with exit status {result.returncode} (its error is "
            "above); if it is a bug, fix dataScript and run again"
        )
    written = sorted(p for p in output.rglob("*") if p.is_file())
    if not any(p.name.endswith((".jsonl", ".json")) for p in written):
        raise UserError(
            f"the data script wrote no .jsonl file to {output}: save the data there, e.g. "
            "dataset.to_json(os.path.join(os.environ['DATASETS_DIR'], 'NAME.jsonl'))"
        )
    for path in written:
        log.info("data script wrote %s (%s)", path.relative_to(output), human_bytes(path.stat().st_size))
    return written
