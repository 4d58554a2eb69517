"""`llmft prepare-data DIR DEST`: validate a data script's JSONL output, then upload it.

Every data file under DIR (`*.jsonl`, or `*.json` written as JSON lines, e.g. by
`datasets`' `to_json`) is checked line by line (`llmft.staging.validate`) and
summarised. Invalid lines fail the job with `file:line: reason` for the first
ones and a count of the rest, before anything is uploaded. With `skip_invalid`
they are dropped instead: the uploaded file holds the valid lines and a
`NAME.rejects.jsonl` next to it holds each rejected line with its reasons.

Only validated files are uploaded (through a staging folder of hard links), to
DEST with the same relative names, manifest last. Files an earlier delivery put
in DEST stay listed in the manifest, so one `datasets/` folder can collect many
data sets.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from llmft.errors import UserError
from llmft.staging.validate import FileReport, TokenCounter, error_listing, load_token_counter, summary, validate_file
from llmft.storage import MANIFEST_NAME, Manifest, parse_location, read_manifest, upload_tree
from llmft.storage.transfer import TransferSettings, delete_object, list_objects, write_object

log = logging.getLogger("llmft.data")

DATA_SUFFIXES = (".jsonl", ".json")
REJECTS_SUFFIX = ".rejects.jsonl"


@dataclass
class PrepareReport:
    files: list[FileReport] = field(default_factory=list)
    uploaded: list[str] = field(default_factory=list)
    rejects: list[str] = field(default_factory=list)

    @property
    def invalid_count(self) -> int:
        return sum(len(r.invalid) for r in self.files)


def data_files(folder: Path) -> list[Path]:
    """The data files under `folder`; anything else there is an error (nothing is silently dropped)."""
    if not folder.is_dir():
        raise UserError(f"{folder} is not a folder: the data script must write its JSONL files there")
    found: list[Path] = []
    strangers: list[Path] = []
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts) or path.name.endswith(REJECTS_SUFFIX):
            continue  # hidden bookkeeping (caches, lock files) and our own rejects files
        (found if path.name.endswith(DATA_SUFFIXES) else strangers).append(path)
    if strangers:
        names = ", ".join(str(p.relative_to(folder)) for p in strangers[:5])
        raise UserError(
            f"{folder} holds files that are not JSON lines ({names}): the data script must write "
            "only .jsonl files there (other files belong elsewhere, e.g. /tmp)"
        )
    if not found:
        raise UserError(
            f"no .jsonl files in {folder}: the data script must write its data there, e.g. "
            'dataset.to_json("/downloads/datasets/NAME.jsonl")'
        )
    return found


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write_filtered(source: Path, report: FileReport, target: Path, rejects: Path) -> None:
    keep = set(report.valid_lines)
    reasons = {item.line: item.reason for item in report.invalid}
    target.parent.mkdir(parents=True, exist_ok=True)
    with (
        open(source, encoding="utf-8") as lines,
        open(target, "w", encoding="utf-8") as good,
        open(rejects, "w", encoding="utf-8") as bad,
    ):
        for number, text in enumerate(lines, start=1):
            if number in keep:
                good.write(text if text.endswith("\n") else text + "\n")
            elif number in reasons:
                bad.write(
                    json.dumps(
                        {"file": source.name, "line": number, "reason": reasons[number], "text": text.rstrip("\n")},
                        ensure_ascii=False,
                    )
                    + "\n"
                )


def _staging_folder(near: Path) -> Path:
    """A folder on the same filesystem as the data (so hard links work), else in the temp folder."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{near.name}-upload-", dir=near.parent))
    except OSError:
        return Path(tempfile.mkdtemp(prefix="llmft-data-upload-"))


def prepare_data(
    input_dir: str | Path,
    destination: str,
    *,
    skip_invalid: bool = False,
    kind: str | None = None,
    tokenizer: str | None = None,
    max_errors: int = 20,
    strict: bool = False,
    settings: TransferSettings | None = None,
) -> PrepareReport:
    """Validate every data file under `input_dir` and upload them to `destination` (see the module docstring)."""
    settings = settings or TransferSettings()
    folder = Path(input_dir)
    dest = parse_location(destination)
    files = data_files(folder)
    previous = None
    if not dest.is_local:
        previous = read_manifest(dest, settings)  # fails now, not after validating, if the bucket is unreachable
    counter: TokenCounter | None = load_token_counter(tokenizer) if tokenizer else None
    report = PrepareReport()
    for path in files:
        file_report = validate_file(path, kind=kind, tokens=counter, strict=strict)
        report.files.append(file_report)
        log.info("%s", summary(file_report, counter))
    if report.invalid_count and not skip_invalid:
        raise UserError(
            f"{report.invalid_count} invalid line(s) in the data, nothing uploaded:\n"
            f"{error_listing(report.files, max_errors)}\n"
            "fix the data script, or drop invalid lines with --skip-invalid (chart value skipInvalid: true)"
        )
    empty = [r.path for r in report.files if r.records == 0]
    if empty:
        raise UserError(
            f"no valid record left in {', '.join(empty)}: nothing to train on; "
            f"the first problems:\n{error_listing(report.files, max_errors)}"
        )
    staging = _staging_folder(folder)
    try:
        for path, file_report in zip(files, report.files, strict=True):
            relative = path.relative_to(folder)
            if file_report.invalid:
                rejects = relative.with_name(relative.name.rsplit(".", 1)[0] + REJECTS_SUFFIX)
                _write_filtered(path, file_report, staging / relative, staging / rejects)
                report.rejects.append(rejects.as_posix())
                log.warning(
                    "%s: dropped %d invalid line(s); they are in %s next to it",
                    relative,
                    len(file_report.invalid),
                    rejects.name,
                )
            else:
                _link_or_copy(path, staging / relative)
            report.uploaded.append(relative.as_posix())
        if dest.is_local:
            shutil.copytree(staging, dest.path, dirs_exist_ok=True)
        else:
            upload_tree(staging, dest, settings, label=f"upload data to {dest}")
            stale_rejects = {
                Path(name).with_name(Path(name).name.rsplit(".", 1)[0] + REJECTS_SUFFIX).as_posix()
                for name in report.uploaded
            } - set(report.rejects)
            _keep_earlier_entries(dest, previous, stale_rejects, settings)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info(
        "uploaded %d data file(s) to %s%s",
        len(report.uploaded),
        dest,
        f"; {report.invalid_count} invalid line(s) dropped (see {', '.join(report.rejects)})" if report.rejects else "",
    )
    return report


def _keep_earlier_entries(dest, previous: Manifest | None, stale: set[str], settings: TransferSettings) -> None:
    """Re-list files of earlier deliveries (still present, unchanged) in the folder's new manifest.

    `stale` are rejects files of an earlier run of a data file that is now clean: they are deleted.
    """
    sizes = list_objects(dest, settings)
    for name in stale & set(sizes):
        delete_object(dest.child(name), settings)
    if previous is None:
        return
    current = read_manifest(dest, settings)
    assert current is not None, "the upload before this call wrote it"
    kept = {
        name: entry
        for name, entry in previous.files.items()
        if name not in current.files and name not in stale and sizes.get(name) == entry.size
    }
    if kept:
        merged = Manifest(files={**kept, **current.files})
        write_object(dest.child(MANIFEST_NAME), merged.to_json().encode(), settings)
