"""`llmft merge-adapter BASE ADAPTER OUT`: a LoRA adapter merged into its base model."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "merge-adapter",
        help="merge a LoRA adapter into its base model (a plain model folder to serve)",
        description="Locations: local paths (./dir), bucket/path or s3://bucket/path. The output has "
        "safetensors weights, the tokenizer with its chat template and generation_config.json.",
    )
    parser.add_argument("base", help="base model folder")
    parser.add_argument("adapter", help="LoRA adapter folder (e.g. checkpoint-final-adapter)")
    parser.add_argument("out", help="output folder")
    parser.add_argument(
        "--dtype",
        choices=["auto", "bf16", "fp16", "fp32"],
        default="auto",
        help="weights dtype of the merged model (default: the base model's)",
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the contents of a non-empty OUT (never BASE or ADAPTER themselves)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from llmft.errors import UserError
    from llmft.finetune.merge import merge_adapter
    from llmft.finetune.model import fetch_model
    from llmft.overwrite import check_output_folder
    from llmft.storage import list_objects, parse_location, upload_tree

    out = parse_location(args.out)
    # Checked before anything is downloaded or loaded: OUT must not destroy an input or other files.
    inputs = {
        name: parse_location(location).path
        for name, location in (("BASE", args.base), ("ADAPTER", args.adapter))
        if not location.startswith("hf://") and parse_location(location).is_local
    }
    if out.is_local:
        check_output_folder(out.path, "merge-adapter OUT", args.overwrite, keep_out_of=inputs)
    elif list_objects(out) and not args.overwrite:
        raise UserError(
            f"merge-adapter OUT: {out} already holds objects; choose a new folder, or pass --overwrite to replace them"
        )
    base = fetch_model(args.base, "merge-adapter BASE")
    adapter = fetch_model(args.adapter, "merge-adapter ADAPTER", marker="adapter_config.json")
    if out.is_local:
        merge_adapter(base, adapter, out.path, dtype=args.dtype, replace=args.overwrite)
        print(f"merged model written to {out.path}")
        return 0
    with tempfile.TemporaryDirectory(prefix="llmft-merge-") as scratch:
        merge_adapter(base, adapter, Path(scratch), dtype=args.dtype)
        upload_tree(Path(scratch), out)
    print(f"merged model uploaded to {out}")
    return 0
