"""`llmft download-data SOURCE DEST`: a Hub dataset's files into the bucket, as they are or as JSONL."""

from __future__ import annotations

import argparse

from llmft.dataformats import RECORD_KINDS

HELP = """\
SOURCE is hf://datasets/Organization/DatasetName, optionally followed by a folder
or one file of the repository (hf://datasets/org/name/data/train.parquet);
HF_TOKEN for private and gated datasets, HF_ENDPOINT for a mirror. A bucket
folder or a local folder also works as SOURCE.

Without --to-jsonl the files are copied as they are to the bucket folder DEST,
like `llmft download-model`: verified against the Hub's checksums, files
already complete in DEST skipped, manifest last.

With --to-jsonl the files (parquet, csv, json, jsonl, arrow) are read with the
`datasets` library, --split selects rows with the Hub's syntax (train,
train[:95%], train[100:200]), --column-map turns instruction columns into chat
`messages`, and one JSONL file NAME.jsonl is written: to a bucket DEST after
every line is validated as `llmft prepare-data` does (manifest last), or into a
local folder DEST.
"""


def _column_pair(text: str) -> tuple[str, str]:
    key, sep, column = text.partition("=")
    if not sep or not key or not column:
        raise argparse.ArgumentTypeError(f"{text!r}: write KEY=COLUMN, e.g. input=question")
    return key, column


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download-data",
        help="copy a Hub dataset's files (or one folder or file) into the bucket, optionally as JSONL",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="hf://datasets/org/name[/path], s3://bucket/path, bucket/path or /folder")
    parser.add_argument(
        "destination", help="bucket folder (bucket/path or s3://bucket/path); with --to-jsonl also a local folder"
    )
    parser.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    parser.add_argument("--include", action="append", default=[], metavar="GLOB", help="only files matching GLOB")
    parser.add_argument("--exclude", action="append", default=[], metavar="GLOB", help="skip files matching GLOB")
    parser.add_argument(
        "--overwrite", action="store_true", help="copy every file again, even those already complete in DEST"
    )
    parser.add_argument("--workers", type=int, default=4, help="parallel fetches and uploads (default 4)")
    parser.add_argument("--scratch-dir", help="folder for files in flight (default: the system temp folder)")
    convert = parser.add_argument_group("conversion to JSONL")
    convert.add_argument("--to-jsonl", action="store_true", help="convert the files into one JSONL file")
    convert.add_argument(
        "--source",
        dest="data_format",
        metavar="FORMAT",
        help="format of the files: jsonl, json, csv, parquet, arrow (default: from the extensions)",
    )
    convert.add_argument("--split", default="train", help="split and slice, e.g. train[:95%%] (default: train)")
    convert.add_argument(
        "--column-map",
        action="append",
        default=[],
        type=_column_pair,
        metavar="KEY=COLUMN",
        help="the column holding messages, or input, output, system, instruction; rows become chat records "
        "(repeatable)",
    )
    convert.add_argument("--name", help="output file name without .jsonl (default: <dataset>-<split name>)")
    convert.add_argument(
        "--skip-invalid", action="store_true", help="bucket DEST: drop invalid lines into NAME.rejects.jsonl"
    )
    convert.add_argument("--kind", choices=RECORD_KINDS, help="bucket DEST: expected record format")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.progress import human_bytes
    from llmft.staging.convert import ConvertOptions
    from llmft.staging.download_data import download_data

    if args.workers < 1:
        raise UserError("--workers must be at least 1")
    conversion_flags = [
        flag
        for flag, given in (
            ("--source", args.data_format),
            ("--split", args.split != "train"),
            ("--column-map", args.column_map),
            ("--name", args.name),
            ("--skip-invalid", args.skip_invalid),
            ("--kind", args.kind),
        )
        if given
    ]
    if conversion_flags and not args.to_jsonl:
        raise UserError(f"{', '.join(conversion_flags)} only apply with --to-jsonl (the files are copied as they are)")
    convert = None
    if args.to_jsonl:
        convert = ConvertOptions(
            source=args.data_format,
            split=args.split,
            column_map=dict(args.column_map) or None,
            name=args.name,
        )
    report = download_data(
        args.source,
        args.destination,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        overwrite=args.overwrite,
        workers=args.workers,
        scratch_dir=args.scratch_dir,
        convert=convert,
        skip_invalid=args.skip_invalid,
        kind=args.kind,
    )
    if report.copy is not None:
        copy = report.copy
        print(
            f"{copy.source} -> {copy.destination}: copied {len(copy.copied)} file(s) "
            f"({human_bytes(copy.bytes_copied)}), skipped {len(copy.skipped)} already complete"
            + (f", removed {len(copy.removed)} no longer selected" if copy.removed else "")
        )
    elif report.converted is not None:
        converted = report.converted
        where = "uploaded to" if report.uploaded else "written to"
        print(f"{report.source} -> {converted.output.name} ({converted.rows} rows), {where} {args.destination}")
    return 0
