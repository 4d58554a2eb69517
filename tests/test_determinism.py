"""Same config, same seed, same model: for every family of runs (full and LoRA with a chat template that
adds tokens, packing, DPO full and LoRA, 2-process DDP).

1. Two fresh runs of one config give bit-identical weights. Fresh processes start with unrelated
   global random generators; the in-process runs here scramble the generators before each run
   to stand for that (the DDP runs are real fresh processes).
2. A run SIGKILLed at random steps and relaunched each time with only the bucket (the local output
   folder deleted, as when a pod dies) ends with exactly the weights of the uninterrupted run. Each
   family is killed twice in one chain: kill, relaunch, kill again, relaunch to the end (DDP: once).

Tiny model, CPU, a few steps: the point is bit equality, not learning.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from llmft.finetune.config import load_config
from llmft.processes import kill_tree
from llmft.storage import download_tree, parse_location
from llmft.sync import scan

pytestmark = pytest.mark.slow

MAX_STEPS = 9
SAVE_STEPS = 2
QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
] + [(f"Say the number {i}.", f"{i}") for i in range(5)]
PAIRS = [
    ("What is the capital of France?", "Paris.", "London."),
    ("What color is the sky?", "Blue.", "Green."),
    ("Who wrote Hamlet?", "Shakespeare.", "Dickens."),
    ("How many legs has a cat?", "Four.", "Three."),
]
LORA = {"peft_type": "LORA", "peft_kwargs": {"r": 4, "lora_alpha": 8, "lora_dropout": 0.1}}
FULL = {"peft_type": "NO_PEFT"}
# Uploads paced so that a tiny run cannot race past the step a test kills it at.
PACED = {
    "LLMFT_TRANSFER_WORKERS": "1",
    "LLMFT_TRANSFER_MAX_BANDWIDTH": str(4 * 1024 * 1024),
    "LLMFT_SYNC_MAX_PENDING": "1",
}

# family -> (method, peft, chat template, packing). Dropout is on wherever the model has it (LoRA).
FAMILIES = {
    "sft-full-chatml": ("sft", FULL, "chat-ml", False),
    "sft-lora-chatml": ("sft", LORA, "chat-ml", False),
    "sft-full-packed": ("sft", FULL, "keep-original", True),
    "dpo-full": ("dpo", FULL, "keep-original", False),
    "dpo-lora-chatml": ("dpo", LORA, "chat-ml", False),
}


def family_params():
    # One xdist group per family: its determinism and resume tests share the reference run.
    return [pytest.param(name, marks=pytest.mark.xdist_group(f"determinism-{name}")) for name in FAMILIES]


def write_data(folder: Path, method: str) -> Path:
    path = folder / f"{method}.jsonl"
    if method == "sft":
        rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    else:
        rows = [
            {
                "prompt_messages": [{"role": "user", "content": q}],
                "chosen_messages": [{"role": "assistant", "content": good}],
                "rejected_messages": [{"role": "assistant", "content": bad}],
            }
            for q, good, bad in PAIRS * 2
        ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def config_for(family: str, folder: Path, model_dir: Path, output: Path, remote: str | None = None) -> dict:
    method, peft, template, packing = FAMILIES[family]
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "method": method,
        "data_conf": {
            "training_data": {"datasets": [{"path": str(write_data(folder, method))}]},
            "chat_template_name": template,
        },
        "training_args": {
            "output_dir": str(output),
            "learning_rate": 5e-3,
            "lr_scheduler_type": "linear",
            "warmup_steps": 2,
            "max_steps": MAX_STEPS,
            "logging_steps": 1,
            "save_steps": SAVE_STEPS,
            "seed": 7,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2},
        "peft_conf": peft,
        "run_conf": {"model": str(model_dir), "resume_from_checkpoint": "auto"},
    }
    if method == "sft":
        config["sft_args"] = {"max_seq_length": 128, "packing": packing}
    else:
        config["training_args"].update(beta=0.1, loss_type="sigmoid")
    if remote:
        config["run_conf"]["checkpoints_remote"] = remote
    return config


def run_in_process(config: dict) -> None:
    from llmft.finetune.dpo import run_dpo
    from llmft.finetune.sft import run_sft

    # Whatever ran before in this process: unrelated generator states, as in a fresh process.
    entropy = random.SystemRandom().randrange(2**31)
    torch.manual_seed(entropy)
    random.seed(entropy)
    recipe = run_sft if config["method"] == "sft" else run_dpo
    assert recipe(load_config(config)) == 0


def final_tensors(output: Path) -> dict[str, torch.Tensor]:
    """Every tensor of the run's finals: the full model, or the adapter (with any resized embeddings)."""
    from safetensors.torch import load_file

    tensors = {}
    for name in ("checkpoint-final", "checkpoint-final-adapter"):
        for file in sorted((output / name).glob("*.safetensors")):
            tensors.update({f"{name}/{file.name}/{key}": value for key, value in load_file(file).items()})
    assert tensors, f"no final weights under {output}"
    return tensors


def assert_identical(expected: dict, actual: dict) -> None:
    assert expected.keys() == actual.keys()
    different = [name for name in expected if not torch.equal(expected[name], actual[name])]
    assert not different, f"{len(different)} tensors differ, e.g. {different[:3]}"


_references: dict[str, Path] = {}


@pytest.fixture
def reference(tmp_path_factory, tiny_model_dir):
    """The uninterrupted in-process run of a family (once per family and worker): its output folder."""

    def get(family: str) -> Path:
        if family not in _references:
            root = tmp_path_factory.mktemp(f"reference-{family}")
            run_in_process(config_for(family, root, tiny_model_dir, root / "out"))
            _references[family] = root / "out"
        return _references[family]

    return get


@pytest.mark.parametrize("family", family_params())
def test_two_runs_of_one_config_give_identical_weights(family, reference, tiny_model_dir, tmp_path):
    again = tmp_path / "out"
    run_in_process(config_for(family, tmp_path, tiny_model_dir, again))
    assert_identical(final_tensors(reference(family)), final_tensors(again))
    if FAMILIES[family][2] == "chat-ml":  # the case that used to differ: embedding rows for added tokens
        summary = json.loads((again / "summary.json").read_text())
        assert summary["resized_embeddings"] and summary["added_tokens"]


class Launch:
    """One training process group (`llmft <method> CONFIG`, or `accelerate launch` of it), killed by its PID."""

    def __init__(self, command: list[str], output: Path, env: dict, log_path: Path):
        self.output = output
        self.log_path = log_path
        with open(log_path, "w") as log:
            self.process = subprocess.Popen(
                command,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, "OMP_NUM_THREADS": "1", **env},
                start_new_session=True,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text()

    def last_step(self) -> int:
        metrics = self.output / "metrics.jsonl"
        lines = metrics.read_text().splitlines() if metrics.exists() else []
        return max((json.loads(line).get("step", 0) for line in lines if line.strip().endswith("}")), default=0)

    def kill_at(self, step: int, remote: str) -> None:
        """SIGKILL the launcher and every process it started (as a pod's end does) once `step` was logged and
        some checkpoint is complete remotely."""
        deadline = time.monotonic() + 300
        while not (self.last_step() >= step and scan(parse_location(remote)).complete):
            assert self.process.poll() is None, (
                f"exited ({self.process.returncode}) before step {step}:\n{self.log[-4000:]}"
            )
            assert time.monotonic() < deadline, f"timed out waiting for step {step}:\n{self.log[-4000:]}"
            time.sleep(0.02)
        kill_tree(self.process.pid)
        self.process.wait(timeout=60)

    def finish(self) -> str:
        code = self.process.wait(timeout=600)
        assert code == 0, f"training exited {code}:\n{self.log[-6000:]}"
        return self.log


def kill_and_finish(
    command_for, output: Path, remote: str, env: dict, logs: Path, seed: int, kills: int = 2
) -> list[str]:
    """Launch, SIGKILL at a random step, relaunch with the local folder gone (`kills` times), then run to the end.

    Returns the logs of the relaunches.
    """
    rng = random.Random(seed)
    first_kill = rng.randint(SAVE_STEPS + 1, MAX_STEPS // 2 + 1)
    kill_steps = [first_kill, rng.randint(first_kill + SAVE_STEPS, MAX_STEPS - 1)][:kills]
    relaunch_logs = []
    for attempt, kill_step in enumerate([*kill_steps, None]):
        if output.exists():
            shutil.rmtree(output)  # the pod's disk is gone: only the bucket remains
        launch = Launch(command_for(), output, {**env, **PACED}, logs / f"attempt-{attempt}.log")
        if kill_step is None:
            relaunch_logs.append(launch.finish())
        else:
            launch.kill_at(kill_step, remote)
            if attempt:
                relaunch_logs.append(launch.log)
    return relaunch_logs


def remote_final(remote: str, scratch: Path) -> dict[str, torch.Tensor]:
    """The final weights as the bucket holds them (downloaded and verified against their manifests)."""
    run = scan(parse_location(remote))
    for name in ("checkpoint-final", "checkpoint-final-adapter"):
        if run.trees_complete.get(name):
            download_tree(parse_location(remote).child(name), scratch / name)
    return final_tensors(scratch)


@pytest.mark.parametrize("family", family_params())
def test_killed_and_relaunched_from_the_bucket_ends_with_the_uninterrupted_weights(
    family, reference, bucket, s3_env, tiny_model_dir, tmp_path
):
    remote = f"{bucket}/runs/{family}"
    output = tmp_path / "out"
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config_for(family, tmp_path / "data", tiny_model_dir, output, remote)))
    method = FAMILIES[family][0]
    logs = kill_and_finish(
        lambda: [sys.executable, "-m", "llmft", method, str(config_path)],
        output,
        remote,
        s3_env,
        tmp_path,
        seed=hash(family) % 1000,
    )
    assert all("resuming from s3://" in log for log in logs), logs[-1][-3000:]
    assert_identical(final_tensors(reference(family)), remote_final(remote, tmp_path / "final"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.xdist_group("determinism-ddp")
def test_two_process_ddp_is_deterministic_and_resumes_to_the_same_weights(bucket, s3_env, tiny_model_dir, tmp_path):
    """`llmft train` with the chart's DDP preset (2 processes, gloo): a fresh uninterrupted run, then a run
    killed (with every process it started, as when a pod dies) and relaunched from the bucket."""
    from llmft.finetune import distributed as dist
    from llmft.finetune.distributed import write_launch_files

    family = "sft-lora-chatml"
    launch_config = write_launch_files(dist.DDP, tmp_path / "launch", num_processes=2)[0]
    # Its own rendezvous port: other multi-process tests may run at the same time.
    launch_config.write_text(
        yaml.safe_dump({**yaml.safe_load(launch_config.read_text()), "main_process_port": _free_port()})
    )

    def command_for(config_path: Path):
        return lambda: [
            sys.executable,
            "-m",
            "llmft",
            "train",
            str(config_path),
            "--num-processes",
            "2",
            "--accelerate-config",
            str(launch_config),
        ]

    outputs = {}
    for name, remote in (("uninterrupted", None), ("killed", f"{bucket}/runs/ddp")):
        output = tmp_path / name / "out"
        config_path = tmp_path / name / "config.yaml"
        config = config_for(family, tmp_path / name, tiny_model_dir, output, remote)
        config_path.write_text(yaml.safe_dump(config))
        env = dict(s3_env)
        if remote is None:
            Launch(command_for(config_path)(), output, env, tmp_path / name / "run.log").finish()
            outputs[name] = final_tensors(output)
        else:
            logs = kill_and_finish(command_for(config_path), output, remote, env, tmp_path / name, seed=3, kills=1)
            assert all("resuming from s3://" in log for log in logs)
            summary = json.loads((output / "summary.json").read_text())
            assert summary["batch"]["processes"] == 2
            outputs[name] = remote_final(remote, tmp_path / name / "final")
    assert_identical(outputs["uninterrupted"], outputs["killed"])
