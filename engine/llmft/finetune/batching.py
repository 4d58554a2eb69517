"""Batch size resolution: total batch and per-device maximum -> per-device batch and accumulation.

total = processes x per-device batch x gradient accumulation steps. The per-device batch is the
largest value up to the maximum that divides the per-process share of the total; the remainder
is made up by gradient accumulation. Also the learning-rate overrides that depend on the total.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from llmft.errors import UserError
from llmft.finetune.config import BatchsizeConf, Overrides

KEY = "finetuning_config.batchsize_conf"


@dataclass(frozen=True)
class BatchPlan:
    processes: int
    per_device: int
    accumulation: int
    eval_per_device: int

    @property
    def total(self) -> int:
        return self.processes * self.per_device * self.accumulation


def resolve_batch_size(conf: BatchsizeConf, processes: int) -> BatchPlan:
    """The per-device batch and accumulation for `processes` processes (a UserError if impossible)."""
    maximum = conf.max_per_device_train_batch_size
    total = conf.total_train_batch_size or maximum * processes
    if total % processes:
        lower = max(processes, total - total % processes)
        raise UserError(
            f"{KEY}.total_train_batch_size: must be a multiple of the number of processes ({processes}) so "
            f"every process gets the same share, got {total}; use {lower} or {lower + processes}"
        )
    share = total // processes
    per_device = max(size for size in range(1, min(maximum, share) + 1) if share % size == 0)
    return BatchPlan(
        processes=processes,
        per_device=per_device,
        accumulation=share // per_device,
        eval_per_device=conf.per_device_eval_batch_size or per_device,
    )


def effective_learning_rate(learning_rate: float, overrides: Overrides, total_batch_size: int) -> float:
    """`learning_rate` x `lr_multiplier` x the batch-size scaling factor (1, sqrt(total) or total)."""
    scale = {"none": 1.0, "sqrt": math.sqrt(total_batch_size), "linear": float(total_batch_size)}
    return learning_rate * overrides.lr_multiplier * scale[overrides.lr_batch_size_scaling]
