"""`llmft config-schema sft|dpo` (JSON Schema) and `llmft config-reference` (Markdown reference)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    schema = subparsers.add_parser(
        "config-schema", help="print the JSON Schema of a fine-tuning config (embedded by the finetune chart)"
    )
    schema.add_argument("method", choices=["sft", "dpo"], help="training method")
    schema.set_defaults(func=_schema)

    reference = subparsers.add_parser(
        "config-reference", help="print the Markdown config reference (docs/config-reference.md)"
    )
    reference.set_defaults(func=_reference)


def _schema(args: argparse.Namespace) -> int:
    import json

    from llmft.finetune.config import config_json_schema

    print(json.dumps(config_json_schema(args.method), indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    from llmft.finetune.reference import config_reference

    print(config_reference(), end="")
    return 0
