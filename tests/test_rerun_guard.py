"""A config rerun into the place of a finished run: the same config is a no-op (re-applying a Job is
idempotent); a different config stops with the changed keys and the fix, instead of reporting a run
trained with other settings as done. Locally (output_dir) and from the bucket (checkpoints_remote)."""

from __future__ import annotations

import shutil

import pytest
from test_sft import sft_config, write_data

from llmft.errors import UserError
from llmft.finetune.config import load_config
from llmft.finetune.sft import run_sft

pytestmark = pytest.mark.slow


def tiny(out, model, data, remote=None, **training_args):
    config = sft_config(out, str(model), str(data), training_args={"max_steps": 2, "save_steps": 2, **training_args})
    if remote:
        config["run_conf"]["checkpoints_remote"] = remote
    return load_config(config)


def test_rerun_of_a_finished_run_with_another_config(tiny_model_dir, tmp_path, bucket):
    data = write_data(tmp_path / "train.jsonl")
    out, remote = tmp_path / "out", f"{bucket}/runs/a"
    assert run_sft(tiny(out, tiny_model_dir, data, remote)) == 0
    assert run_sft(tiny(out, tiny_model_dir, data, remote)) == 0  # the same config: nothing to do

    with pytest.raises(UserError) as caught:
        run_sft(tiny(out, tiny_model_dir, data, remote, learning_rate=1e-3, max_steps=3))
    assert str(caught.value) == (
        f"{remote} holds a finished run trained with a different config (training_args.learning_rate: 0.01 -> "
        "0.001; training_args.max_steps: 2 -> 3); nothing was trained: to train this config use a new "
        "run_conf.checkpoints_remote (checkpointsRemote in the chart)"
    )

    shutil.rmtree(out)  # locally only: the local summary says so too, with its own fix
    assert run_sft(tiny(out, tiny_model_dir, data)) == 0
    with pytest.raises(
        UserError,
        match=rf"{out} holds a finished run trained with a different config "
        r"\(training_args.learning_rate: 0.01 -> 0.001\); .*use a new "
        r"training_args.output_dir, or run_conf.resume_from_checkpoint: none",
    ):
        run_sft(tiny(out, tiny_model_dir, data, learning_rate=1e-3))
    # Where the run lives may change: a relaunch with another output folder is the same run.
    assert run_sft(tiny(tmp_path / "elsewhere", tiny_model_dir, data, remote)) == 0
