"""`llmft run-data-script SCRIPT --output-dir DIR`: run a user's data script (no bucket access needed)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run-data-script",
        help="run a data script that writes JSONL files (the data chart's first container)",
        description="Runs SCRIPT with the environment variable DATASETS_DIR set to the output folder, after "
        "installing --pip-package packages into a private folder (needs network). Fails when the "
        "script fails or writes no .jsonl file.",
    )
    parser.add_argument("script", help="the Python script (the chart mounts dataScript at /scripts/data.py)")
    parser.add_argument("--output-dir", required=True, help="where the script writes its .jsonl files")
    parser.add_argument(
        "--pip-package",
        action="append",
        default=[],
        metavar="SPEC",
        help="a pip requirement to install for the script first (repeatable)",
    )
    parser.add_argument("--packages-dir", help="where --pip-package installs (default: OUTPUT_DIR/../.script-packages)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.staging.data_script import run_data_script

    written = run_data_script(args.script, args.output_dir, args.pip_package, args.packages_dir)
    print(f"the data script wrote {len(written)} file(s) to {args.output_dir}")
    return 0
