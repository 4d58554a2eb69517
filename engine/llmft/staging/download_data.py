"""`llmft download-data`: a Hub dataset's files into the bucket, without a data script.

The source is `hf://datasets/Organization/DatasetName[/path]`: the whole repository,
one folder of it, or one file (`sources.parse_hub_url`), at an optional revision,
with `HF_TOKEN` for private and gated datasets (`hub.HubSource`, the same code that
fetches models).

- **As they are** (the default): the files are streamed into a bucket folder by the
  model pipeline (`download_model.download_model`): each verified against the Hub's
  checksums, files already complete in the bucket skipped, manifest last.
- **Converted** (`convert`): the files are fetched and verified to scratch, read
  with `datasets` (`convert.py`: format, split with the Hub's slicing syntax, column
  map) and written as one JSONL file. A bucket destination then gets it through
  `prepare_data` (every line validated, manifest last, earlier deliveries kept); a
  local destination (the data chart's first container) just receives the file, and
  the chart's next container validates and uploads it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.progress import Progress
from llmft.staging.convert import ConvertOptions, ConvertReport, convert_to_jsonl
from llmft.staging.download_model import (
    DEFAULT_WORKERS,
    DownloadReport,
    bucket_folder,
    download_model,
    fetch_verified,
)
from llmft.staging.sources import HUB_SCHEME, open_source, parse_hub_url, scratch_folder, select
from llmft.storage import parse_location
from llmft.storage.transfer import TransferSettings

log = logging.getLogger("llmft.data")
COMMAND = "download-data"


@dataclass
class DataReport:
    source: str
    destination: str
    copy: DownloadReport | None = None  # the files as they are
    converted: ConvertReport | None = None  # the JSONL file
    uploaded: bool = False  # the JSONL file went to the bucket (validated)


def check_source(source: str) -> None:
    """A Hub source must be a dataset: `hf://org/name` is a model, which download-model copies."""
    text = source.strip()
    if text.startswith(HUB_SCHEME) and parse_hub_url(text).repo_type == "model":
        name = text[len(HUB_SCHEME) :].strip("/")
        raise UserError(
            f"{text} is a Hub model: a dataset is hf://datasets/{name} (use `llmft download-model` for a model)"
        )


def download_data(
    source: str,
    destination: str,
    *,
    revision: str | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    overwrite: bool = False,
    workers: int = DEFAULT_WORKERS,
    scratch_dir: str | Path | None = None,
    settings: TransferSettings | None = None,
    convert: ConvertOptions | None = None,
    skip_invalid: bool = False,
    kind: str | None = None,
) -> DataReport:
    """Copy (or convert and deliver) the dataset at `source` to `destination` (see the module docstring)."""
    check_source(source)
    if convert is None:
        if parse_location(destination).is_local:
            raise UserError(
                f"destination {destination} is a local path: download-data copies the files as they are into "
                "the bucket (bucket/path or s3://bucket/path); with --to-jsonl it writes the converted file to a "
                "local folder"
            )
        copy = download_model(
            source,
            destination,
            revision=revision,
            include=include,
            exclude=exclude,
            overwrite=overwrite,
            workers=workers,
            scratch_dir=scratch_dir,
            settings=settings,
            command=COMMAND,
        )
        return DataReport(copy.source, copy.destination, copy=copy)
    convert.check()
    dest = parse_location(destination)
    if not dest.is_local:
        bucket_folder(destination, COMMAND)
    dataset = open_source(source, revision=revision, settings=settings)
    scratch = scratch_folder(scratch_dir)
    try:
        files = dataset.list_files()
        chosen = select(files, include, exclude)
        if not chosen:
            raise UserError(
                f"no file of {dataset.label} matches the include/exclude globs "
                f"(include {list(include) or 'all'}, exclude {list(exclude) or 'none'})"
            )
        local = scratch / "files"
        fetched = Progress(f"fetched from {dataset.label}", sum(item.size or 0 for item in chosen))
        for item in chosen:
            fetch_verified(dataset, item, local / item.path, scratch, fetched)
        fetched.close()
        name = parse_hub_url(source).repo_id if source.strip().startswith(HUB_SCHEME) else source
        output = Path(dest.path) if dest.is_local else Path(tempfile.mkdtemp(prefix="jsonl-", dir=scratch))
        converted = convert_to_jsonl(
            local, output, convert, label=dataset.label, dataset=name, scratch=scratch / "convert"
        )
        report = DataReport(dataset.label, str(dest), converted=converted)
        if not dest.is_local:
            from llmft.staging.prepare_data import prepare_data

            prepare_data(output, destination, skip_invalid=skip_invalid, kind=kind, settings=settings)
            report.uploaded = True
        return report
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
