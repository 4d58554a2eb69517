"""Distributed presets: the accelerate (and DeepSpeed) config files for `accelerate launch`.

A preset is the finetune chart's `distributedType`. `launch_files(preset, ...)`
returns the file texts; they are deterministic (same arguments, same bytes) so
the chart can embed them and a test can keep chart and generator in sync.

| preset                   | accelerate distributed_type | what is sharded across processes          |
|--------------------------|-----------------------------|--------------------------------------------|
| auto-single-process      | NO                          | nothing (one process)                      |
| auto-ddp                 | MULTI_GPU                   | nothing: each process holds a full replica |
| auto-deepspeed-stage1    | DEEPSPEED (ZeRO-1)          | optimizer states                           |
| auto-deepspeed-stage2    | DEEPSPEED (ZeRO-2)          | optimizer states + gradients               |
| auto-deepspeed-stage3    | DEEPSPEED (ZeRO-3)          | optimizer states + gradients + weights     |
| auto-fsdp                | FSDP (FSDP2, full shard)    | optimizer states + gradients + weights     |
| custom-accelerate-config | the user's YAML             | (validated with `validate_accelerate_config`) |

DeepSpeed presets point the accelerate YAML at a DeepSpeed JSON whose batch
size, gradient accumulation, clipping, precision and bucket sizes are "auto":
the Hugging Face Trainer fills them from TrainingArguments (so the JSON never
contradicts the resolved batch size), and the optimizer is the Trainer's own.
With a DeepSpeed JSON, accelerate forbids `mixed_precision` in the YAML;
precision then comes from TrainingArguments (bf16/fp16) through "auto".
ZeRO-3 gathers a consolidated 16-bit model on save
(`stage3_gather_16bit_weights_on_model_save`); FSDP uses FULL_STATE_DICT so the
saved model is one consolidated state dict written by rank 0.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError

SINGLE = "auto-single-process"
DDP = "auto-ddp"
ZERO1 = "auto-deepspeed-stage1"
ZERO2 = "auto-deepspeed-stage2"
ZERO3 = "auto-deepspeed-stage3"
FSDP = "auto-fsdp"
CUSTOM = "custom-accelerate-config"

PRESETS = (SINGLE, DDP, ZERO1, ZERO2, ZERO3, FSDP, CUSTOM)
GENERATED_PRESETS = PRESETS[:-1]
DEEPSPEED_STAGES = {ZERO1: 1, ZERO2: 2, ZERO3: 3}
MIXED_PRECISIONS = ("no", "bf16", "fp16")
# Presets that cannot run over several nodes (`launch_conf.num_nodes` > 1; the chart's `finetuningNodes`):
# one process is one node. Every other preset spans nodes through torchrun's rendezvous (a custom
# accelerate config is launched with the node settings added). The chart's render-time check is generated
# from this table (`llmft.chart_files`).
SINGLE_NODE_PRESETS = {SINGLE: "it runs one process"}


def spans_nodes(preset: str) -> bool:
    """Whether `preset` can run over several nodes."""
    return preset not in SINGLE_NODE_PRESETS


ACCELERATE_FILE = "accelerate_config.yaml"
DEEPSPEED_FILE = "deepspeed_config.json"


@dataclass(frozen=True)
class LaunchFiles:
    """Generated file texts for one preset (`deepspeed_json` only for DeepSpeed presets)."""

    preset: str
    accelerate_yaml: str
    deepspeed_json: str | None = None


def deepspeed_config(stage: int) -> dict:
    """The DeepSpeed JSON for ZeRO `stage`, with "auto" wherever the HF Trainer fills the value."""
    zero: dict = {
        "stage": stage,
        "overlap_comm": True,
        "contiguous_gradients": True,
        "reduce_bucket_size": "auto",
    }
    if stage >= 2:
        zero.update({"allgather_partitions": True, "allgather_bucket_size": 200_000_000, "reduce_scatter": True})
    if stage == 3:
        zero.update(
            {
                "stage3_prefetch_bucket_size": "auto",
                "stage3_param_persistence_threshold": "auto",
                "stage3_max_live_parameters": 1_000_000_000,
                "stage3_max_reuse_distance": 1_000_000_000,
                "sub_group_size": 1_000_000_000,
                # Save a consolidated 16-bit model (not only ZeRO shards) for checkpoint-final.
                "stage3_gather_16bit_weights_on_model_save": True,
            }
        )
    return {
        "bf16": {"enabled": "auto"},
        "fp16": {
            "enabled": "auto",
            "loss_scale": 0,
            "loss_scale_window": 1000,
            "initial_scale_power": 16,
            "hysteresis": 2,
            "min_loss_scale": 1,
        },
        "zero_optimization": zero,
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
        "train_micro_batch_size_per_gpu": "auto",
        "steps_per_print": 1_000_000_000,  # the engine logs progress itself
        "wall_clock_breakdown": False,
    }


def accelerate_config(
    preset: str, num_processes: int = 1, mixed_precision: str = "no", deepspeed_config_path: str = DEEPSPEED_FILE
) -> dict:
    """The accelerate config (as loaded by `accelerate launch --config_file`) for a generated preset."""
    _check_arguments(preset, num_processes, mixed_precision)
    config: dict = {
        "compute_environment": "LOCAL_MACHINE",
        "debug": False,
        "machine_rank": 0,
        "main_training_function": "main",
        "num_machines": 1,
        "num_processes": num_processes,
        "rdzv_backend": "static",
        "same_network": True,
        "use_cpu": False,
    }
    if preset == SINGLE or (preset == DDP and num_processes == 1):
        # DDP over one process is single-process training; accelerate refuses MULTI_GPU with 1 process.
        config.update(distributed_type="NO", mixed_precision=mixed_precision)
    elif preset == DDP:
        config.update(distributed_type="MULTI_GPU", gpu_ids="all", mixed_precision=mixed_precision)
    elif preset in DEEPSPEED_STAGES:
        config.update(
            distributed_type="DEEPSPEED",
            deepspeed_config={
                "deepspeed_config_file": deepspeed_config_path,
                "deepspeed_multinode_launcher": "standard",
                # ZeRO-3: build the model already partitioned (no full copy per process).
                "zero3_init_flag": DEEPSPEED_STAGES[preset] == 3,
            },
        )
    elif preset == FSDP:
        config.update(
            distributed_type="FSDP",
            mixed_precision=mixed_precision,
            fsdp_config={
                "fsdp_version": 2,
                "fsdp_auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # wraps the model's _no_split_modules layers
                "fsdp_reshard_after_forward": True,  # full shard (ZeRO-3-like)
                "fsdp_state_dict_type": "FULL_STATE_DICT",  # consolidated save on rank 0
                "fsdp_cpu_ram_efficient_loading": True,
                "fsdp_offload_params": False,
                "fsdp_activation_checkpointing": False,
            },
        )
    return config


def launch_files(
    preset: str, num_processes: int = 1, mixed_precision: str = "no", deepspeed_config_path: str = DEEPSPEED_FILE
) -> LaunchFiles:
    """Deterministic file texts for `preset`: the accelerate YAML and, for DeepSpeed, its JSON.

    `deepspeed_config_path` is the path written into the YAML: where the JSON will
    be when `accelerate launch` runs (the chart's mount path; a relative path is
    resolved from the launch's working directory).
    """
    import yaml

    config = accelerate_config(preset, num_processes, mixed_precision, deepspeed_config_path)
    header = (
        f"# accelerate config generated by llmft for distributedType {preset} "
        f"({num_processes} process{'es' if num_processes != 1 else ''}"
        f"{'' if preset in DEEPSPEED_STAGES else ', mixed precision ' + mixed_precision}).\n"
        f"# Regenerate with: llmft accelerate-config {preset} --num-processes {num_processes}"
        f"{'' if preset in DEEPSPEED_STAGES else ' --mixed-precision ' + mixed_precision}\n"
    )
    text = header + yaml.safe_dump(config, sort_keys=True, default_flow_style=False)
    ds_json = None
    if preset in DEEPSPEED_STAGES:
        ds_json = json.dumps(deepspeed_config(DEEPSPEED_STAGES[preset]), indent=2, sort_keys=True) + "\n"
    return LaunchFiles(preset=preset, accelerate_yaml=text, deepspeed_json=ds_json)


def write_launch_files(
    preset: str,
    out_dir: Path,
    num_processes: int = 1,
    mixed_precision: str = "no",
    deepspeed_config_path: str | None = None,
) -> list[Path]:
    """Write the preset's files into `out_dir`; returns the paths written.

    By default the YAML refers to the JSON by its absolute path in `out_dir`.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds_path = deepspeed_config_path or str((out_dir / DEEPSPEED_FILE).resolve())
    files = launch_files(preset, num_processes, mixed_precision, ds_path)
    written = [out_dir / ACCELERATE_FILE]
    written[0].write_text(files.accelerate_yaml)
    if files.deepspeed_json is not None:
        written.append(out_dir / DEEPSPEED_FILE)
        written[1].write_text(files.deepspeed_json)
    return written


def _check_arguments(preset: str, num_processes: int, mixed_precision: str) -> None:
    if preset == CUSTOM:
        raise UserError(
            f"distributedType {CUSTOM}: the accelerate config is yours, not generated; "
            f"validate it with `llmft accelerate-config {CUSTOM} --validate FILE`"
        )
    if preset not in PRESETS:
        raise UserError(f"distributedType: unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    if not isinstance(num_processes, int) or isinstance(num_processes, bool) or num_processes < 1:
        raise UserError(f"num_processes: must be a positive integer, got {num_processes!r}")
    if preset == SINGLE and num_processes != 1:
        raise UserError(
            f"distributedType {SINGLE} runs exactly one process, got num_processes={num_processes}: "
            f"use {DDP} (or a DeepSpeed/FSDP preset) for {num_processes} processes"
        )
    if mixed_precision not in MIXED_PRECISIONS:
        raise UserError(f"mixed_precision: must be one of {', '.join(MIXED_PRECISIONS)}, got {mixed_precision!r}")


# ---------------------------------------------------------------- custom configs


def _launch_option_names() -> set[str]:
    """Every option `accelerate launch` accepts (dest names): the keys a config may set."""
    from accelerate.commands.launch import launch_command_parser

    return {action.dest for action in launch_command_parser()._actions}


def validate_accelerate_config(path: Path, check_files: bool = True) -> dict:
    """Check a user's accelerate YAML the way `accelerate launch` will read it; returns the mapping.

    Raises UserError naming the file (and line for YAML syntax errors) and the
    bad key: unknown top-level keys (accelerate's own loader), unknown keys in
    `deepspeed_config` / `fsdp_config` (they become `accelerate launch`
    options), an unknown `distributed_type`, and, with `check_files`, a
    `deepspeed_config_file` that does not exist.
    """
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.utils import DistributedType

    from llmft.yamlfile import read_yaml

    path = Path(path)
    where = f"custom accelerate config {path}"
    if not path.is_file():
        raise UserError(
            f"{where}: file not found; give the path of an accelerate config YAML "
            f"(e.g. one written by `accelerate config` or `llmft accelerate-config`)"
        )
    data = read_yaml(path, where)
    if not isinstance(data, dict):
        raise UserError(f"{where}: must be a YAML mapping of accelerate settings, got {type(data).__name__}")
    if data.get("compute_environment", "LOCAL_MACHINE") != "LOCAL_MACHINE":
        raise UserError(f"{where}: compute_environment must be LOCAL_MACHINE (got {data['compute_environment']!r})")

    problems = []
    known = set(ClusterConfig.__dataclass_fields__) | {"fp16", "dynamo_backend"}  # legacy keys accelerate converts
    for key in sorted(set(data) - known):
        problems.append(f"{key}: unknown accelerate config key")
    if "distributed_type" not in data:
        problems.append(f"distributed_type: missing; one of {', '.join(t.value for t in DistributedType)}")
    else:
        try:
            DistributedType(data["distributed_type"])
        except ValueError:
            problems.append(
                f"distributed_type: {data['distributed_type']!r} is not one of "
                f"{', '.join(t.value for t in DistributedType)}"
            )
    if data.get("mixed_precision") not in (None, *MIXED_PRECISIONS, "fp8"):
        problems.append(f"mixed_precision: {data['mixed_precision']!r} is not one of no, bf16, fp16, fp8")
    num = data.get("num_processes")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 1):
        problems.append(f"num_processes: must be a positive integer, got {num!r}")

    options = _launch_option_names()
    for section, prefix in (("deepspeed_config", ""), ("fsdp_config", "fsdp_")):
        value = data.get(section)
        if value is None:
            continue
        if not isinstance(value, dict):
            problems.append(f"{section}: must be a mapping, got {type(value).__name__}")
            continue
        for key in sorted(value):
            option = key if key.startswith(prefix) else prefix + key
            if option not in options:
                problems.append(f"{section}.{key}: unknown key (not an `accelerate launch` option)")
    ds = data.get("deepspeed_config") or {}
    ds_file = ds.get("deepspeed_config_file") if isinstance(ds, dict) else None
    if ds_file:
        ds_path = Path(ds_file)
        if not ds_path.is_absolute():
            ds_path = path.parent / ds_path if (path.parent / ds_path).exists() else ds_path
        if check_files and not ds_path.is_file():
            problems.append(f"deepspeed_config.deepspeed_config_file: {ds_file} does not exist")
        elif check_files:
            try:
                json.loads(ds_path.read_text())
            except json.JSONDecodeError as error:
                problems.append(
                    f"deepspeed_config.deepspeed_config_file: {ds_file}:{error.lineno}: not valid JSON ({error.msg})"
                )
        clashing = sorted(
            set(ds)
            & {
                "zero_stage",
                "gradient_accumulation_steps",
                "gradient_clipping",
                "offload_optimizer_device",
                "offload_param_device",
                "zero3_save_16bit_model",
            }
        )
        if clashing or "mixed_precision" in data:
            keys = ", ".join(
                [f"deepspeed_config.{k}" for k in clashing] + (["mixed_precision"] if "mixed_precision" in data else [])
            )
            problems.append(
                f"{keys}: accelerate refuses these next to deepspeed_config_file; "
                f"set them in the DeepSpeed JSON instead"
            )
    if problems:
        raise UserError(f"{where} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    return data


# ---------------------------------------------------------------- launch checks


def launched_world_size() -> int:
    """The number of processes `accelerate launch` / torchrun started (env WORLD_SIZE; 1 when not launched)."""
    import os

    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def check_launch(preset: str | None, distributed_type: str, num_processes: int, world_size: int | None = None) -> None:
    """Refuse a run whose processes did not form the setup the preset asked for.

    Call it with the live accelerator's values (`str(accelerator.distributed_type)`,
    `accelerator.num_processes`) before training; `preset` is the config's `launch_conf.distributed_type`
    (None: only the process-group check). Catches the silent fallbacks
    measured with accelerate 1.15: processes that were launched but never joined
    one group (each would train alone on the full batch, e.g. a MULTI_GPU config
    on a machine without GPUs unless TrainingArguments.use_cpu is set), and
    DeepSpeed/FSDP plugins that accelerate ignored (FSDP is GPU-only: on the CPU
    the run silently becomes plain multi-process data parallel).
    """
    world_size = launched_world_size() if world_size is None else world_size
    kind = str(distributed_type).rsplit(".", 1)[-1]
    if world_size > 1 and num_processes != world_size:
        raise UserError(
            f"accelerate launch started {world_size} processes but they did not join one process group "
            f"(this process sees {num_processes}; distributed type {kind}), so each would train alone. "
            f"On a machine without GPUs the training arguments must set use_cpu (gloo backend); otherwise "
            f"check that every process sees a GPU (finetuningGpus / --num_processes)."
        )
    if preset in DEEPSPEED_STAGES and kind != "DEEPSPEED":
        raise UserError(
            f"distributedType {preset}: DeepSpeed is not active in this process (distributed type {kind}); "
            f"launch with the generated accelerate config (`accelerate launch --config_file ...`)."
        )
    if preset == FSDP and kind != "FSDP":
        raise UserError(
            f"distributedType {FSDP}: FSDP is not active (distributed type {kind}). accelerate enables FSDP only "
            f"on GPUs/accelerators; on a CPU-only machine use {DDP} or {ZERO3}."
        )
