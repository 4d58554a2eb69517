"""`llmft preview-data CONFIG`: see what SFT training will train on, without loading a model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "preview-data",
        help="tokenise an SFT config's data as training will and show the trained spans",
        description="Reads the config's datasets, applies its chat template and loss mask exactly as `llmft sft` "
        "does (only the tokenizer is loaded) and shows the first samples with the trained text between "
        "[[ and ]], the trained and masked token counts, and every sample left out with why. Exit "
        "status 1 when the chat template refuses a conversation (training would fail).",
    )
    parser.add_argument("config", help="YAML file with the finetuning_config sections (method: sft)")
    parser.add_argument(
        "-n", "--samples", type=int, default=3, metavar="N", help="training samples to show (default 3)"
    )
    parser.add_argument(
        "--json",
        metavar="FILE",
        help="write one JSON object per sample (every split): where, split, left_out, input_ids, "
        "labels (-100 where no loss) and the decoded text",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune.config import load_config
    from llmft.finetune.preview import preview

    if args.samples < 0:
        raise UserError(f"-n must be 0 or more, got {args.samples}")
    summaries = preview(load_config(args.config), args.samples, json_path=args.json)
    refused = sum(summary.refused for summary in summaries)
    if refused:
        print(
            f"the chat template refuses {refused} conversation(s): `llmft sft {args.config}` would fail; "
            "see the reasons above"
        )
        return 1
    return 0
