"""`CheckpointSync`: restore from the bucket at start, stream checkpoints while training, finish verified.

The engine's use, top to bottom::

    sync = CheckpointSync(remote, output_dir, save_total_limit)
    restored = sync.restore()            # before loading the model
    if restored.final_complete: exit 0   # the run already finished: idempotent re-apply
    trainer.add_callback(sync.callback())
    trainer.train(resume_from_checkpoint=...)   # picks up restored.checkpoint
    ... write checkpoint-final/, metrics.jsonl, summary.json ...
    sync.finish()                        # raises unless every final output is verified in the bucket
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

from llmft import settings as engine_settings
from llmft import timeline
from llmft.errors import UserError
from llmft.run_layout import (
    FINAL,
    FINAL_ADAPTER,
    FINAL_FILES,
    FINAL_MERGED,
    FINAL_MODELS,
    FINAL_TREES,
    LOGS,
    MANIFEST_NAME,
    PROGRESS_FILES,
    PROGRESS_TREES,
    RESTORE_RESULT_FILE,
    RUN_COMPLETE_MARKER,
    SYNC_STAGING_DIR,
    checkpoint_name,
    checkpoint_step,
)
from llmft.storage import BucketAccessError, download_tree
from llmft.storage.transfer import (
    TransferSettings,
    copy_remote_tree,
    delete_object,
    read_object,
    write_object,
)
from llmft.sync import forked, staging
from llmft.sync.remote_ops import (
    VerificationError,
    remove_incomplete_checkpoints,
    upload_verified_file,
    upload_verified_tree,
)
from llmft.sync.remote_run import parse_remote, scan
from llmft.sync.uploader import BackgroundUploader

log = logging.getLogger("llmft.sync")


def background_settings() -> TransferSettings:
    """Transfer settings patient enough to ride out an S3 outage of a few minutes.

    By default 12 attempts per request with backoff doubling from 2 s up to 30 s: about four
    minutes of retrying before one request gives up (and the checkpoint is then tried again).
    """
    knobs = engine_settings.current()
    return TransferSettings(
        attempts=knobs.sync_attempts, backoff_seconds=knobs.sync_backoff, max_backoff_seconds=knobs.sync_max_backoff
    )


@dataclass
class RestoreResult:
    """What `restore()` found. `checkpoint` is the local folder to resume from (None: start fresh)."""

    remote: str
    final_complete: bool = False
    checkpoint: Path | None = None
    step: int | None = None
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["checkpoint"] = str(self.checkpoint) if self.checkpoint else None
        return json.dumps(data)

    @classmethod
    def from_json(cls, text: str) -> RestoreResult:
        data = json.loads(text)
        data["checkpoint"] = Path(data["checkpoint"]) if data["checkpoint"] else None
        return cls(**data)


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _is_world_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _nodes() -> tuple[int, int]:
    """(this node's rank, nodes) in the current rendezvous (torchrun's GROUP_RANK, GROUP_WORLD_SIZE)."""
    return int(os.environ.get("GROUP_RANK", "0") or 0), int(os.environ.get("GROUP_WORLD_SIZE", "1") or 1)


# Restores started early (`CheckpointSync.restore_in_background`), by (remote, output folder).
_early_restores: dict[tuple[str, Path], Future] = {}
_early_lock = threading.Lock()


class CheckpointSync:
    """Checkpoint streaming for one run: see the module docstring and ARCHITECTURE.md."""

    def __init__(
        self,
        remote: str,
        output_dir: str | os.PathLike,
        save_total_limit: int | None = None,
        max_pending_uploads: int | None = None,
        progress_interval: float | None = None,
        settings: TransferSettings | None = None,
        retry_pause: float | None = None,
        key_path: str = "run_conf.checkpoints_remote",
        logs_remote: str | None = None,
        skip_download: bool = False,
        part_timeout: float = 600.0,
    ):
        self.remote = parse_remote(remote, key_path)
        self.output_dir = Path(output_dir)
        self.save_total_limit = save_total_limit
        knobs = engine_settings.current()
        self.max_pending = max_pending_uploads or knobs.sync_max_pending
        if self.max_pending < 1:
            raise UserError(f"max_pending_uploads must be at least 1, got {self.max_pending}")
        self.progress_interval = progress_interval or knobs.sync_interval
        self.retry_pause = retry_pause if retry_pause is not None else knobs.sync_retry_pause
        self.settings = settings or background_settings()
        self._uploader: BackgroundUploader | None = None
        # TensorBoard logs go to run_conf.logs_remote when set, else next to the checkpoints.
        self.logs_remote = parse_remote(logs_remote, "run_conf.logs_remote") if logs_remote else None
        self.skip_download = skip_download
        # Several nodes: the attempt every node's part manifests carry (`llmft.sync.parts`), agreed in restore().
        self.token = ""
        self.part_timeout = part_timeout

    def _tree_location(self, name: str):
        return self.logs_remote if name == LOGS and self.logs_remote is not None else self.remote.child(name)

    @property
    def staging_root(self) -> Path:
        return self.output_dir / SYNC_STAGING_DIR

    # ------------------------------------------------------------------ restore

    def _early_key(self) -> tuple[str, Path]:
        return str(self.remote), self.output_dir.expanduser().resolve()

    def restore_in_background(self, separate_process: bool = False) -> bool:
        """Start `restore()`'s download now, in the background, so it overlaps the imports and the data checks.

        The later `restore()` of a CheckpointSync for the same remote and output folder waits for
        it and returns its result (or raises its error). Single-process runs only (with several, the
        node's processes coordinate the download through accelerate, which is imported later);
        returns whether it started. `separate_process`: download in a forked child (`llmft.sync.forked`:
        the imports beside it then do not hold up its transfer threads) when this process has one thread.
        """
        if _world_size() > 1 or self.output_dir.is_file():
            return False
        future: Future = Future()
        with _early_lock:
            if self._early_key() in _early_restores:
                return False
            _early_restores[self._early_key()] = future

        timeline.mark("restore_started")
        child = None
        if separate_process and forked.can_fork():
            child = forked.ForkedCall(lambda: self._restore_here().to_json(), name="checkpoint restore")

        def work() -> None:
            try:
                future.set_result(RestoreResult.from_json(str(child.result())) if child else self._restore_here())
            except BaseException as error:  # noqa: BLE001 - handed to the thread that waits in restore()
                future.set_exception(error)
            finally:
                timeline.mark("restore_done")

        threading.Thread(target=work, name="llmft-restore", daemon=True).start()
        return True

    def restore(self) -> RestoreResult:
        """Bring the newest complete remote checkpoint into `output_dir` (see `_restore_here`).

        With several processes, the local main process of each node downloads while the
        others wait, then they read its result.
        """
        with _early_lock:
            early = _early_restores.pop(self._early_key(), None)
        if early is not None:
            return early.result()
        if _world_size() <= 1:
            timeline.mark("restore_started")
            try:
                return self._restore_here()
            finally:
                timeline.mark("restore_done")
        from accelerate import PartialState

        state = PartialState()
        result_file = self.output_dir / RESTORE_RESULT_FILE
        with state.local_main_process_first():
            if state.is_local_main_process:
                result = self._restore_here()
                if _nodes()[1] > 1:
                    self._drop_local_checkpoints(result)
                self.output_dir.mkdir(parents=True, exist_ok=True)
                scratch = result_file.with_suffix(".tmp")
                scratch.write_text(result.to_json())
                os.replace(scratch, result_file)
            else:
                result = RestoreResult.from_json(result_file.read_text())
        if _nodes()[1] > 1:
            import uuid

            from accelerate.utils import broadcast_object_list

            token = [uuid.uuid4().hex]
            broadcast_object_list(token, from_process=0)
            self.token = token[0]
        return result

    def _drop_local_checkpoints(self, result: RestoreResult) -> None:
        """On several nodes the bucket decides where every rank resumes: a local checkpoint other than the
        restored one (this pod's earlier processes wrote it, another node's part may be missing) goes."""
        import shutil

        if self.skip_download or not self.output_dir.is_dir():
            return
        for path in sorted(self.output_dir.iterdir()):
            if checkpoint_step(path.name) is not None and path.is_dir() and path != result.checkpoint:
                log.info("removing local %s: not the bucket's newest complete checkpoint", path.name)
                shutil.rmtree(path, ignore_errors=True)

    def _restore_here(self) -> RestoreResult:
        staging.discard(self.staging_root)
        result = RestoreResult(remote=str(self.remote))
        if self.skip_download:
            log.warning(
                "debug.skip_checkpoint_download is set: not resuming from %s; training starts from step 0 "
                "and its checkpoints are uploaded there",
                self.remote,
            )
            return result
        run = scan(self.remote, self.settings)
        finished, why = run.finished()
        if finished and run.marker is not None:
            outputs = ", ".join(run.marker.get("trees", []) + run.marker.get("files", []))
            log.info(
                "%s already holds a finished run (completed %s; outputs: %s): nothing to train",
                self.remote,
                run.marker.get("finished", "?"),
                outputs,
            )
            result.final_complete = True
            return result
        if run.marker is not None:
            log.warning("%s has a run-complete marker but %s; resuming training to rebuild them", self.remote, why)
        for step in sorted(run.incomplete, reverse=True):
            note = f"{checkpoint_name(step)} ({run.incomplete[step]} files, no manifest: its upload did not finish)"
            result.skipped.append(note)
            log.warning("ignoring incomplete remote %s", note)
        for step in sorted(run.complete, reverse=True):
            name = checkpoint_name(step)
            target = self.output_dir / name
            try:
                report = download_tree(self.remote.child(name), target, self.settings, label=f"download {name}")
            except BucketAccessError:
                raise  # the bucket itself fails: an older checkpoint cannot be read either
            except UserError as error:  # this checkpoint is bad (corrupted, incomplete, unsafe keys)
                result.skipped.append(f"{name} (could not be restored: {error})")
                log.error("remote %s could not be restored (%s); trying an older checkpoint", name, error)
                continue
            assert report.manifest is not None  # download_tree returns the manifest it followed
            self._remove_extras(target, set(report.manifest.files))
            result.checkpoint, result.step = target, step
            break
        self._log_restore(result)
        return result

    @staticmethod
    def _remove_extras(folder: Path, listed: set[str]) -> None:
        """A local folder left by an earlier attempt may hold files the checkpoint does not have."""
        for path in sorted(folder.rglob("*"), reverse=True):
            relative = path.relative_to(folder).as_posix()
            if path.is_file() and relative not in listed and path.name != MANIFEST_NAME:
                path.unlink()

    def _log_restore(self, result: RestoreResult) -> None:
        skipped = f"; skipped: {'; '.join(result.skipped)}" if result.skipped else ""
        if result.checkpoint is None or result.step is None:
            log.info("no complete checkpoint in %s: training starts from step 0%s", self.remote, skipped)
            return
        log.info(
            "resuming from %s/checkpoint-%d (step %d), restored into %s%s",
            self.remote,
            result.step,
            result.step,
            result.checkpoint,
            skipped,
        )
        newer = sorted(
            step
            for path in self.output_dir.iterdir()
            if (step := checkpoint_step(path.name)) is not None and step > result.step
        )
        if newer:
            log.warning(
                "local checkpoints newer than the bucket's exist in %s (%s); they were never uploaded completely",
                self.output_dir,
                ", ".join(checkpoint_name(s) for s in newer),
            )

    # ------------------------------------------------------------------ during training

    def callback(self):
        """The `transformers.TrainerCallback` that streams each saved checkpoint to the bucket."""
        from llmft.sync.callback import SyncCallback

        return SyncCallback(self)

    def _ensure_uploader(self) -> BackgroundUploader:
        if self._uploader is None:
            staging.discard(self.staging_root)
            node, nodes = _nodes()
            self._uploader = BackgroundUploader(
                self.remote,
                self.staging_root,
                self.settings,
                max_pending=self.max_pending,
                save_total_limit=self.save_total_limit,
                progress_interval=self.progress_interval,
                sync_progress=self.sync_progress if node == 0 else None,
                retry_pause=self.retry_pause,
                node=node,
                nodes=nodes,
                token=self.token,
                part_timeout=self.part_timeout,
            )
            self._uploader.start()
        return self._uploader

    def start_background(self) -> None:
        """Start the worker (periodic logs/metrics sync) before the first checkpoint exists."""
        self._ensure_uploader()

    def enqueue(self, checkpoint: Path, step: int) -> None:
        """Stage `checkpoint` and queue its upload (waits only when the queue is full)."""
        self._ensure_uploader().submit(Path(checkpoint), step)

    def request_progress_sync(self) -> None:
        if self._uploader is not None:
            self._uploader.request_progress_sync()

    def sync_progress(self) -> None:
        """Copy and upload `logs/` and `metrics.jsonl` (they keep growing, so a snapshot goes up).

        Best effort with few retries: it runs again on the next tick, and must not hold
        the worker (and so the checkpoint uploads) through an outage.
        """
        settings = dataclasses.replace(self.settings, attempts=min(self.settings.attempts, 2))
        scratch = self.staging_root / "progress"
        for name in PROGRESS_TREES:
            if (self.output_dir / name).is_dir():
                copy = staging.copy_snapshot(self.output_dir / name, scratch / name)
                upload_verified_tree(copy, self._tree_location(name), settings, label=f"upload {name}")
        for name in PROGRESS_FILES:
            if (self.output_dir / name).is_file():
                copy = staging.copy_snapshot(self.output_dir / name, scratch / name)
                upload_verified_file(copy, self.remote.child(name), settings)

    # ------------------------------------------------------------------ the end

    def finish(self) -> dict:
        """Wait for pending uploads, upload and verify the final outputs, then write the marker LAST.

        Raises when a final output cannot be uploaded and verified, so the process does not
        exit 0 with an unfinished bucket. On processes other than the world main one, a no-op.
        """
        if not _is_world_main():
            if self._uploader is not None:  # another node's local main process: its parts go up first
                self._uploader.close()
            return {}
        started = time.monotonic()
        uploaded_steps: list[int] = []
        if self._uploader is not None:
            self._uploader.close()
            uploaded_steps = list(self._uploader.uploaded)
            for step, error in self._uploader.failed.items():
                log.warning("checkpoint-%d never reached the bucket (%s); the final outputs supersede it", step, error)
        if not any((self.output_dir / name).is_dir() for name in FINAL_MODELS):
            raise RuntimeError(
                f"finish(): neither {' nor '.join(str(self.output_dir / m) for m in FINAL_MODELS)} "
                "exists; the final model must be saved before the run can be marked complete"
            )
        marker_location = self.remote.child(RUN_COMPLETE_MARKER)
        delete_object(marker_location, self.settings)  # a stale marker must not vouch for new outputs
        scratch = self.staging_root / "final"
        trees, files = [], []
        for name in FINAL_TREES:
            folder = self.output_dir / name
            if folder.is_dir():
                source = staging.copy_snapshot(folder, scratch / name) if name in PROGRESS_TREES else folder
                upload_verified_tree(source, self._tree_location(name), self.settings, label=f"upload {name}")
                if self._tree_location(name) == self.remote.child(name):
                    trees.append(name)
        if {FINAL, FINAL_ADAPTER} <= set(trees):
            # LoRA with merge: checkpoint-final is the merged model; publish it under the tutorial's name too.
            copy_remote_tree(self.remote.child(FINAL), self.remote.child(FINAL_MERGED), self.settings)
            trees.append(FINAL_MERGED)
        for name in FINAL_FILES:
            path = self.output_dir / name
            if path.is_file():
                upload_verified_file(
                    staging.copy_snapshot(path, scratch / name), self.remote.child(name), self.settings
                )
                files.append(name)
        try:
            remove_incomplete_checkpoints(self.remote, self.settings)
        except Exception as error:  # noqa: BLE001 - leftovers without a manifest are ignored by resume anyway
            log.warning("could not remove incomplete checkpoints from %s: %s", self.remote, error)
        marker = {
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "trees": trees,
            "files": files,
            "checkpoints_uploaded": [checkpoint_name(s) for s in uploaded_steps],
        }
        if self.logs_remote is not None:
            marker["logs_remote"] = str(self.logs_remote)
        write_object(marker_location, json.dumps(marker, indent=1).encode(), self.settings)
        echoed = read_object(marker_location, missing_ok=True, settings=self.settings)
        if echoed is None or json.loads(echoed) != marker:
            raise VerificationError(f"{marker_location}: the run-complete marker did not read back")
        staging.discard(self.staging_root)
        log.info(
            "run complete in %s: %s verified, marker %s written last (%.1fs)",
            self.remote,
            ", ".join(trees + files),
            RUN_COMPLETE_MARKER,
            time.monotonic() - started,
        )
        return marker
