"""`llmft accelerate-config PRESET --out DIR`: write the accelerate (and DeepSpeed) config for a preset."""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from llmft.finetune.distributed import PRESETS  # light: no torch/accelerate at import time


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "accelerate-config",
        help="write the accelerate/DeepSpeed config files of a distributed preset (or check a custom one)",
        description=(
            "Write accelerate_config.yaml (and deepspeed_config.json for the DeepSpeed presets) for "
            "`accelerate launch --config_file`. For custom-accelerate-config, check the YAML given with "
            "--config (and copy it to --out when given)."
        ),
    )
    parser.add_argument("preset", choices=PRESETS, metavar="PRESET", help="one of: " + ", ".join(PRESETS))
    parser.add_argument("--num-processes", type=int, default=1, help="processes (GPUs) on this machine (default 1)")
    parser.add_argument(
        "--mixed-precision",
        choices=("no", "bf16", "fp16"),
        default="no",
        help="accelerate mixed precision (default no); DeepSpeed presets take precision from "
        "the training arguments through 'auto' instead",
    )
    parser.add_argument("--out", help="output folder for the files")
    parser.add_argument(
        "--deepspeed-config-path",
        help="path of the DeepSpeed JSON as written into the YAML (default: its absolute path "
        "in --out); use the path where the file will be mounted",
    )
    parser.add_argument("--config", help="custom-accelerate-config: the accelerate YAML to check")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune.distributed import ACCELERATE_FILE, CUSTOM, validate_accelerate_config, write_launch_files

    if args.preset == CUSTOM:
        if not args.config:
            raise UserError(f"{CUSTOM}: give the accelerate YAML to check with --config FILE")
        data = validate_accelerate_config(Path(args.config))
        print(f"{args.config}: valid accelerate config (distributed_type {data['distributed_type']})")
        if args.out:
            Path(args.out).mkdir(parents=True, exist_ok=True)
            target = Path(args.out) / ACCELERATE_FILE
            shutil.copyfile(args.config, target)
            print(f"copied to {target}")
        return 0
    if not args.out:
        raise UserError("--out: give the folder to write the config files to")
    if args.config:
        raise UserError(f"--config is only for {CUSTOM}; preset {args.preset} is generated")
    for path in write_launch_files(
        args.preset,
        Path(args.out),
        num_processes=args.num_processes,
        mixed_precision=args.mixed_precision,
        deepspeed_config_path=args.deepspeed_config_path,
    ):
        print(f"wrote {path}")
    return 0
