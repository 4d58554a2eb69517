"""The background worker: uploads staged checkpoints one by one while training continues.

- `submit` stages a checkpoint (hard links) and queues it. It returns at once unless
  `max_pending` checkpoints are already staged and not yet uploaded: then it waits,
  logging that it waits (the only way sync ever blocks a training step).
- A checkpoint upload that fails even after the patient per-request retries is tried
  again in rounds until it succeeds, unless a newer checkpoint is already queued: then
  the older one is dropped (the newer one supersedes it), so an outage never blocks
  training for longer than the queue allows.
- After each complete checkpoint, remote retention runs (`apply_retention`).
- On several nodes each node's uploader sends its own part; node 0's also completes the checkpoint
  (manifest once every node's part is there) and runs retention (`llmft.sync.parts`).
- Every `progress_interval` seconds (and after each checkpoint), `logs/` and
  `metrics.jsonl` are copied and uploaded so a sweep can follow the run.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmft import settings as engine_settings
from llmft.run_layout import checkpoint_name
from llmft.storage import Location
from llmft.storage.transfer import TransferSettings
from llmft.sync import staging
from llmft.sync.parts import complete_checkpoint, read_part, upload_part
from llmft.sync.remote_ops import apply_retention, upload_verified_tree

log = logging.getLogger("llmft.sync")


@dataclass
class _Job:
    step: int
    staged: Path
    snapshot: staging.Snapshot
    queued_at: float


def _lower_priority(increment: int) -> None:
    """Give this thread (and the transfer threads it starts, which inherit it) a lower CPU priority.

    On Linux, nice is per thread: hashing and sending checkpoints then yields the CPU to the
    training loop (data loading, the optimizer step on CPU) instead of competing with it.
    `increment` is `LLMFT_SYNC_NICE` (default 10); 0 turns it off.
    """
    if increment <= 0 or not hasattr(os, "setpriority"):
        return
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + increment))
    except OSError as error:
        log.debug("could not lower the upload thread's priority: %s", error)


class BackgroundUploader:
    def __init__(
        self,
        remote: Location,
        staging_root: Path,
        settings: TransferSettings,
        max_pending: int = 2,
        save_total_limit: int | None = None,
        progress_interval: float = 60.0,
        sync_progress: Callable[[], None] | None = None,
        retry_pause: float = 10.0,
        node: int = 0,
        nodes: int = 1,
        token: str = "",
        part_timeout: float = 600.0,
    ):
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.remote = remote
        self.staging_root = Path(staging_root)
        self.settings = settings
        self.max_pending = max_pending
        self.save_total_limit = save_total_limit
        self.progress_interval = progress_interval
        self.sync_progress = sync_progress
        self.retry_pause = retry_pause
        # Several nodes: this node uploads its part; node 0 completes each checkpoint (`llmft.sync.parts`).
        self.node, self.nodes, self.token, self.part_timeout = node, nodes, token, part_timeout
        self.nice_increment = engine_settings.current().sync_nice  # read here: a bad value fails the caller
        self.uploaded: list[int] = []  # steps complete in the bucket, in order
        self.failed: dict[int, str] = {}  # step -> last error, for those given up at close
        self._cond = threading.Condition()
        self._jobs: deque[_Job] = deque()
        self._reserved = 0  # slots taken by submits that are still staging
        self._active: _Job | None = None
        self._closing = False
        self._progress_due = False
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ producer side

    def _pending_steps(self) -> list[int]:
        steps = [job.step for job in self._jobs]
        return ([self._active.step] if self._active else []) + steps

    def start(self) -> None:
        with self._cond:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="llmft-checkpoint-sync", daemon=True)
                self._thread.start()

    def submit(self, checkpoint: Path, step: int) -> None:
        """Stage `checkpoint` and queue its upload; waits only while the queue is full."""
        self.start()
        waited_since = None
        with self._cond:
            if self._closing:
                raise RuntimeError("checkpoint sync is closed; no more checkpoints can be queued")
            while len(self._pending_steps()) + self._reserved >= self.max_pending:
                now = time.monotonic()
                if waited_since is None or now - waited_since >= 60:
                    log.info(
                        "upload queue full (%d pending: %s); the save of checkpoint-%d waits for an upload to finish",
                        self.max_pending,
                        ", ".join(checkpoint_name(s) for s in self._pending_steps()),
                        step,
                    )
                    waited_since = waited_since or now
                self._cond.wait(timeout=5)
            self._reserved += 1
        began = time.monotonic()
        try:
            staged = staging.stage(checkpoint, self.staging_root)
            job = _Job(step, staged, staging.snapshot(staged), time.monotonic())
        finally:
            with self._cond:
                self._reserved -= 1
                self._cond.notify_all()
        with self._cond:
            self._jobs.append(job)
            self._cond.notify_all()
        if waited_since is not None:
            log.info(
                "checkpoint-%d queued for upload after waiting %.1fs for the queue", step, job.queued_at - waited_since
            )
        else:
            log.info(
                "checkpoint-%d queued for upload to %s (staged in %.2fs)", step, self.remote, time.monotonic() - began
            )

    def request_progress_sync(self) -> None:
        with self._cond:
            self._progress_due = True
            self._cond.notify_all()

    def close(self, timeout: float | None = None) -> None:
        """Let queued uploads finish (each gets one more round if failing), then stop the worker."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            if self._pending_steps():
                log.info(
                    "waiting for %d pending checkpoint upload(s): %s",
                    len(self._pending_steps()),
                    ", ".join(checkpoint_name(s) for s in self._pending_steps()),
                )
            thread.join(timeout)
            if thread.is_alive():
                raise RuntimeError(f"checkpoint uploads still running after {timeout}s")

    # ------------------------------------------------------------------ worker side

    def _run(self) -> None:
        _lower_priority(self.nice_increment)
        next_progress = time.monotonic() + self.progress_interval
        while True:
            with self._cond:
                while (
                    not self._jobs and not self._closing and not self._progress_due and time.monotonic() < next_progress
                ):
                    self._cond.wait(timeout=max(0.05, next_progress - time.monotonic()))
                job = self._jobs.popleft() if self._jobs else None
                self._active = job
                if job is None and self._closing:
                    return
                self._progress_due = False
            if job is not None:
                try:
                    self._process(job)
                finally:
                    staging.discard(job.staged)
                    with self._cond:
                        self._active = None
                        self._cond.notify_all()
            self._sync_progress_quietly()  # after a checkpoint, on the timer, or on request
            next_progress = time.monotonic() + self.progress_interval

    def _sync_progress_quietly(self) -> None:
        if self.sync_progress is None:
            return
        try:
            self.sync_progress()
        except Exception as error:  # noqa: BLE001 - progress is best effort; the final sync is verified
            log.warning("syncing logs and metrics to %s failed (%s); will try again later", self.remote, error)

    def _process(self, job: _Job) -> None:
        name = checkpoint_name(job.step)
        rounds = 0
        while True:
            rounds += 1
            try:
                self._upload(job)
                self.uploaded.append(job.step)
                break
            except Exception as error:  # noqa: BLE001 - any failure: retry, supersede or report
                with self._cond:
                    superseded = bool(self._jobs)
                    closing = self._closing
                if superseded:
                    log.error(
                        "upload of %s to %s failed (%s); a newer checkpoint is queued, so %s is dropped",
                        name,
                        self.remote,
                        error,
                        name,
                    )
                    return
                if closing and rounds >= 2:
                    log.error("upload of %s to %s failed (%s); giving up", name, self.remote, error)
                    self.failed[job.step] = str(error)
                    return
                log.error(
                    "upload of %s to %s failed (%s); training continues, next try in %.0fs",
                    name,
                    self.remote,
                    error,
                    self.retry_pause,
                )
                with self._cond:
                    self._cond.wait_for(lambda: bool(self._jobs) or self._closing, timeout=self.retry_pause)
        if self.node != 0:
            return  # node 0 owns the checkpoint's manifest and retention
        try:
            apply_retention(self.remote, job.step, self.save_total_limit, self.settings)
        except Exception as error:  # noqa: BLE001 - retention is retried after the next checkpoint
            log.warning("remote retention after %s failed (%s); will try again after the next checkpoint", name, error)

    def _upload(self, job: _Job) -> None:
        name = checkpoint_name(job.step)
        while True:
            if self.nodes > 1:
                upload_part(job.staged, self.remote.child(name), self.node, self.token, self.settings)
            else:
                upload_verified_tree(job.staged, self.remote.child(name), self.settings, label=f"upload {name}")
            now = staging.snapshot(job.staged)
            if now == job.snapshot:
                break
            log.warning("%s changed while it was uploading (a file rewritten in place); uploading again", name)
            job.snapshot = now
        if self.nodes > 1 and self.node == 0:
            complete_checkpoint(
                self.remote.child(name),
                self.nodes,
                self.token,
                self.settings,
                self.part_timeout,
                abandon=lambda missing: self._moved_past(job.step, missing),
            )

    def _moved_past(self, step: int, missing: list[int]) -> bool:
        """Whether every missing node already sent its part of a newer checkpoint queued here: it dropped
        this one (a failing upload superseded), so waiting for it would only hold the queue."""
        with self._cond:
            newer = [queued.step for queued in self._jobs if queued.step > step]
        return any(
            all(
                read_part(self.remote.child(checkpoint_name(later)), node, self.token, self.settings) is not None
                for node in missing
            )
            for later in newer
        )
