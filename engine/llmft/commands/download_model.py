"""`llmft download-model SOURCE DEST`: stream a model into the bucket (the model staging Job)."""

from __future__ import annotations

import argparse

HELP = """\
SOURCE is hf://Organization/ModelName (the Hugging Face Hub; HF_TOKEN for gated
models, HF_ENDPOINT for a mirror), a bucket folder (s3://bucket/path or
bucket/path, a complete tree with a manifest) or a local folder (/path or
./path). DEST is a bucket folder. Files are fetched and uploaded file by file
with both directions overlapping; only files in flight are kept on local disk.
Files already complete in DEST are skipped; the manifest is written last.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "download-model",
        help="stream a model from the Hub, a bucket or a folder into the bucket",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("source", help="hf://org/name, s3://bucket/path, bucket/path, or /local/folder")
    parser.add_argument("destination", help="bucket folder: bucket/path or s3://bucket/path")
    parser.add_argument("--revision", help="Hub branch, tag or commit (default: main)")
    parser.add_argument(
        "--include",
        action="append",
        default=[],
        metavar="GLOB",
        help="copy only files matching GLOB (repeatable; * also matches /)",
    )
    parser.add_argument(
        "--exclude",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files matching GLOB (repeatable), e.g. 'original/*'",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="copy every file again, even those already complete in DEST"
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=4,
        help="parallel fetches and parallel uploads (default 4); at most 2x this many files are on local disk at once",
    )
    parser.add_argument(
        "--large-file-downloads",
        type=int,
        default=1,
        metavar="N",
        help="files of 64 MiB and more fetched at once (default 1: on a shared link each then "
        "arrives at full speed and uploads while the next one downloads)",
    )
    parser.add_argument("--scratch-dir", help="folder for files in flight (default: the system temp folder)")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.progress import human_bytes
    from llmft.staging.download_model import download_model

    if args.workers < 1 or args.large_file_downloads < 1:
        raise UserError("--workers and --large-file-downloads must be at least 1")
    report = download_model(
        args.source,
        args.destination,
        revision=args.revision,
        include=args.include,
        exclude=args.exclude,
        overwrite=args.overwrite,
        workers=args.workers,
        scratch_dir=args.scratch_dir,
        large_fetches=args.large_file_downloads,
    )
    print(
        f"{report.source} -> {report.destination}: copied {len(report.copied)} file(s) "
        f"({human_bytes(report.bytes_copied)}), skipped {len(report.skipped)} already complete"
        + (f", removed {len(report.removed)} no longer selected" if report.removed else "")
    )
    return 0
