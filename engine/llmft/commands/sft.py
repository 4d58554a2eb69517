"""`llmft sft CONFIG`: supervised fine-tuning from one YAML config (the tutorial's finetuning_config)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sft", help="supervised fine-tuning (LoRA or full) from a YAML config",
        description="Validates the config (every problem at once), the data (file:line), then trains. "
                    "See docs/config-reference.md for every key.",
    )
    parser.add_argument("config", help="YAML file with the finetuning_config sections (method, data_conf, ...)")
    parser.add_argument("--check", action="store_true", help="validate the config and stop")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune.config import load_config

    config = load_config(args.config)
    if config.method != "sft":
        raise UserError(f"{args.config}: method is {config.method!r}; run `llmft {config.method} {args.config}`")
    if args.check:
        print(f"{args.config}: valid sft config")
        return 0
    from llmft.finetune.sft import run_sft

    return run_sft(config)
