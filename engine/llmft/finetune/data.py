"""Training data: read data files (local or bucket), validate, mix, split, tokenise with loss masks.

A dataset is one file (JSONL, JSON, CSV, Parquet, Arrow: `llmft.finetune.dataset_files`) read with its
options (`split`, `column_map`, `new_system_prompt`, `train_on_input`) into records of the config's kind:
chat conversations (`Record`), preference pairs (`PreferenceRecord`), plain texts (`TextRecord`) or
labelled texts (`LabeledRecord`).

Order of work in a run: `load_records` for every dataset first (every bad line of every file is
reported at once, before any model is loaded), then `mix` and `split_validation`, then `encode_all`
once the tokenizer and chat template are ready. Samples longer than `max_seq_length` are left out,
counted and reported; nothing is dropped silently.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

from llmft.dataformats import (
    chat_row,
    drop_empty_system_messages,
    label_problems,
    pair_is_identical,
    preference_row,
    problems_for,
    text_problems,
    to_dpo,
    with_system_prompt,
)
from llmft.errors import UserError
from llmft.finetune.config import DataConf, DatasetSpec, TrainingData
from llmft.finetune.templates import (
    ChatFormat,
    TemplateRefusal,
    assistant_spans,
    check_system_placement,
    fold_system_message,
    generation_marked_tokens,
    has_generation_markers,
    render,
)
from llmft.progress import Progress

log = logging.getLogger("llmft.finetune.data")

MAX_PROBLEMS_PER_FILE = 20
IGNORE_INDEX = -100


@dataclass
class Record:
    """One validated conversation and where it came from (`file:line`)."""

    messages: list[dict]
    where: str
    train_on_input: bool | None = None  # the dataset's train_on_input (None: sft_args decides)


@dataclass
class TextRecord:
    """One plain text (`task: text`) and where it came from."""

    text: str
    where: str


@dataclass
class LabeledRecord:
    """One text and its label (`task: sequence-classification`) and where it came from."""

    text: str
    label: int | str
    where: str


@dataclass
class PreferenceRecord:
    """One validated preference pair (DPO) and where it came from (`file:line`)."""

    prompt: list[dict]
    chosen: list[dict]
    rejected: list[dict]
    where: str


@dataclass
class LengthReport:
    """What tokenisation left out, for the log and summary.json."""

    kept: int = 0
    too_long: int = 0
    longest_left_out: int = 0
    examples: list[str] = field(default_factory=list)  # file:line of the first few left out

    def left_out(self, length: int, where: str) -> None:
        """Count a sample left out for being `length` tokens long (never truncated)."""
        self.too_long += 1
        self.longest_left_out = max(self.longest_left_out, length)
        if len(self.examples) < 5:
            self.examples.append(where)

    def conclude(self, label: str, total: int, kept: int, key: str, limit: int, noun: str) -> None:
        """Record what was kept of `total` {noun}s; warn about those over `limit` tokens (the setting `key`,
        e.g. `sft_args.max_seq_length`), and refuse when none is left."""
        self.kept = kept
        if self.too_long:
            log.warning(
                "%s: left out %d of %d %ss longer than %s=%d tokens (longest %d; first at %s); raise %s to keep them",
                label,
                self.too_long,
                total,
                noun,
                key,
                limit,
                self.longest_left_out,
                ", ".join(self.examples),
                key.rpartition(".")[2],
            )
        if total and not kept:
            raise UserError(
                f"finetuning_config.{key}: every {label} {noun} is longer than {limit} tokens; raise it, got {limit}"
            )

    def as_dict(self) -> dict:
        return {
            "kept": self.kept,
            "left_out_too_long": self.too_long,
            "longest_left_out_tokens": self.longest_left_out,
            "first_left_out": self.examples,
        }


def fetch(path: str, workdir: Path) -> tuple[Path, str]:
    """A local copy of a dataset location and the name to show in messages."""
    from llmft.storage import download_file, parse_location

    location = parse_location(path)
    if location.bucket is None:  # a local path
        local = location.path
        if local.is_dir():
            raise UserError(
                f"dataset {path} is a folder; give the path of one data file (several files: one "
                "entry each in `datasets`)"
            )
        if not local.is_file():
            hint = " (for a local file write ./" + path + ")" if not path.startswith(("/", ".", "~")) else ""
            raise UserError(f"dataset {path} does not exist{hint}")
        return local, str(local)
    target = workdir / "datasets" / location.bucket / location.key
    download_file(location, target)
    return target, str(location)


# The columns each kind reads when column_map does not rename them (chat: see `dataformats.chat_row`).
DEFAULT_COLUMNS = {"text": ("text",), "sequence-classification": ("text", "label")}


def _missing_columns(columns: list[str], column_map: dict[str, str], kind: str) -> list[str]:
    """The columns a row-format file lacks for `kind` (files with a header: checked once, not per row)."""
    if kind in DEFAULT_COLUMNS:
        wanted = [column_map.get(field, field) for field in DEFAULT_COLUMNS[kind]]
    elif kind == "sft":
        if "messages" in column_map or not ({"input", "output", "instruction"} & column_map.keys()):
            wanted = [column_map.get("messages", "messages")]
        else:
            wanted = [column_map.get(field, field) for field in ("input", "output")] + [
                column for field, column in column_map.items() if field in ("system", "instruction")
            ]
    else:  # dpo
        if not column_map and "prompt_messages" in columns:
            return []
        wanted = [column_map.get(field, field) for field in ("prompt", "chosen", "rejected")]
    return [column for column in wanted if column not in columns]


def load_records(spec: DatasetSpec, workdir: Path, kind: str = "sft") -> tuple[list, list[str]]:
    """Read one dataset; return its records and every problem (`file:line: reason` or `file:row N: reason`).

    `kind` "sft" (chat): `Record`s; "dpo": `PreferenceRecord`s, in the suite's `prompt_messages/...` form or
    TRL's `prompt/chosen/rejected`; "text": `TextRecord`s; "sequence-classification": `LabeledRecord`s.
    A file the options cannot fit (a split selecting nothing, a missing column) raises a UserError naming it.
    """
    from llmft.finetune.dataset_files import read_table, select_split

    local, name = fetch(spec.path, workdir)
    column_map = spec.column_map.as_dict() if spec.column_map else {}
    table = read_table(local, name, spec.source, workdir)
    if not table.rows:
        return [], [f"{name}: no samples (the file is empty)"]
    rows = select_split(table.rows, spec.split, name)
    if table.columns is not None and (missing := _missing_columns(table.columns, column_map, kind)):
        fields = {column: field for field, column in column_map.items()}
        named = ", ".join(
            f"{column!r}" + (f" (column_map.{fields[column]})" if column in fields else "") for column in missing
        )
        raise UserError(
            f"dataset {name}: no column {named}; its columns are {', '.join(map(repr, table.columns))}: "
            "name the right ones in the dataset's column_map (docs/tasks.md)"
        )
    records: list = []
    problems: list[str] = []
    bad = 0
    empty_system = 0
    identical: list[str] = []
    for row in rows:
        reasons = [row.error] if row.error else []
        record = row.record
        if not reasons and not isinstance(record, dict):
            reasons = ["each line must be a JSON object"]
        if not reasons and kind in DEFAULT_COLUMNS:
            text_column = column_map.get("text", "text")
            reasons = text_problems(record.get(text_column), text_column)
            if kind == "sequence-classification":
                label_column = column_map.get("label", "label")
                reasons += label_problems(record.get(label_column), label_column)
                if not reasons:
                    records.append(LabeledRecord(record[text_column], record[label_column], row.where))
            elif not reasons:
                records.append(TextRecord(record[text_column], row.where))
            if reasons:
                bad += 1
                if bad <= MAX_PROBLEMS_PER_FILE:
                    problems.append(f"{row.where}: {'; '.join(reasons)}")
            continue
        if not reasons and table.columns is None and column_map:
            needed = _mapped_columns(column_map, kind)
            if missing := [f"{column!r} (for {field})" for field, column in needed if column not in record]:
                reasons = [
                    f"column_map names column(s) {', '.join(missing)} that this row lacks; its columns are "
                    f"{', '.join(map(repr, record))}"
                ]
        if not reasons:
            record = preference_row(record, column_map) if kind == "dpo" else chat_row(record, column_map)
            if spec.new_system_prompt is not None:
                field = (
                    "messages" if kind == "sft" else ("prompt_messages" if "prompt_messages" in record else "prompt")
                )
                record = {**record, field: with_system_prompt(record.get(field), spec.new_system_prompt)}
            record, dropped = drop_empty_system_messages(record)
            empty_system += dropped
            reasons = problems_for(record, kind)
        if reasons:
            bad += 1
            if bad <= MAX_PROBLEMS_PER_FILE:
                problems.append(f"{row.where}: {'; '.join(reasons)}")
            continue
        if kind == "dpo":
            if pair_is_identical(record):
                identical.append(row.where)
            record = to_dpo(record)
            records.append(
                PreferenceRecord(
                    record["prompt_messages"], record["chosen_messages"], record["rejected_messages"], row.where
                )
            )
        else:
            records.append(Record(record["messages"], row.where, spec.train_on_input))
    if bad > MAX_PROBLEMS_PER_FILE:
        problems.append(
            f"{name}: ... and {bad - MAX_PROBLEMS_PER_FILE} more bad lines "
            f"({bad} in all); `llmft validate-data {name}` lists them"
        )
    if empty_system:
        log.info("%s: dropped the empty system message of %d record(s) (harmless)", name, empty_system)
    if identical:
        log.warning(
            "%s: %d pair(s) have the same chosen and rejected answer and teach nothing (first at %s); "
            "`llmft validate-data --strict` rejects them",
            name,
            len(identical),
            ", ".join(identical[:3]),
        )
    return records, problems


def _mapped_columns(column_map: dict[str, str], kind: str) -> list[tuple[str, str]]:
    """(field, column) pairs a JSONL row must have under `column_map` (optional fields excluded)."""
    if kind == "dpo":
        fields: tuple[str, ...] = ("prompt", "chosen", "rejected")
    elif "messages" in column_map:
        fields = ("messages",)
    else:
        fields = tuple(field for field in column_map if field in ("input", "output", "system", "instruction"))
    return [(field, column_map.get(field, field)) for field in fields]


def load_datasets(specs: list[DatasetSpec], workdir: Path, kind: str = "sft") -> list[list]:
    """Load every dataset, then raise once with every problem of every file."""
    loaded, problems = [], []
    for spec in specs:
        records, found = load_records(spec, workdir, kind)
        loaded.append(records)
        problems += found
    if problems:
        raise UserError("invalid data (fix these lines):\n  " + "\n  ".join(problems))
    return loaded


def mix(datasets: list[list[Record]], training: TrainingData) -> list[Record]:
    """Combine the training datasets as `training.type` says."""
    if training.type == "CONCATENATION":
        return [record for records in datasets for record in records]
    weights = [spec.sampling_weight if spec.sampling_weight is not None else 1.0 for spec in training.datasets]
    total = sum(len(records) for records in datasets)
    rng = random.Random(training.seed)
    mixed: list[Record] = []
    for records, weight in zip(datasets, weights, strict=True):
        count = max(1, round(total * weight / sum(weights)))
        passes, rest = divmod(count, len(records))
        mixed += records * passes + rng.sample(records, rest)
    rng.shuffle(mixed)
    return mixed


def split_validation(train: list, data_conf: DataConf, workdir: Path, kind: str = "sft") -> tuple[list, list]:
    """Apply `validation_data`: hold out a seeded fraction, read separate datasets, or none."""
    validation = data_conf.validation_data
    if validation.type == "NONE":
        return train, []
    if validation.type == "CONCATENATION":
        return train, [r for records in load_datasets(validation.datasets or [], workdir, kind) for r in records]
    ratio = validation.ratio if validation.ratio is not None else 0.1
    count = math.ceil(len(train) * ratio)
    if count >= len(train):
        raise UserError(
            f"finetuning_config.data_conf.validation_data.ratio: {ratio} of {len(train)} samples "
            "leaves nothing to train on; lower the ratio or add data"
        )
    order = list(range(len(train)))
    random.Random(validation.seed).shuffle(order)
    held_out = set(order[:count])
    return ([r for i, r in enumerate(train) if i not in held_out], [r for i, r in enumerate(train) if i in held_out])


def encode(
    tokenizer,
    chat_format: ChatFormat,
    messages: list[dict],
    completions_only: bool,
    system_message_handling: str = "keep",
) -> dict:
    """Token ids and labels for one conversation, exactly as training sees it.

    With `completions_only`, a token carries loss only when it overlaps an assistant turn (what the
    template made of its content plus its end-of-turn token; see `llmft.finetune.templates`); every
    other label is -100. A template that cannot render the conversation raises `TemplateRefusal`.
    """
    if system_message_handling == "fold-into-first-user":
        messages = fold_system_message(messages)
    check_system_placement(tokenizer, messages)
    if completions_only and has_generation_markers(chat_format.template):
        return _encode_with_generation_markers(tokenizer, messages)
    if completions_only:
        text, spans = assistant_spans(tokenizer, chat_format, messages)
    else:
        text, spans = render(tokenizer, messages), []
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(encoded["input_ids"])
    if not completions_only:
        return {"input_ids": ids, "labels": list(ids)}
    labels = [
        token if any(start < offset[1] and offset[0] < end for start, end in spans) else IGNORE_INDEX
        for token, offset in zip(ids, encoded["offset_mapping"], strict=True)
    ]
    return {"input_ids": ids, "labels": labels}


def _encode_with_generation_markers(tokenizer, messages: list[dict]) -> dict:
    """The template marks what is trained with `{% generation %}` (transformers' assistant mask)."""
    ids, mask = generation_marked_tokens(tokenizer, messages)
    return {
        "input_ids": ids,
        "labels": [token if marked else IGNORE_INDEX for token, marked in zip(ids, mask, strict=True)],
    }


@dataclass
class Encoded:
    """One record after tokenisation: its example, or why it is left out."""

    record: Record
    example: dict | None
    left_out: str | None = None  # the reason, for the log and `llmft preview-data`
    refused: bool = False  # the chat template refused it (an error in training, not a silent skip)


def encode_records(
    records: list[Record],
    tokenizer,
    chat_format: ChatFormat,
    max_seq_length: int,
    completions_only: bool,
    system_message_handling: str = "keep",
):
    """Yield an `Encoded` per record, in order: the one tokenisation path of training and preview-data."""
    for record in records:
        only = completions_only if record.train_on_input is None else not record.train_on_input
        try:
            example = encode(tokenizer, chat_format, record.messages, only, system_message_handling)
        except TemplateRefusal as error:
            yield Encoded(record, None, str(error), refused=True)
            continue
        length = len(example["input_ids"])
        if length > max_seq_length:
            yield Encoded(record, example, f"{length} tokens, longer than sft_args.max_seq_length={max_seq_length}")
            continue
        yield Encoded(record, example)


def encode_all(
    records: list[Record],
    tokenizer,
    chat_format: ChatFormat,
    max_seq_length: int,
    completions_only: bool,
    label: str,
    system_message_handling: str = "keep",
) -> tuple[list[dict], LengthReport]:
    """Encode every record; leave out (and count) those longer than `max_seq_length`.

    Conversations the chat template refuses fail the run, every one of them listed with file:line.
    """
    report = LengthReport()
    examples, refused = [], []
    progress = Progress(f"tokenize {label}", len(records), unit="samples")
    for item in encode_records(
        records, tokenizer, chat_format, max_seq_length, completions_only, system_message_handling
    ):
        progress.update(1)
        if item.refused:
            refused.append(f"{item.record.where}: {item.left_out}")
        elif item.left_out:
            report.left_out(len(item.example["input_ids"]), item.record.where)
        else:
            examples.append(item.example)
    progress.close()
    if refused:
        shown = refused[:MAX_PROBLEMS_PER_FILE]
        if len(refused) > len(shown):
            shown.append(
                f"... and {len(refused) - len(shown)} more ({len(refused)} in all); "
                "`llmft preview-data CONFIG` lists them"
            )
        raise UserError(
            f"the chat template cannot render {len(refused)} {label} conversation(s):\n  " + "\n  ".join(shown)
        )
    report.conclude(label, len(records), len(examples), "sft_args.max_seq_length", max_seq_length, "sample")
    return examples, report
