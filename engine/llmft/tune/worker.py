"""The tuner: one worker of an experiment, training up to `slots` trials at a time as processes.

`llmft tune SPEC` is worker 0 with `parallel_trial_count` slots. On the cluster, each pod of the llm-tune
chart's Indexed Job is worker `$JOB_COMPLETION_INDEX` with one slot, and all share one study storage.

Each turn: resume this worker's RUNNING trials left by a previous life, claim WAITING trials while
slots are free (unless the experiment failed or reached its goal), and record every trial that ends:
COMPLETE with its objective, PRUNED when the pruning callback stopped it, FAIL when its process failed
`trial_retries + 1` times (a config the engine rejects fails at once). The worker ends when no trial is
left for it; experiment.json is rewritten after every change.
"""

from __future__ import annotations

import fcntl
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from llmft.errors import UserError
from llmft.processes import kill_tree
from llmft.tune import metrics, results, trials
from llmft.tune import study as studies
from llmft.tune.spec import TuneSpec

log = logging.getLogger("llmft.tune")

POLL_SECONDS = 1.0
CONFIG_ERROR_STATUS = 2  # llmft's exit status for a user error: retrying cannot help
EXPERIMENT_FAILED_STATUS = 3  # more trials failed than max_failed_trial_count (the chart fails the Job on it)


@dataclass
class Running:
    number: int
    prepared: trials.Prepared
    process: subprocess.Popen
    attempts: int = 1
    started: float = field(default_factory=time.monotonic)
    evaluating: bool = False  # training ended; the process is the evaluation of its final model


class Worker:
    def __init__(
        self,
        spec: TuneSpec,
        experiment_dir: Path,
        index: int = 0,
        slots: int | None = None,
        environment: dict[str, str] | None = None,
    ):
        self.spec = spec
        self.dir = experiment_dir
        self.index = index
        self.name = str(index)
        self.slots = slots or spec.tune.parallel_trial_count
        self.environment = environment or {}
        self.storage_url = spec.storage_url() or studies.journal_url(experiment_dir)
        self.running: dict[int, Running] = {}
        self.stopping = False

    # ------------------------------------------------------------------------------------------ main loop

    def run(self) -> int:
        self.dir.mkdir(parents=True, exist_ok=True)
        lock = self._lock()
        try:
            return self._run()
        finally:
            lock.close()

    def _run(self) -> int:
        (self.dir / results.SPEC).write_text(yaml.safe_dump(self.spec.model_dump(mode="json"), sort_keys=False))
        storage = studies.open_storage(self.storage_url)
        self.study = studies.prepare(self.spec, storage, self.index)
        resume = studies.own_running(self.study, self.name)
        log.info(
            "experiment %s in %s: study storage %s; worker %s with %d slot(s)%s",
            self.spec.name,
            self.dir,
            studies.masked(self.storage_url),
            self.name,
            self.slots,
            f"; resuming trial(s) {', '.join(map(str, resume))}" if resume else "",
        )
        previous = {signal.SIGTERM: signal.signal(signal.SIGTERM, self._stop)}
        try:
            while True:
                while len(self.running) < self.slots and not self.stopping:
                    number: int | None
                    if resume:
                        number = resume.pop(0)
                    elif self._experiment_state() == "running":  # not failed, goal not reached
                        number = studies.claim(self.study, self.name)
                    else:
                        number = None
                    if number is None:
                        break
                    self._start(number)
                    self._publish()
                if not self.running or self.stopping:
                    break
                time.sleep(POLL_SECONDS)
                for number in [n for n, r in self.running.items() if r.process.poll() is not None]:
                    self._ended(self.running[number])
        except KeyboardInterrupt:
            self.stopping = True
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            self._stop_children()
        self._publish()
        if self.stopping:
            log.info("stopped; trials still running stay RUNNING and resume when this worker starts again")
            return 130
        final = results.collect(self.study, self.spec, self.dir)
        log.info(
            "worker %s done: experiment %s (%s)",
            self.name,
            final["state"],
            f"best trial {final['best']}" if final["best"] is not None else "no completed trial",
        )
        return EXPERIMENT_FAILED_STATUS if final["state"] == "failed" else 0

    def _experiment_state(self) -> str:
        return results.experiment_state(results.collect(self.study, self.spec, self.dir)["trials"], self.spec)

    def _lock(self):
        folder = self.dir / "workers"
        folder.mkdir(exist_ok=True)
        handle = open(folder / f"{self.name}.lock", "a+")  # noqa: SIM115 - held for the worker's life
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(
                f"worker {self.name} of experiment {self.spec.name} is already running on {self.dir}; "
                "start another worker with --worker-index, or wait for it to end"
            ) from None
        return handle

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def _stop_children(self) -> None:
        for running in self.running.values():
            if running.process.poll() is None:
                running.process.terminate()
        for running in self.running.values():
            try:
                running.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                kill_tree(running.process.pid)
                running.process.wait()

    # ------------------------------------------------------------------------------------------ one trial

    def _start(self, number: int) -> None:
        values = studies.suggest(self.study, number, self.spec)
        try:
            prepared = trials.prepare(self.spec, number, values, self.dir)
        except UserError as error:
            log.error("trial %d: the engine rejects this combination of values %s: %s", number, values, error)
            studies.finish(self.study, number, "failed", attrs={studies.ERROR: str(error)})
            return
        process = trials.start(prepared, self.storage_url, self.environment)
        log.info(
            "trial %d started (pid %d): %s; log %s",
            number,
            process.pid,
            ", ".join(f"{k}={v}" for k, v in values.items()),
            prepared.folder / trials.LOG,
        )
        self.running[number] = Running(number, prepared, process)

    def _ended(self, running: Running) -> None:
        number, status = running.number, running.process.returncode
        folder = running.prepared.folder
        frozen = self.study.get_trials(deepcopy=False)[number]
        pruned = trials.was_pruned(folder) or frozen.user_attrs.get(trials.PRUNED_ATTR)
        if status == 0 and not pruned and self.spec.tune.evaluation is not None and not running.evaluating:
            running.evaluating, running.attempts = True, 1
            running.process = self._launch(running)
            log.info("trial %d trained; evaluating its final model (log %s)", number, folder / trials.EVALUATION_LOG)
            return
        if status == 0:
            del self.running[number]
            recorded = self._metrics(folder / trials.OUTPUT)
            if pruned:
                studies.finish(self.study, number, "pruned", attrs=recorded)
                log.info("trial %d pruned at step %d", number, pruned["step"])
            else:
                source = self.spec.objective_source()
                value = metrics.final_value(source, folder / trials.OUTPUT)
                if value is None and source.step_key == source.name and frozen.intermediate_values:
                    # The run finished in the bucket before this pod (a restarted worker): its metric was
                    # reported to the study at every evaluation, the last report is the final value.
                    value = frozen.intermediate_values[max(frozen.intermediate_values)]
                if value is None:
                    log_name = trials.EVALUATION_LOG if running.evaluating else trials.LOG
                    error = (
                        f"the run finished without writing {self.spec.tune.objective.metric} (see {folder / log_name})"
                    )
                    studies.finish(self.study, number, "failed", attrs={**recorded, studies.ERROR: error})
                    log.error("trial %d failed: %s", number, error)
                else:
                    studies.finish(self.study, number, "complete", value, attrs=recorded)
                    log.info("trial %d complete: %s = %.5g", number, self.spec.tune.objective.metric, value)
        elif status != CONFIG_ERROR_STATUS and running.attempts <= self.spec.tune.trial_retries and not self.stopping:
            log.warning(
                "trial %d: %s process exited with status %s; restarting it (attempt %d), it resumes from %s",
                number,
                "evaluation" if running.evaluating else "training",
                status,
                running.attempts + 1,
                "the samples already scored" if running.evaluating else "its last checkpoint",
            )
            running.process = self._launch(running)
            running.attempts += 1
            return
        elif self.stopping:
            return  # stopped by us: stays RUNNING, resumed by this worker's next life
        else:
            del self.running[number]
            what, log_name = ("evaluation", trials.EVALUATION_LOG) if running.evaluating else ("training", trials.LOG)
            error = f"{what} process exited with status {status} (see {folder / log_name})"
            studies.finish(self.study, number, "failed", attrs={studies.ERROR: error})
            log.error("trial %d failed: %s", number, error)
        self._publish()

    def _launch(self, running: Running):
        """(Re)start the trial's current process: its training, or the evaluation of its final model."""
        evaluation = trials.evaluation_command(self.spec, running.number, self.dir) if running.evaluating else None
        return trials.start(running.prepared, self.storage_url, self.environment, evaluation)

    def _metrics(self, output: Path) -> dict:
        """User attributes of a finished trial: its additional metrics and where its outputs are."""
        found: dict[str, object] = {studies.OUTPUTS: results.outputs_of(output)}
        for name in self.spec.tune.objective.additional_metrics:
            value = metrics.final_value(self.spec.metric_source(name), output)
            if value is not None:
                found[name] = value
        return found

    def _publish(self) -> None:
        results.publish(results.collect(self.study, self.spec, self.dir), self.dir, self.spec)


def default_experiment_dir(name: str) -> Path:
    from llmft.local.state import state_dir

    return state_dir() / "tune" / name


def worker_index(explicit: int | None) -> int:
    """--worker-index, else the Indexed Job's JOB_COMPLETION_INDEX, else 0."""
    if explicit is not None:
        return explicit
    value = os.environ.get("JOB_COMPLETION_INDEX", "0")
    if not value.isdigit():
        raise UserError(f"JOB_COMPLETION_INDEX must be a number, got {value!r}")
    return int(value)
