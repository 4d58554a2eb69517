"""`llmft settings-reference`: the Markdown table of the engine's `LLMFT_*` settings (docs/settings.md)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "settings-reference", help="print the Markdown table of the LLMFT_* environment settings (docs/settings.md)"
    )
    parser.set_defaults(func=_reference)


def _reference(args: argparse.Namespace) -> int:
    from llmft.settings import settings_reference

    print(settings_reference(), end="")
    return 0
