"""`llmft sft CONFIG` and `llmft dpo CONFIG`: fine-tuning from one YAML config (the tutorial's finetuning_config)."""

from __future__ import annotations

import argparse

METHODS = {
    "sft": ("supervised fine-tuning (LoRA or full) from a YAML config", "the data (file:line), then trains"),
    "dpo": ("direct preference optimisation (LoRA or full) from a YAML config",
            "the preference data (file:line), then trains with TRL's DPO trainer"),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for method, (summary, what) in METHODS.items():
        parser = subparsers.add_parser(
            method, help=summary,
            description=f"Validates the config (every problem at once), {what}. "
                        "See docs/config-reference.md for every key.",
        )
        parser.add_argument("config", help=f"YAML file with the finetuning_config sections (method: {method}, ...)")
        parser.add_argument("--check", action="store_true", help="validate the config and stop")
        parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
        parser.set_defaults(func=_run, method=method)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune.config import load_config

    config = load_config(args.config)
    if config.method != args.method:
        raise UserError(f"{args.config}: method is {config.method!r}; run `llmft {config.method} {args.config}` "
                        f"(or set method: {args.method})")
    if args.check:
        print(f"{args.config}: valid {args.method} config")
        return 0
    # A trial of `llmft tune` (LLMFT_TUNE_TRIAL set) reports to its study and stops when pruned.
    from llmft.tune.pruning import callbacks_from_environment

    callbacks = callbacks_from_environment()
    if args.method == "dpo":
        from llmft.finetune.dpo import run_dpo

        return run_dpo(config, callbacks=callbacks)
    from llmft.finetune.sft import run_sft

    return run_sft(config, callbacks=callbacks)
