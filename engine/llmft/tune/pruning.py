"""The TrainerCallback of a trial: report the objective at each evaluation, stop cleanly when pruned.

The tuner starts a trial as an ordinary `llmft train|sft|dpo CONFIG` process with `LLMFT_TUNE_TRIAL`
pointing at the trial's `tune-trial.json` (study, trial number, the metric to report, the early
stopping settings) and `LLMFT_TUNE_STORAGE` at the study storage; `llmft.commands.finetune` then adds
this callback. At every evaluation (or logging step, for a training metric) the main process reports
the value to the study as the trial's intermediate value at that training step and asks the pruner.
When the pruner says stop, every process stops after saving a checkpoint (so the trial's last state
stays in its folder and bucket), the run writes its finals as usual, and `tune-pruned.json` in the
output folder tells the tuner to record the trial as PRUNED.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from transformers import TrainerCallback

from llmft.finetune.outputs import write_json
from llmft.tune.trials import PRUNED_ATTR, PRUNED_MARKER, TRIAL_ENV

log = logging.getLogger("llmft.tune")


def callbacks_from_environment() -> list:
    """The pruning callback when this process runs a trial (LLMFT_TUNE_TRIAL set), else nothing."""
    path = os.environ.get(TRIAL_ENV)
    return [PruningCallback(Path(path))] if path else []


class PruningCallback(TrainerCallback):
    """Reports the trial's metric to its Optuna study and stops training when the pruner says so."""

    def __init__(self, trial_file: Path):
        self.info = json.loads(Path(trial_file).read_text())
        self.metric = self.info["report"]
        self._trial = None

    def trial(self):
        """The Optuna trial, opened on first use (the storage is read once per process)."""
        if self._trial is None:
            import optuna

            from llmft.tune.algorithms import make_pruner
            from llmft.tune.spec import STORAGE_ENV, EarlyStopping
            from llmft.tune.study import open_storage, trial_id

            storage = open_storage(os.environ[STORAGE_ENV])
            study = optuna.load_study(
                study_name=self.info["study"],
                storage=storage,
                sampler=optuna.samplers.RandomSampler(),  # samples nothing here
                pruner=make_pruner(EarlyStopping(**self.info["early_stopping"])),
            )
            self._trial = optuna.trial.Trial(study, trial_id(study, self.info["trial_number"]))
        return self._trial

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self._check(args, state, control, metrics or {})

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not self.metric.startswith("eval_"):
            self._check(args, state, control, logs or {})

    def _check(self, args, state, control, values: dict) -> None:
        value = values.get(self.metric)
        if not isinstance(value, (int, float)):
            return
        prune = False
        if state.is_world_process_zero:
            trial = self.trial()
            trial.report(float(value), state.global_step)
            # A report at the last step ends a trial that trained in full: it completes with this value
            # (stopping it saves nothing, and a PRUNED state would hide its result from the sampler).
            prune = state.global_step < state.max_steps and trial.should_prune()
        if _agree(prune):
            control.should_training_stop = True
            control.should_save = True  # the trial's last state stays (locally and in the bucket)
            if state.is_world_process_zero:
                where = {"step": state.global_step, "metric": self.metric, "value": float(value)}
                # In the study too: a worker restarted on another pod finds it there (the folder is gone).
                self.trial().set_user_attr(PRUNED_ATTR, where)
                log.info(
                    "trial %s pruned at step %d (%s %.5g is worse than the early-stopping rule allows); "
                    "stopping after this checkpoint",
                    self.info["trial_number"],
                    state.global_step,
                    self.metric,
                    value,
                )
                write_json(Path(args.output_dir) / PRUNED_MARKER, where)


def _agree(decision: bool) -> bool:
    """Rank 0's decision on every process (all ranks evaluate together, so all reach this call)."""
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return decision
    box = [decision]
    dist.broadcast_object_list(box, src=0)
    return bool(box[0])
