"""The `transformers.TrainerCallback` side of checkpoint sync (imports transformers)."""

from __future__ import annotations

import logging
from pathlib import Path

from transformers import TrainerCallback

from llmft.run_layout import checkpoint_name

log = logging.getLogger("llmft.sync")


class SyncCallback(TrainerCallback):
    """Queues every checkpoint the Trainer saves for background upload (each node's local main process)."""

    def __init__(self, sync):
        self.sync = sync

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_local_process_zero:
            self.sync.start_background()

    def on_save(self, args, state, control, **kwargs):
        if args.world_size > 1:
            # Every rank writes into the checkpoint (rng_state_<rank>.pth, sharded optimizer
            # states): stage it only once all of them are done.
            from accelerate import PartialState

            PartialState().wait_for_everyone()
        # Each node's local main process uploads its node's files (one node: the world main process).
        if not state.is_local_process_zero:
            return
        folder = Path(args.output_dir) / checkpoint_name(state.global_step)
        if not folder.is_dir():
            log.warning("the Trainer reported a save but %s does not exist; nothing to upload", folder)
            return
        self.sync.enqueue(folder, state.global_step)

    def on_train_end(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            self.sync.request_progress_sync()  # non-blocking; finish() does the verified final sync
