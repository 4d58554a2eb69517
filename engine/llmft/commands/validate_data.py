"""`llmft validate-data FILE`: check a JSONL data file on your laptop before delivering it."""

from __future__ import annotations

import argparse
import sys

from llmft.dataformats import RECORD_KINDS


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "validate-data",
        help="check a JSONL data file (SFT, DPO, text or classification records) and print a summary",
        description="Exit status 0 and a summary when every line is valid; 1 and file:line: reason otherwise.",
    )
    parser.add_argument("file", help="a .jsonl file")
    parser.add_argument("--kind", choices=RECORD_KINDS, help="expected format (default: detected)")
    parser.add_argument("--tokenizer", metavar="LOCATION", help="tokenizer folder (local or bucket) for token lengths")
    parser.add_argument("--max-errors", type=int, default=20, help="invalid lines listed before counting the rest")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also reject DPO pairs whose chosen and rejected answers are equal (counted otherwise)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.staging.validate import error_listing, load_token_counter, summary, validate_file

    counter = load_token_counter(args.tokenizer) if args.tokenizer else None
    report = validate_file(args.file, kind=args.kind, tokens=counter, strict=args.strict)
    print(summary(report, counter))
    if report.invalid:
        print(error_listing([report], args.max_errors), file=sys.stderr)
        print(f"{args.file} is not valid: {len(report.invalid)} invalid line(s)", file=sys.stderr)
        return 1
    if report.records == 0:
        print(f"{args.file} has no records", file=sys.stderr)
        return 1
    print(f"{args.file} is valid")
    return 0
