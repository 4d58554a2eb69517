"""`llmft prepare-data DIR DEST`: validate a data script's JSONL files, then upload them to the bucket."""

from __future__ import annotations

import argparse

from llmft.dataformats import RECORD_KINDS

HELP = """\
Checks every .jsonl file under DIR line by line (SFT `messages` or DPO
`prompt_messages`/`chosen_messages`/`rejected_messages`, detected per file),
prints a summary (records, roles, length percentiles), and uploads the files to
DEST with the same names, manifest last. Invalid lines fail the command with
file:line: reason, unless --skip-invalid drops them into NAME.rejects.jsonl.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare-data",
        help="validate JSONL data files and upload them to the bucket",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input_dir", help="folder with the data script's .jsonl files")
    parser.add_argument("destination", help="bucket folder (bucket/path or s3://bucket/path), or a local folder")
    parser.add_argument(
        "--skip-invalid",
        action="store_true",
        help="drop invalid lines (written to NAME.rejects.jsonl next to the file) instead of failing",
    )
    parser.add_argument("--kind", choices=RECORD_KINDS, help="expected format (default: detected per file)")
    parser.add_argument(
        "--tokenizer", metavar="LOCATION", help="tokenizer folder (local or bucket) to report lengths in tokens too"
    )
    parser.add_argument("--max-errors", type=int, default=20, help="invalid lines listed before counting the rest")
    parser.add_argument(
        "--strict",
        action="store_true",
        help="also reject DPO pairs whose chosen and rejected answers are equal (counted otherwise)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.staging.prepare_data import prepare_data

    report = prepare_data(
        args.input_dir,
        args.destination,
        skip_invalid=args.skip_invalid,
        kind=args.kind,
        tokenizer=args.tokenizer,
        max_errors=args.max_errors,
        strict=args.strict,
    )
    records = sum(r.records for r in report.files)
    print(
        f"uploaded {len(report.uploaded)} data file(s) with {records} record(s) to {args.destination}"
        + (
            f"; dropped {report.invalid_count} invalid line(s), see {', '.join(report.rejects)}"
            if report.rejects
            else ""
        )
    )
    return 0
