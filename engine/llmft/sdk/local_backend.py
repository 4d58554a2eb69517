"""The local backend: a job is a folder under the local runner's state dir, run by a detached supervisor.

```
$LLMFT_STATE_DIR/sdk/jobs/<name>/
  job.json                 kind, steps (name, chart, release, command), checkpointsRemote, created
  values/<step>.yaml       the values each chart was rendered with (`llmft local CHART -f` reads them)
  logs/<step>.log          each step's output
  status/<step>.json       state, exit code, start and end (written by the supervisor)
  supervisor.pid           the detached `python -m llmft.sdk.supervisor` (SIGTERM stops the running step)
```

Each chart step runs as `llmft local CHART -f values/<step>.yaml --name RELEASE`, so it is exactly the local
runner's run of the rendered chart; a tune step runs `llmft tune SPEC` (the local way to run an experiment),
and a server step keeps running until `delete_job`. Bucket storage is the runner's: BUCKET_STORAGE_HOST if set,
else the embedded S3 server; the supervisor gets the credentials in its environment, never in a file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import yaml

from llmft.errors import UserError
from llmft.processes import kill_tree
from llmft.sdk import jobs as J
from llmft.sdk.errors import JobNotFound
from llmft.sdk.plan import Plan


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class LocalBackend:
    name = "local"

    def __init__(self, state_dir: str | Path | None = None):
        from llmft.local.state import state_dir as runner_state_dir

        self.root = (Path(state_dir) if state_dir else runner_state_dir()) / "sdk" / "jobs"
        self._bucket_env: dict[str, str] | None = None
        self._children: list[subprocess.Popen] = []  # supervisors this process started (reaped when read)

    # ------------------------------------------------------------------------------------------ bucket

    def bucket_env(self) -> dict[str, str]:
        """The bucket the local runner uses (starting the embedded S3 server when none is configured)."""
        if self._bucket_env is None:
            from llmft.local.runner import bucket_environment

            self._bucket_env = bucket_environment()[0]
        return self._bucket_env

    @contextlib.contextmanager
    def bucket(self) -> Iterator[None]:
        """Run bucket reads of this process against the local runner's bucket."""
        env = self.bucket_env()
        saved = {name: os.environ.get(name) for name in env}
        os.environ.update(env)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value

    # ------------------------------------------------------------------------------------------ submit

    def submit(self, plan: Plan, charts: Path) -> None:
        folder = self.root / plan.name
        if folder.exists():
            raise UserError(
                f"a job named {plan.name} exists already ({folder}): delete it first "
                f"(Client().delete_job({plan.name!r})) or choose another name"
            )
        (folder / "values").mkdir(parents=True)
        steps = []
        for step in plan.steps:
            values_file = folder / "values" / f"{step.name}.yaml"
            values_file.write_text(yaml.safe_dump(step.values, sort_keys=False))
            if plan.kind == "tune" and step.chart == "llm-tune":
                spec_file = folder / "spec.yaml"
                spec_file.write_text(yaml.safe_dump(plan.spec, sort_keys=False))
                argv = [sys.executable, "-m", "llmft", "tune", str(spec_file), "--dir", str(folder / "experiment")]
            else:
                argv = [sys.executable, "-m", "llmft", "local", str(charts / step.chart), "-f", str(values_file)]
                argv += ["--name", step.release]
                if plan.port:
                    argv += ["--port", str(plan.port)]
            steps.append({"name": step.name, "chart": step.chart, "release": step.release, "argv": argv})
        record = {
            "name": plan.name,
            "kind": plan.kind,
            "created": time.time(),
            "checkpoints_remote": plan.checkpoints_remote,
            "total_steps": plan.total_steps,
            "port": plan.port,
            "steps": steps,
        }
        (folder / "job.json").write_text(json.dumps(record, indent=2))
        env = {**os.environ, **self.bucket_env(), "PYTHONUNBUFFERED": "1"}
        with (folder / "supervisor.log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "llmft.sdk.supervisor", str(folder)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                start_new_session=True,
            )
        (folder / "supervisor.pid").write_text(str(process.pid))
        self._children.append(process)

    # ------------------------------------------------------------------------------------------ read

    def _folder(self, name: str) -> Path:
        folder = self.root / name
        if not (folder / "job.json").is_file():
            raise JobNotFound(f"no job named {name} on this machine (looked in {self.root}); list_jobs() shows them")
        return folder

    def _supervisor_alive(self, folder: Path) -> bool:
        for child in self._children:
            child.poll()  # reap our own finished supervisors so they do not linger as zombies
        try:
            pid = int((folder / "supervisor.pid").read_text())
        except (OSError, ValueError):
            return False
        return _alive(pid)

    def record(self, name: str) -> dict:
        return json.loads((self._folder(name) / "job.json").read_text())

    def get(self, name: str, with_progress: bool = True) -> J.Job:
        folder = self._folder(name)
        record = json.loads((folder / "job.json").read_text())
        alive = self._supervisor_alive(folder)
        steps = []
        for step in record["steps"]:
            status_file = folder / "status" / f"{step['name']}.json"
            status = json.loads(status_file.read_text()) if status_file.is_file() else {}
            state = status.get("state", J.PENDING)
            reason = status.get("reason", "")
            if state == J.RUNNING and not alive:
                state, reason = J.FAILED, "the job's supervisor process ended while this step ran"
            steps.append(
                J.Step(
                    name=step["name"],
                    state=state,
                    exit_code=status.get("exit_code"),
                    reason=reason,
                    started=status.get("started"),
                    finished=status.get("finished"),
                )
            )
        job = J.Job(
            name=record["name"],
            kind=record["kind"],
            state=J.job_state(steps),
            steps=steps,
            created=record["created"],
            checkpoints_remote=record.get("checkpoints_remote"),
        )
        failed = next((s for s in steps if s.state == J.FAILED), None)
        if failed:
            job.reason = f"step {failed.name} failed: {failed.reason or 'exit code ' + str(failed.exit_code)}"
        if record.get("port"):
            job.url = f"http://127.0.0.1:{record['port']}/v1"
        if with_progress and record["kind"] == "train":
            node = steps[-1]
            if node.state in (J.RUNNING, J.SUCCEEDED, J.FAILED) and node.started:
                job.progress = J.progress_from_rows(self.metrics(record), record.get("total_steps"), node.started)
        return job

    def list_jobs(self) -> list[J.Job]:
        if not self.root.is_dir():
            return []
        names = sorted(p.name for p in self.root.iterdir() if (p / "job.json").is_file())
        return [self.get(name, with_progress=False) for name in names]

    def metrics(self, record: dict) -> list[dict]:
        remote = record.get("checkpoints_remote")
        if not remote:
            return []
        from llmft.sdk.metrics import read_metrics

        with self.bucket():
            return read_metrics(remote)

    def step_names(self, name: str) -> list[str]:
        return [step["name"] for step in self.record(name)["steps"]]

    def logs(self, name: str, step: str, follow: bool) -> Iterator[str]:
        folder = self._folder(name)
        path = folder / "logs" / f"{step}.log"
        position = 0
        buffer = ""
        while True:
            if path.is_file():
                with path.open("r", errors="replace") as handle:
                    handle.seek(position)
                    chunk = handle.read()
                    position = handle.tell()
                buffer += chunk
                *lines, buffer = buffer.split("\n")
                yield from lines
            if not follow:
                break
            state = self.get(name, with_progress=False).step(step).state
            if state in (J.SUCCEEDED, J.FAILED) or (state == J.PENDING and self._finished(folder)):
                with contextlib.suppress(OSError):
                    with path.open("r", errors="replace") as handle:
                        handle.seek(position)
                        buffer += handle.read()
                break
            time.sleep(0.5)
        if buffer:
            yield from buffer.rstrip("\n").split("\n")

    def _finished(self, folder: Path) -> bool:
        return not self._supervisor_alive(folder)

    # ------------------------------------------------------------------------------------------ delete

    def delete(self, name: str) -> None:
        folder = self._folder(name)
        if self._supervisor_alive(folder):
            pid = int((folder / "supervisor.pid").read_text())
            os.kill(pid, signal.SIGTERM)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and self._supervisor_alive(folder):
                time.sleep(0.2)
            if self._supervisor_alive(folder):
                kill_tree(pid)
        shutil.rmtree(folder, ignore_errors=True)
