"""Distributed presets: generated accelerate/DeepSpeed configs load in accelerate 1.15 and train correctly.

Offline checks use accelerate's own loader and launch-time validation, and the
Hugging Face Trainer's DeepSpeed config filling. The runtime tests launch real
`accelerate launch` jobs on the CPU (gloo): a 2-process DDP run and a 2-process
DeepSpeed ZeRO-3 run reach the same losses and weights as a 1-process run with
the same total batch size.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from llmft.cli import main as cli_main
from llmft.errors import UserError
from llmft.finetune import distributed as dist
from llmft.finetune.distributed import (
    GENERATED_PRESETS,
    check_launch,
    launch_files,
    validate_accelerate_config,
    write_launch_files,
)

EXPECTED_TYPE = {
    dist.SINGLE: "NO",
    dist.DDP: "MULTI_GPU",
    dist.ZERO1: "DEEPSPEED",
    dist.ZERO2: "DEEPSPEED",
    dist.ZERO3: "DEEPSPEED",
    dist.FSDP: "FSDP",
}


def validated_launch_args(config_file: Path):
    """What `accelerate launch --config_file FILE` resolves before starting processes (no launch)."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser

    args = launch_command_parser().parse_args(["--config_file", str(config_file), "train.py"])
    return _validate_launch_command(args)


@pytest.mark.parametrize(
    "preset, processes",
    [(preset, n) for preset in GENERATED_PRESETS for n in (1, 2, 8) if preset != dist.SINGLE or n == 1],
)
def test_generated_config_loads_with_accelerates_own_loader(tmp_path, preset, processes):
    from accelerate.commands.config.config_args import load_config_from_file

    paths = write_launch_files(preset, tmp_path, num_processes=processes, mixed_precision="bf16")
    config = load_config_from_file(str(paths[0]))  # raises on unknown keys
    expected = "NO" if (preset == dist.DDP and processes == 1) else EXPECTED_TYPE[preset]
    assert config.distributed_type.value == expected
    assert config.num_processes == processes
    args, defaults, _ = validated_launch_args(paths[0])
    assert args.num_processes == processes
    assert args.use_deepspeed == (preset in dist.DEEPSPEED_STAGES)
    assert args.use_fsdp == (preset == dist.FSDP)
    assert args.multi_gpu == (expected == "MULTI_GPU")
    if preset in dist.DEEPSPEED_STAGES:
        # accelerate forbids mixed_precision next to a DeepSpeed JSON; "auto" in the JSON carries it.
        assert config.mixed_precision is None
        assert Path(config.deepspeed_config["deepspeed_config_file"]) == (tmp_path / dist.DEEPSPEED_FILE).resolve()
    else:
        assert args.mixed_precision == "bf16"


@pytest.mark.parametrize("preset", sorted(dist.DEEPSPEED_STAGES))
def test_deepspeed_json_passes_accelerates_checks_and_trainer_fills_every_auto(
    tmp_path, tiny_model_dir, monkeypatch, preset
):
    from types import SimpleNamespace

    from accelerate.utils import DeepSpeedPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env
    from deepspeed.runtime.config import DeepSpeedConfig
    from transformers import AutoConfig, TrainingArguments
    from transformers.integrations.deepspeed import HfTrainerDeepSpeedConfig

    stage = dist.DEEPSPEED_STAGES[preset]
    paths = write_launch_files(preset, tmp_path, num_processes=2)
    # The environment `accelerate launch` gives each process, then accelerate's own plugin checks
    # (e.g. it refuses accelerate-config fields that clash with a DeepSpeed JSON).
    args, defaults, mp_from_config = validated_launch_args(paths[0])
    args.deepspeed_fields_from_accelerate_config = ",".join(
        list(defaults.deepspeed_config) + (["mixed_precision"] if mp_from_config else [])
    )
    _, env = prepare_deepspeed_cmd_env(args)
    for key, value in env.items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    plugin = DeepSpeedPlugin()
    assert plugin.zero_stage == stage and plugin.hf_ds_config.is_zero3() == (stage == 3)
    assert plugin.zero3_init_flag == (stage == 3)

    # The HF Trainer fills every "auto" from TrainingArguments and the model config.
    config = json.loads(paths[1].read_text())
    training_args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        bf16=True,
        max_grad_norm=0.5,
        report_to=[],
        use_cpu=True,
    )
    hf_config = HfTrainerDeepSpeedConfig(config)
    hf_config.trainer_config_process(training_args)
    # A config object is all the finalize step reads (a real model would be built under zero.Init).
    hf_config.trainer_config_finalize(
        training_args, SimpleNamespace(config=AutoConfig.from_pretrained(tiny_model_dir)), num_training_steps=10
    )
    filled = hf_config.config
    assert "auto" not in json.dumps(filled)
    assert filled["train_micro_batch_size_per_gpu"] == 4 and filled["gradient_accumulation_steps"] == 2
    assert filled["train_batch_size"] == 8 and filled["gradient_clipping"] == 0.5
    assert filled["bf16"]["enabled"] is True and filled["fp16"]["enabled"] is False
    if stage == 3:
        assert filled["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    parsed = DeepSpeedConfig(filled)  # DeepSpeed's own parser accepts the filled config
    assert parsed.zero_optimization_stage == stage and parsed.train_batch_size == 8
    del hf_config  # drops transformers' global weakref to a ZeRO-3 config


def test_fsdp_preset_gives_fsdp2_with_a_consolidated_state_dict(tmp_path, monkeypatch):
    from accelerate.utils import FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_multi_gpu_env

    paths = write_launch_files(dist.FSDP, tmp_path, num_processes=4, mixed_precision="bf16")
    args, _, _ = validated_launch_args(paths[0])
    for key, value in prepare_multi_gpu_env(args).items():
        if key.startswith(("ACCELERATE_", "FSDP_")):
            monkeypatch.setenv(key, value)
    plugin = FullyShardedDataParallelPlugin()
    assert plugin.fsdp_version == 2
    assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    assert plugin.reshard_after_forward is True
    assert plugin.cpu_ram_efficient_loading is True


def test_output_is_deterministic_and_names_the_deepspeed_path():
    first = launch_files(dist.ZERO2, num_processes=8, deepspeed_config_path="/etc/llmft/deepspeed_config.json")
    again = launch_files(dist.ZERO2, num_processes=8, deepspeed_config_path="/etc/llmft/deepspeed_config.json")
    assert first == again
    assert "deepspeed_config_file: /etc/llmft/deepspeed_config.json" in first.accelerate_yaml
    assert json.loads(first.deepspeed_json)["zero_optimization"]["stage"] == 2
    assert launch_files(dist.DDP, num_processes=2).deepspeed_json is None
    assert yaml.safe_load(launch_files(dist.DDP, 2, "fp16").accelerate_yaml)["mixed_precision"] == "fp16"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: launch_files("auto-zero"), "unknown preset 'auto-zero'"),
        (lambda: launch_files(dist.SINGLE, num_processes=2), "runs exactly one process"),
        (lambda: launch_files(dist.DDP, num_processes=0), "num_processes: must be a positive integer"),
        (lambda: launch_files(dist.DDP, 2, mixed_precision="fp32"), "mixed_precision: must be one of no, bf16, fp16"),
        (lambda: launch_files(dist.CUSTOM), "validate it with"),
    ],
)
def test_bad_generator_arguments(call, message):
    with pytest.raises(UserError, match=message):
        call()


CUSTOM_CASES = [
    ("distributed_type: MULTI_GPU\nnum_processes: 2\nmixed_precision: bf16\n", None),
    ("distributed_type: FSDP\nfsdp_config:\n  version: 2\n  fsdp_state_dict_type: FULL_STATE_DICT\n", None),
    ("distributed_type: MULTI_GPU\nnum_procs: 2\n", "num_procs: unknown accelerate config key"),
    ("num_processes: 2\n", "distributed_type: missing"),
    ("distributed_type: MULTI_TPU_POD\n", "distributed_type: 'MULTI_TPU_POD' is not one of"),
    ("distributed_type: NO\nmixed_precision: fp32\n", "mixed_precision: 'fp32' is not one of"),
    ("distributed_type: MULTI_GPU\nnum_processes: two\n", "num_processes: must be a positive integer"),
    (
        "distributed_type: FSDP\nfsdp_config:\n  fsdp_shard_everything: true\n",
        "fsdp_config.fsdp_shard_everything: unknown key",
    ),
    (
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  zero_stage: 2\n  zero_stg: 3\n",
        "deepspeed_config.zero_stg: unknown key",
    ),
    (
        "distributed_type: DEEPSPEED\ndeepspeed_config:\n  deepspeed_config_file: missing.json\n",
        "deepspeed_config_file: missing.json does not exist",
    ),
    (
        "distributed_type: DEEPSPEED\nmixed_precision: bf16\ndeepspeed_config:\n  deepspeed_config_file: ds.json\n",
        "mixed_precision: accelerate refuses these next to deepspeed_config_file",
    ),
    ("compute_environment: AMAZON_SAGEMAKER\ndistributed_type: NO\n", "compute_environment must be LOCAL_MACHINE"),
    ("- distributed_type\n", "must be a YAML mapping"),
    ("distributed_type: [MULTI_GPU\n", "custom.yaml:2: not valid YAML"),
]


@pytest.mark.parametrize("text, message", CUSTOM_CASES)
def test_custom_accelerate_config_validation(tmp_path, text, message):
    (tmp_path / "ds.json").write_text("{}")
    path = tmp_path / "custom.yaml"
    path.write_text(text)
    if message is None:
        assert validate_accelerate_config(path)["distributed_type"]
        # and accelerate agrees
        from accelerate.commands.config.config_args import load_config_from_file

        load_config_from_file(str(path))
    else:
        with pytest.raises(UserError) as error:
            validate_accelerate_config(path)
        assert message in str(error.value)
        assert str(path) in str(error.value)


def test_generated_files_pass_the_custom_validator(tmp_path):
    for preset in GENERATED_PRESETS:
        paths = write_launch_files(preset, tmp_path / preset, num_processes=2 if preset != dist.SINGLE else 1)
        validate_accelerate_config(paths[0])


def test_cli_writes_files_and_checks_custom_configs(tmp_path, capsys):
    assert (
        cli_main(
            [
                "accelerate-config",
                dist.ZERO3,
                "--num-processes",
                "4",
                "--out",
                str(tmp_path / "z3"),
                "--deepspeed-config-path",
                "/mnt/llmft/deepspeed_config.json",
            ]
        )
        == 0
    )
    text = (tmp_path / "z3" / dist.ACCELERATE_FILE).read_text()
    assert text == launch_files(dist.ZERO3, 4, deepspeed_config_path="/mnt/llmft/deepspeed_config.json").accelerate_yaml
    assert (tmp_path / "z3" / dist.DEEPSPEED_FILE).is_file()
    assert cli_main(["accelerate-config", dist.SINGLE, "--num-processes", "3", "--out", str(tmp_path / "s")]) == 2
    assert "runs exactly one process" in capsys.readouterr().err
    # The ZeRO-3 YAML points at a mount path that does not exist here: the custom check says so.
    assert cli_main(["accelerate-config", dist.CUSTOM, "--config", str(tmp_path / "z3" / dist.ACCELERATE_FILE)]) == 2
    assert "/mnt/llmft/deepspeed_config.json does not exist" in capsys.readouterr().err
    assert cli_main(["accelerate-config", dist.DDP, "--num-processes", "2", "--out", str(tmp_path / "ddp")]) == 0
    ddp_text = (tmp_path / "ddp" / dist.ACCELERATE_FILE).read_text()
    assert (
        cli_main(
            [
                "accelerate-config",
                dist.CUSTOM,
                "--config",
                str(tmp_path / "ddp" / dist.ACCELERATE_FILE),
                "--out",
                str(tmp_path / "c"),
            ]
        )
        == 0
    )
    assert (tmp_path / "c" / dist.ACCELERATE_FILE).read_text() == ddp_text
    assert cli_main(["accelerate-config", dist.CUSTOM]) == 2
    assert "--config FILE" in capsys.readouterr().err


def test_check_launch_refuses_silent_fallbacks():
    check_launch(dist.DDP, "DistributedType.MULTI_CPU", num_processes=2, world_size=2)
    check_launch(dist.ZERO3, "DistributedType.DEEPSPEED", num_processes=2, world_size=2)
    check_launch(None, "DistributedType.NO", num_processes=1, world_size=1)
    # Measured: a MULTI_GPU config on a CPU machine without use_cpu -> each process alone (type NO, 1 process).
    with pytest.raises(UserError, match="did not join one process group"):
        check_launch(dist.DDP, "DistributedType.NO", num_processes=1, world_size=2)
    with pytest.raises(UserError, match="DeepSpeed is not active"):
        check_launch(dist.ZERO2, "DistributedType.MULTI_CPU", num_processes=2, world_size=2)
    # Measured: accelerate 1.15 ignores the FSDP plugin on the CPU and runs plain MULTI_CPU data parallel.
    with pytest.raises(UserError, match="FSDP is not active"):
        check_launch(dist.FSDP, "DistributedType.MULTI_CPU", num_processes=2, world_size=2)


# ------------------------------------------------------------------ real multi-process runs on the CPU

TRAIN_SCRIPT = """
import json, os, sys
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, Trainer, TrainingArguments
from llmft.finetune.distributed import check_launch, launched_world_size

model_dir, out, preset, total_batch = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
world = launched_world_size()
generator = torch.Generator().manual_seed(0)
rows = [{"input_ids": torch.randint(3, 500, (16,), generator=generator).tolist()} for _ in range(48)]
for row in rows:
    row["labels"] = list(row["input_ids"])
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
args = TrainingArguments(
    output_dir=out, per_device_train_batch_size=total_batch // world, gradient_accumulation_steps=1,
    max_steps=4, learning_rate=1e-3, lr_scheduler_type="constant", logging_steps=1, save_strategy="no",
    report_to=[], seed=0, data_seed=0, use_cpu=not torch.cuda.is_available(), disable_tqdm=True)
trainer = Trainer(model=model, args=args, train_dataset=Dataset.from_list(rows))
check_launch(preset, str(trainer.accelerator.distributed_type), trainer.accelerator.num_processes)
trainer.train()
trainer.save_model(os.path.join(out, "final"))
if trainer.is_world_process_zero():
    with open(os.path.join(out, "result.json"), "w") as f:
        json.dump({"type": str(trainer.accelerator.distributed_type), "processes": trainer.accelerator.num_processes,
                   "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h]}, f)
trainer.accelerator.wait_for_everyone()
trainer.accelerator.state.destroy_process_group()  # as the engine's recipe.finish does
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


FINISH_SCRIPT = """
import sys
from pathlib import Path
import torch.distributed as dist
from accelerate import PartialState
from llmft.finetune import recipe

dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{sys.argv[2]}", rank=0, world_size=1)
state = PartialState(cpu=True)
assert dist.is_initialized()
exit_code = recipe.finish(recipe.Run(state, Path(sys.argv[1]), None, None), trainer=None, summary=None)
print(exit_code, dist.is_initialized())
"""


def test_finishing_a_run_destroys_its_process_group(tmp_path):
    """Left to exit-time destructors, gloo's threads can abort a finished rank (exit -6, a finished run reported
    failed); recipe.finish destroys the group itself. A real one-process gloo group, in its own interpreter."""
    result = subprocess.run(
        [sys.executable, "-c", FINISH_SCRIPT, str(tmp_path), str(_free_port())],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split() == ["0", "False"]


def _launch(tmp_path: Path, model_dir: Path, preset: str, processes: int) -> tuple[dict, Path]:
    script = tmp_path / "train_script.py"
    script.write_text(TRAIN_SCRIPT)
    config = write_launch_files(preset, tmp_path / f"config-{preset}", num_processes=processes)[0]
    out = tmp_path / f"run-{preset}-{processes}"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(config),
        "--main_process_port",
        str(_free_port()),
        str(script),
        str(model_dir),
        str(out),
        preset,
        "8",
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return json.loads((out / "result.json").read_text()), out / "final"


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def single_run(tmp_path_factory, tiny_model_dir):
    return _launch(tmp_path_factory.mktemp("single"), tiny_model_dir, dist.SINGLE, 1)


def _assert_same_training(run, reference):
    (result, final), (ref_result, ref_final) = run, reference
    assert len(result["losses"]) == len(ref_result["losses"]) == 4
    for got, want in zip(result["losses"], ref_result["losses"], strict=False):
        assert got == pytest.approx(want, abs=1e-4)
    _assert_same_weights(final, ref_final)


def _assert_same_weights(final: Path, ref_final: Path) -> None:
    import torch

    ref_weights = _weights(ref_final)
    weights = _weights(final)
    assert weights.keys() == ref_weights.keys()
    for name, tensor in ref_weights.items():
        torch.testing.assert_close(weights[name].float(), tensor.float(), atol=1e-4, rtol=1e-3, msg=name)


@pytest.mark.slow
def test_two_process_deepspeed_zero3_matches_and_saves_a_consolidated_model(tmp_path, tiny_model_dir, single_run):
    run = _launch(tmp_path, tiny_model_dir, dist.ZERO3, 2)
    assert run[0]["processes"] == 2 and run[0]["type"].endswith("DEEPSPEED")
    # Full tensors in one safetensors file (not ZeRO shards), equal to the 1-process run's weights.
    _assert_same_training(run, single_run)


def _gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


@pytest.mark.slow
@pytest.mark.skipif(
    _gpu_count() < 2,
    reason=(
        "FSDP needs 2 GPUs: accelerate 1.15 enables its FSDP plugin only for accelerator device types; on a "
        "CPU-only machine the run silently becomes plain multi-CPU data parallel (measured; check_launch refuses "
        "that)."
    ),
)
def test_two_process_fsdp_matches_one_process(tmp_path, tiny_model_dir, single_run):
    run = _launch(tmp_path, tiny_model_dir, dist.FSDP, 2)
    assert run[0]["processes"] == 2 and run[0]["type"].endswith("FSDP")
    _assert_same_training(run, single_run)


@pytest.mark.slow
def test_llmft_sft_two_process_ddp_matches_one_process(tmp_path, tiny_model_dir):
    """`accelerate launch ... -m llmft.cli sft` with the generated auto-ddp config (gloo, 2 processes) against
    the single-process preset with the same total batch: the batch plan uses the real process count
    (2 x 2 per device vs 1 x 2 per device x 2 accumulation) and the losses and weights match."""
    qa = [
        ("What is the capital of France?", "Paris."),
        ("What color is the sky?", "Blue."),
        ("Who wrote Hamlet?", "Shakespeare."),
        ("How many legs does a spider have?", "Eight."),
    ]
    dataset = tmp_path / "train.jsonl"
    dataset.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}) + "\n"
            for q, a in qa * 4
        )
    )
    runs = {}
    for preset, processes in ((dist.SINGLE, 1), (dist.DDP, 2)):
        out = tmp_path / f"out-{processes}"
        config = tmp_path / f"sft-{processes}.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "method": "sft",
                    "data_conf": {
                        "training_data": {"datasets": [{"path": str(dataset)}]},
                        "chat_template_name": "keep-original",
                    },
                    "training_args": {
                        "output_dir": str(out),
                        "learning_rate": 1e-3,
                        "lr_scheduler_type": "constant",
                        "max_steps": 6,
                        "logging_steps": 2,
                        "save_strategy": "no",
                        "report_to": [],
                    },
                    "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 2},
                    "peft_conf": {"peft_type": "NO_PEFT"},
                    "run_conf": {"model": str(tiny_model_dir)},
                    "sft_args": {"max_seq_length": 96},
                    "launch_conf": {"num_processes": processes, "distributed_type": preset},
                }
            )
        )
        launch_config = write_launch_files(preset, tmp_path / f"launch-{processes}", num_processes=processes)[0]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "accelerate.commands.launch",
                "--config_file",
                str(launch_config),
                "--main_process_port",
                str(_free_port()),
                "-m",
                "llmft.cli",
                "sft",
                str(config),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
        runs[processes] = out

    one, two = (json.loads((runs[n] / "summary.json").read_text()) for n in (1, 2))
    assert one["batch"] == {"total": 4, "processes": 1, "per_device": 2, "gradient_accumulation_steps": 2}
    assert two["batch"] == {"total": 4, "processes": 2, "per_device": 2, "gradient_accumulation_steps": 1}
    losses = {
        n: [json.loads(line)["loss"] for line in (runs[n] / "metrics.jsonl").read_text().splitlines()] for n in (1, 2)
    }
    assert len(losses[1]) == len(losses[2]) == 3
    assert losses[2] == pytest.approx(losses[1], abs=1e-4)
    assert two["final_train_loss"] == pytest.approx(one["final_train_loss"], abs=1e-4)
    _assert_same_weights(runs[2] / "checkpoint-final", runs[1] / "checkpoint-final")
    # Only rank 0 wrote the outputs: one metrics line per logging step, not one per process.
    assert len((runs[2] / "metrics.jsonl").read_text().splitlines()) == 3
