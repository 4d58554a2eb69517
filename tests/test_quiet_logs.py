"""Quiet, honest logs: a LoRA run whose chat template adds tokens (the case that made peft and transformers
warn on every run) logs no third-party noise, while the engine's own warnings still show."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

pytestmark = pytest.mark.slow

NOISE = ("FutureWarning", "save_embedding_layers", "Setting accelerator to CPU", "is_gradient_checkpointing")


def test_a_run_logs_no_third_party_noise_and_keeps_real_warnings(tiny_model_dir, tmp_path):
    rows = [{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hello."}]}] * 6
    rows.append({"messages": [{"role": "user", "content": "long " * 200}, {"role": "assistant", "content": "x"}]})
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    config = tmp_path / "config.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "method": "sft",
                "data_conf": {"training_data": {"datasets": [{"path": str(data)}]}, "chat_template_name": "chat-ml"},
                "training_args": {
                    "output_dir": str(tmp_path / "out"),
                    "max_steps": 2,
                    "save_steps": 1,
                    "report_to": [],
                },
                "batchsize_conf": {"total_train_batch_size": 2, "max_per_device_train_batch_size": 2},
                "peft_conf": {"peft_type": "LORA", "peft_kwargs": {"r": 4, "lora_alpha": 8}},
                "run_conf": {"model": str(tiny_model_dir)},
                "sft_args": {"max_seq_length": 64},
            }
        )
    )
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "sft", str(config)],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert [noise for noise in NOISE if noise in log] == [], log
    assert "left out 1 of 7 samples longer than" in log  # the engine's own warning is kept


def test_a_command_that_does_not_train_is_quiet(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "tiny-model", str(tmp_path / "tiny")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "Setting accelerator to CPU" not in result.stderr and "WARNING" not in result.stderr
