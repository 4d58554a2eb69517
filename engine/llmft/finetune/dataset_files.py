"""Reading one dataset file of any supported format into rows that know where they came from.

JSONL is read line by line by `llmft.dataformats.read_jsonl`, so a bad line is reported as `file:line`
and the lines around it still count. JSON, CSV, Parquet and Arrow files are read by the `datasets`
library (its readers are the well-kept ones for these formats); their rows are `file:row N` (1-based,
the header of a CSV not counted). `split` selects rows with the Hub's slicing syntax, interpreted by
`datasets.ReadInstruction` itself, so `train[:80%]` here is exactly what `load_dataset(..., split=...)`
would select.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmft.dataformats import read_jsonl
from llmft.errors import UserError
from llmft.finetune.config import source_of


@dataclass(frozen=True)
class Row:
    """One row of a data file: the record (a dict for row formats), where it is, or why it cannot be read."""

    record: Any
    where: str
    error: str | None = None


@dataclass
class Table:
    """The rows of one file, and its column names (None for JSONL, whose lines may differ)."""

    rows: list[Row]
    columns: list[str] | None


def read_table(local: Path, name: str, source: str | None, scratch: Path) -> Table:
    """Every row of the file at `local` (`name` is shown in messages)."""
    fmt = source_of(name, source) or source_of(str(local), None)
    if fmt is None:
        raise UserError(f"dataset {name}: cannot tell its format from the extension; set source (jsonl, csv, ...)")
    if local.name.endswith(".gz"):
        local = _decompressed(local, scratch)
    if fmt == "jsonl":
        return Table([Row(line.record, line.where, line.error) for line in read_jsonl(local, display_name=name)], None)
    dataset = _read_with_datasets(local, name, fmt, scratch)
    rows = [Row(record, f"{name}:row {index}") for index, record in enumerate(dataset.to_list(), start=1)]
    return Table(rows, list(dataset.column_names))


def _decompressed(local: Path, scratch: Path) -> Path:
    """A gzip-compressed data file (`train.jsonl.gz`), decompressed into the scratch folder."""
    import gzip
    import shutil

    target = scratch / "decompressed" / local.name.removesuffix(".gz")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with gzip.open(local, "rb") as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out)
    except (OSError, EOFError) as error:
        raise UserError(f"dataset {local}: cannot decompress it ({error}); check the file") from None
    return target


def _read_with_datasets(local: Path, name: str, fmt: str, scratch: Path):
    import datasets

    cache = str(scratch / "hf-datasets")
    try:
        if fmt == "arrow":
            return datasets.Dataset.from_file(str(local), in_memory=True)
        reader = {"json": datasets.Dataset.from_json, "csv": datasets.Dataset.from_csv}.get(
            fmt, datasets.Dataset.from_parquet
        )
        return reader(str(local), cache_dir=cache, keep_in_memory=True)
    except Exception as error:  # noqa: BLE001 - pyarrow and datasets raise many kinds; all mean "unreadable"
        reason = str(error).strip().splitlines()[0][:300] if str(error).strip() else type(error).__name__
        raise UserError(
            f"dataset {name}: cannot read it as {fmt} ({reason}); check the file, or set source to its real format"
        ) from None


def select_split(rows: list, split: str | None, name: str) -> list:
    """The rows `split` selects (every row without one); a split that selects nothing is an error."""
    if split is None:
        return rows
    from datasets import ReadInstruction

    try:
        instructions = ReadInstruction.from_spec(split).to_absolute({"train": len(rows)})
    except (ValueError, AssertionError) as error:
        raise UserError(f"dataset {name}: split {split!r}: {error}; write e.g. train[:80%] or train[100:200]") from None
    selected = [row for part in instructions for row in rows[part.from_ : part.to]]
    if not selected:
        raise UserError(
            f"dataset {name}: split {split!r} selects none of its {len(rows)} rows; widen the slice "
            "(e.g. train[:80%] and train[80%:]) or remove split"
        )
    return selected
