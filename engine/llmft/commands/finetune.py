"""`llmft sft CONFIG` and `llmft dpo CONFIG`: fine-tuning from one YAML config (the tutorial's finetuning_config).

A relaunched pod's time to its first step is what a restart costs, so the command starts the
restore of the remote checkpoint (a download) in a forked child process before it imports torch,
transformers, datasets and trl, and the download overlaps them and the data checks. When this run is the
process's program, optional libraries it does not use (peft without LoRA, DeepSpeed without a
DeepSpeed launch) are marked absent so that transformers and accelerate do not import them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from llmft import timeline

METHODS = {
    "sft": ("supervised fine-tuning (LoRA or full) from a YAML config", "the data (file:line), then trains"),
    "dpo": (
        "direct preference optimisation (LoRA or full) from a YAML config",
        "the preference data (file:line), then trains with TRL's DPO trainer",
    ),
}


def register(subparsers: argparse._SubParsersAction) -> None:
    for method, (summary, what) in METHODS.items():
        parser = subparsers.add_parser(
            method,
            help=summary,
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
        raise UserError(
            f"{args.config}: method is {config.method!r}; run `llmft {config.method} {args.config}` "
            f"(or set method: {args.method})"
        )
    if args.check:
        print(f"{args.config}: valid {args.method} config")
        return 0
    return run_config(config, program=getattr(args, "program", False))


def run_config(config, program: bool, callbacks: list | tuple = ()) -> int:
    """Run a validated fine-tuning config: the restore first, in the background, then imports and training.

    `program`: this run is the process's program (`llmft sft` from the shell, a pod, `accelerate
    launch`): its time line counts from the process's start and unused optional libraries are kept
    out. From Python inside a longer-lived process (tests), False.
    """
    timeline.start(program)
    if program:
        keep_unused_libraries_out(config)
    start_restore(config, separate_process=program)
    warm_imports(config.method)
    timeline.mark("imports")
    # A trial of `llmft tune` (LLMFT_TUNE_TRIAL set) reports to its study and stops when pruned.
    from llmft.tune.pruning import callbacks_from_environment

    callbacks = [*callbacks, *callbacks_from_environment()]
    if config.method == "dpo":
        from llmft.finetune.dpo import run_dpo

        return run_dpo(config, callbacks=callbacks)
    from llmft.finetune.sft import run_sft

    return run_sft(config, callbacks=callbacks)


def start_restore(config, separate_process: bool = False) -> bool:
    """Start downloading the newest remote checkpoint now (single process); `start_run` joins it.

    `separate_process`: in a forked child (the process's own program, before its first thread).
    """
    from llmft.finetune.recipe import checkpoint_sync

    sync = checkpoint_sync(config)
    return sync is not None and sync.restore_in_background(separate_process)


def warm_imports(method: str) -> None:
    """Import what every run needs (while the restore downloads), so the time line shows imports as one phase."""
    import accelerate  # noqa: F401
    import datasets  # noqa: F401
    import torch  # noqa: F401
    import transformers.trainer  # noqa: F401

    if method == "dpo":
        import trl.trainer.dpo_trainer
    else:
        import trl.trainer.sft_trainer  # noqa: F401


def unused_libraries(config) -> list[str]:
    """Optional libraries this run never calls: peft without LoRA or quantization, DeepSpeed without its launch."""
    unused = []
    if config.peft_conf.lora() is None and config.quant_conf.quantization_type != "bits-and-bytes":
        unused.append("peft")
    from llmft.finetune.distributed import DEEPSPEED_STAGES

    accelerate_config = config.launch_conf.accelerate_config
    uses_deepspeed = (
        config.launch_conf.distributed_type in DEEPSPEED_STAGES
        or os.environ.get("ACCELERATE_USE_DEEPSPEED", "").lower() in ("1", "true")
        or (
            accelerate_config is not None
            and Path(accelerate_config).is_file()
            and "deepspeed" in Path(accelerate_config).read_text().lower()
        )
    )
    if not uses_deepspeed:
        unused.append("deepspeed")
    return unused


def keep_unused_libraries_out(config) -> None:
    """Mark unused optional libraries absent (a None entry in sys.modules, Python's own way to say "not
    installed"): transformers' Trainer imports peft at import time when it is installed, and accelerate
    imports DeepSpeed whenever it inspects a model, seconds each on a relaunch.

    Only before transformers is imported, and only for a process whose program this run is: a process
    that later wants the library would find it missing.
    """
    if "transformers" in sys.modules:
        return
    for name in unused_libraries(config):
        if name not in sys.modules:
            sys.modules[name] = None  # type: ignore[assignment]
