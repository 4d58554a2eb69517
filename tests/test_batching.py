"""Batch-size resolution and the learning-rate overrides that depend on it."""

from __future__ import annotations

import math

import pytest

from llmft.errors import UserError
from llmft.finetune.batching import effective_learning_rate, resolve_batch_size
from llmft.finetune.config import BatchsizeConf, Overrides


@pytest.mark.parametrize(
    "total,maximum,processes,per_device,accumulation",
    [
        (8, 4, 1, 4, 2),  # the contract: two micro-batches of four
        (8, 8, 1, 8, 1),  # fits at once
        (8, 16, 1, 8, 1),  # the maximum is only an upper bound
        (6, 4, 1, 3, 2),  # the largest divisor of 6 not above 4
        (7, 4, 1, 1, 7),  # a prime total: one sample per micro-batch
        (32, 4, 4, 4, 2),  # four processes share the total
        (12, 5, 2, 3, 2),  # 6 per process, largest divisor up to 5 is 3
        (2, 4, 2, 1, 1),  # one sample per process
    ],
)
def test_resolution(total, maximum, processes, per_device, accumulation):
    plan = resolve_batch_size(
        BatchsizeConf(total_train_batch_size=total, max_per_device_train_batch_size=maximum), processes
    )
    assert (plan.per_device, plan.accumulation) == (per_device, accumulation)
    assert plan.total == total == plan.processes * plan.per_device * plan.accumulation
    assert plan.eval_per_device == per_device


def test_default_total_is_the_maximum_on_every_process():
    plan = resolve_batch_size(BatchsizeConf(max_per_device_train_batch_size=4), 2)
    assert (plan.total, plan.per_device, plan.accumulation) == (8, 4, 1)


def test_eval_batch_size_can_be_set():
    conf = BatchsizeConf(total_train_batch_size=8, max_per_device_train_batch_size=2, per_device_eval_batch_size=16)
    assert resolve_batch_size(conf, 1).eval_per_device == 16


@pytest.mark.parametrize(
    "total,processes,suggestion", [(6, 4, "use 4 or 8"), (3, 4, "use 4 or 8"), (10, 3, "use 9 or 12")]
)
def test_a_total_that_cannot_be_shared_is_a_config_error(total, processes, suggestion):
    conf = BatchsizeConf(total_train_batch_size=total, max_per_device_train_batch_size=4)
    with pytest.raises(UserError) as caught:
        resolve_batch_size(conf, processes)
    message = str(caught.value)
    assert message.startswith(
        "finetuning_config.batchsize_conf.total_train_batch_size: must be a multiple of the "
        f"number of processes ({processes})"
    )
    assert f"got {total}" in message and suggestion in message


@pytest.mark.parametrize("scaling,factor", [("none", 1.0), ("sqrt", math.sqrt(16)), ("linear", 16.0)])
def test_learning_rate_overrides(scaling, factor):
    overrides = Overrides(lr_multiplier=0.5, lr_batch_size_scaling=scaling)
    assert effective_learning_rate(1e-4, overrides, 16) == pytest.approx(1e-4 * 0.5 * factor)
