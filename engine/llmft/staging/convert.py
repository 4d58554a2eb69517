"""Convert a dataset's files (parquet, csv, json, jsonl, arrow) into one JSONL file (`download-data --to-jsonl`).

The files are read with the `datasets` library, the well-kept reader of every format
the Hub serves: split names come from the file and folder names the way the Hub
assigns them (`train-*.parquet`, `data/test/...`; anything else is `train`), and
`split` takes the Hub's slicing syntax (`train`, `train[:95%]`, `train[100:200]`).
With a `column_map` (the chat fields of the finetune config's `column_map`:
`messages`, or `input`/`output` with `system`, `instruction`) each row becomes an
SFT record through `llmft.dataformats.chat_row`, the rule training applies; without
one the rows are written with all their columns (rows that already hold
`messages`, preference pairs, or any other columns).

The result goes through the same validation as a data script's output
(`prepare_data`) before anything reaches the bucket.

The format names, the extension rule and the column-map fields are the finetune
config's (`llmft.finetune.config`: `DATASET_SOURCES`, `source_of`, `COLUMN_FIELDS`).
`split` differs on purpose: a finetune dataset is one file whose one split is
`train`, while a Hub dataset folder has the splits its file names give it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.finetune.config import COLUMN_FIELDS, DATASET_SOURCES, SOURCE_EXTENSIONS, source_of

log = logging.getLogger("llmft.data")

# Each format's reader among the `datasets` library's packaged builders (JSON lines and JSON share one).
BUILDERS = {"jsonl": "json", "json": "json", "csv": "csv", "parquet": "parquet", "arrow": "arrow"}
assert set(BUILDERS) == set(DATASET_SOURCES), "a format of the finetune config has no reader here"
COLUMN_MAP_KEYS = COLUMN_FIELDS["chat"]
_NAME = re.compile(r"^[A-Za-z0-9][\w.-]*$")
_SPLIT = re.compile(r"^[A-Za-z0-9_.-]+(\[[^\]]*\])?(\+[A-Za-z0-9_.-]+(\[[^\]]*\])?)*$")


@dataclass(frozen=True)
class ConvertOptions:
    """How to turn the files into JSONL: their format, which rows, which columns."""

    source: str | None = None  # jsonl, json, csv, parquet, arrow; None: from the extensions
    split: str = "train"  # the Hub's split syntax, e.g. train[:95%]
    column_map: dict[str, str] | None = None  # {input: COLUMN, output: COLUMN, system: ..., instruction: ...}
    name: str | None = None  # output file name without .jsonl; None: <dataset>-<split name>

    def check(self) -> None:
        """Refuse bad options before anything is downloaded."""
        if self.source is not None and self.source not in BUILDERS:
            raise UserError(
                f"--source {self.source!r} is not a format this reads: use one of {', '.join(DATASET_SOURCES)}"
            )
        if not _SPLIT.match(self.split):
            raise UserError(
                f"--split {self.split!r} is not a split: write a split name with an optional slice, e.g. "
                "train, train[:95%], train[100:200], test[:3000]"
            )
        unknown = sorted(set(self.column_map or {}) - set(COLUMN_MAP_KEYS))
        if unknown:
            raise UserError(
                f"--column-map {', '.join(unknown)}: the keys are {', '.join(COLUMN_MAP_KEYS)} "
                "(each names the column of the data that holds it, e.g. input=question)"
            )
        if self.name is not None and (not _NAME.match(self.name) or self.name.endswith(".jsonl")):
            raise UserError(
                f"--name {self.name!r} must be a plain file name without .jsonl (letters, digits, '.', '_', '-')"
            )

    def output_name(self, dataset: str) -> str:
        if self.name:
            return self.name + ".jsonl"
        base = dataset.rstrip("/").rsplit("/", 1)[-1] or "data"
        return f"{base}-{self.split.split('[', 1)[0].replace('+', '-')}.jsonl"


@dataclass
class ConvertReport:
    output: Path
    rows: int
    columns: list[str]


def data_files(folder: Path, source: str | None, label: str) -> tuple[str, list[Path]]:
    """The files of `folder` to read and their format; other files (README.md, .gitattributes) are left out."""
    found = sorted(p for p in folder.rglob("*") if p.is_file())
    kinds: dict[str, list[Path]] = {}
    for path in found:
        fmt = source_of(path.name, None)
        if fmt is not None:
            kinds.setdefault(BUILDERS[fmt], []).append(path)
    if source is not None:
        builder = BUILDERS[source]
        if builder not in kinds:
            extensions = [ext for ext, fmt in SOURCE_EXTENSIONS.items() if BUILDERS[fmt] == builder]
            raise UserError(
                f"{label} has no {source} file ({', '.join(extensions)}); its files are "
                f"{_names(found, folder)}: check --source (chart: hubDataset.source) and the path"
            )
        return builder, kinds[builder]
    if not kinds:
        raise UserError(
            f"{label} has no data file (jsonl, json, csv, parquet, arrow); its files are {_names(found, folder)}: "
            "check the path (chart: hubDataset.path)"
        )
    if len(kinds) > 1:
        counts = ", ".join(f"{builder} ({len(paths)} files)" for builder, paths in sorted(kinds.items()))
        raise UserError(
            f"{label} holds data files of several formats, {counts}: choose one with --source "
            "(chart: hubDataset.source), or a folder or file of one format with the path"
        )
    ((builder, chosen),) = kinds.items()
    return builder, chosen


def _names(files: list[Path], folder: Path) -> str:
    names = [p.relative_to(folder).as_posix() for p in files[:8]]
    return (", ".join(names) + ("..." if len(files) > 8 else "")) or "none"


def convert_to_jsonl(
    folder: Path, output_dir: Path, options: ConvertOptions, *, label: str, dataset: str, scratch: Path
) -> ConvertReport:
    """Read the data files under `folder`, select `options.split`, write `output_dir/<name>.jsonl`."""
    import datasets

    options.check()
    builder, files = data_files(folder, options.source, label)
    # Only the chosen files, in their folders, so that `datasets` assigns the splits from their names.
    chosen = scratch / "chosen"
    for path in files:
        target = chosen / path.relative_to(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, target)
        except OSError:
            shutil.copyfile(path, target)
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    try:
        rows = datasets.load_dataset(
            builder, data_dir=str(chosen), split=options.split, cache_dir=str(scratch / "cache")
        )
    except ValueError as error:  # an unknown split, a slice outside the data, a bad slice
        raise UserError(f"{label}: split {options.split!r}: {_first_line(error)}") from None
    except datasets.exceptions.DatasetGenerationError as error:
        cause = error.__cause__ or error
        raise UserError(
            f"{label}: the {builder} files cannot be read ({_first_line(cause)}): check --source "
            "(chart: hubDataset.source)"
        ) from None
    if len(rows) == 0:
        raise UserError(f"{label}: split {options.split!r} selects no rows: check the split and its slice")
    columns = list(rows.column_names)
    if options.column_map:
        rows = _mapped(rows, options.column_map, label, columns)
    output_dir.mkdir(parents=True, exist_ok=True)
    output = output_dir / options.output_name(dataset)
    rows.to_json(str(output), lines=True, force_ascii=False)
    kinds = Counter(p.suffix.lower() for p in files)
    log.info(
        "%s: %d file(s) (%s), split %s: %d rows with columns %s -> %s",
        label,
        len(files),
        ", ".join(f"{count} {ext}" for ext, count in sorted(kinds.items())),
        options.split,
        len(rows),
        ", ".join(columns),
        output.name,
    )
    return ConvertReport(output, len(rows), columns)


def _mapped(rows, column_map: dict[str, str], label: str, columns: list[str]):
    """Rows as SFT records through the column map (training's rule); every column it needs must exist."""
    from llmft.dataformats import chat_row

    instruction_style = "messages" not in column_map and {"input", "output", "instruction"} & column_map.keys()
    needed = {key: column_map.get(key, key) for key in (("input", "output") if instruction_style else ("messages",))}
    needed.update({key: column for key, column in column_map.items() if key not in needed})
    missing = [f"{column!r} (for {key})" for key, column in needed.items() if column not in columns]
    if missing:
        raise UserError(
            f"{label}: the column map needs column(s) {', '.join(missing)}, which the data lacks; its columns "
            f"are {', '.join(columns)}: fix --column-map (chart: hubDataset.columnMap)"
        )
    return rows.map(lambda row: chat_row(row, column_map), remove_columns=columns)


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
