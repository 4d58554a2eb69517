"""`llmft report RUN...`: loss curves (PNG) and a table of final metrics for one or many runs."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("report", help="plot and tabulate metrics.jsonl of runs (bucket or local)")
    parser.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folder (bucket/experiments/NAME, s3://..., ./dir); a trailing * takes a whole sweep; "
        "one `llmft tune` experiment (its folder or checkpointsRemote) gives its history, "
        "parallel coordinates and intermediate curves",
    )
    parser.add_argument("--out", default="./report", help="output folder for report.png and report.md")
    parser.add_argument("--title", default="Training and evaluation loss")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmft.report import report

    png, md, table = report(args.runs, Path(args.out), args.title)
    print(table)
    print(f"plot: {png}\ntable: {md}")
    return 0
