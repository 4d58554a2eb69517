"""`llmft dpo CONFIG`: direct preference optimisation from one YAML config (method: dpo)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "dpo", help="direct preference optimisation (LoRA or full) from a YAML config",
        description="Validates the config (every problem at once), the preference data (file:line), then trains "
                    "with TRL's DPO trainer. See docs/config-reference.md for every key.",
    )
    parser.add_argument("config", help="YAML file with the finetuning_config sections (method: dpo, data_conf, ...)")
    parser.add_argument("--check", action="store_true", help="validate the config and stop")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune.config import load_config

    config = load_config(args.config)
    if config.method != "dpo":
        raise UserError(f"{args.config}: method is {config.method!r}; run `llmft {config.method} {args.config}` "
                        "(or set method: dpo)")
    if args.check:
        print(f"{args.config}: valid dpo config")
        return 0
    from llmft.finetune.dpo import run_dpo

    return run_dpo(config)
