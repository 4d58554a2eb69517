"""`llmft tiny-model DIR`: a small random-weight model for tests, demos and smoke runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tiny-model",
        help="write a tiny random-weight causal LM with a real tokenizer and chat template",
    )
    parser.add_argument("directory", help="output folder (a normal Hugging Face model folder)")
    parser.add_argument("--arch", default="llama", help="architecture: llama (default), qwen2, mistral")
    parser.add_argument("--seed", type=int, default=0, help="weights seed; same seed, same files")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--overwrite", action="store_true", help="write into a non-empty folder")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmft.overwrite import check_output_folder
    from llmft.tiny_model import MARKER, build_tiny_model

    # An earlier tiny model (same seed, same files) may be rewritten; anything else is the user's.
    rebuild = (Path(args.directory) / MARKER).is_file()
    check_output_folder(Path(args.directory), "tiny-model DIR", overwrite=args.overwrite or rebuild)
    out = build_tiny_model(
        args.directory, arch=args.arch, seed=args.seed, hidden_size=args.hidden_size, layers=args.layers
    )
    print(f"wrote tiny {args.arch} model to {out}")
    return 0
