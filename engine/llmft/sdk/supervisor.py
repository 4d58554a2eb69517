"""The local backend's job supervisor: `python -m llmft.sdk.supervisor JOB_DIR`, detached from the notebook.

It runs the job's steps (job.json) in order, each as its own process (`llmft local CHART -f VALUES` or the
step's command) with stdout and stderr in `logs/<step>.log`, and records each step's state in
`status/<step>.json` (state, exit code, start and end times). A step that fails stops the job; the steps
after it stay Pending. SIGTERM (`Client.delete_job`) is passed to the running step, which stops its pod's
processes as `llmft local` does on a pod deletion.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path


def write_json(path: Path, data: dict) -> None:
    partial = path.with_suffix(".part")
    partial.write_text(json.dumps(data))
    partial.replace(path)


def run(job_dir: Path) -> int:
    job = json.loads((job_dir / "job.json").read_text())
    (job_dir / "status").mkdir(exist_ok=True)
    (job_dir / "logs").mkdir(exist_ok=True)
    current: list[subprocess.Popen] = []
    stopping = False

    def terminate(*_):
        nonlocal stopping
        stopping = True
        for process in current:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, terminate)
    signal.signal(signal.SIGINT, terminate)
    for step in job["steps"]:
        if stopping:
            return 143
        status_path = job_dir / "status" / f"{step['name']}.json"
        started = time.time()
        write_json(status_path, {"state": "Running", "started": started, "pid": None})
        with (job_dir / "logs" / f"{step['name']}.log").open("ab") as log:
            process = subprocess.Popen(step["argv"], stdout=log, stderr=subprocess.STDOUT, cwd=job.get("cwd") or None)
            current[:] = [process]
            write_json(status_path, {"state": "Running", "started": started, "pid": process.pid})
            code = process.wait()
        state = "Succeeded" if code == 0 and not stopping else "Failed"
        reason = "deleted" if stopping else ("" if code == 0 else f"exit code {code}")
        write_json(
            status_path,
            {"state": state, "started": started, "finished": time.time(), "exit_code": code, "reason": reason},
        )
        if code != 0 or stopping:
            return code or 143
    return 0


if __name__ == "__main__":
    sys.exit(run(Path(sys.argv[1])))
