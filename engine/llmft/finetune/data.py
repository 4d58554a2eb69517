"""Training data: read JSONL (local or bucket), validate, mix, split, tokenise with loss masks.

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
    apply_column_map,
    drop_empty_system_messages,
    pair_is_identical,
    problems_for,
    read_jsonl,
    to_dpo,
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
                f"dataset {path} is a folder; give the path of one .jsonl file (several files: one "
                "entry each in `datasets`)"
            )
        if not local.is_file():
            hint = " (for a local file write ./" + path + ")" if not path.startswith(("/", ".", "~")) else ""
            raise UserError(f"dataset {path} does not exist{hint}")
        return local, str(local)
    target = workdir / "datasets" / location.bucket / location.key
    download_file(location, target)
    return target, str(location)


def load_records(
    spec: DatasetSpec, workdir: Path, kind: str = "sft"
) -> tuple[list[Record | PreferenceRecord], list[str]]:
    """Read one dataset; return its records and every problem (`file:line: reason`).

    `kind` "sft": chat records (`Record`); "dpo": preference pairs (`PreferenceRecord`), in the
    suite's `prompt_messages/...` form or TRL's conversational `prompt/chosen/rejected`.
    """
    local, name = fetch(spec.path, workdir)
    column_map = spec.column_map.as_dict() if spec.column_map else None
    records: list[Record | PreferenceRecord] = []
    problems: list[str] = []
    bad = 0
    empty_system = 0
    identical: list[str] = []
    for line in read_jsonl(local, display_name=name):
        reasons = [line.error] if line.error else []
        record = line.record
        if not reasons and column_map is not None:
            if not isinstance(record, dict):
                reasons = ["each line must be a JSON object"]
            elif missing := [
                f"{column!r} (for {field})" for field, column in column_map.items() if column not in record
            ]:
                reasons = [
                    f"column_map names column(s) {', '.join(missing)} that this row lacks; its columns are "
                    f"{', '.join(map(repr, record))}"
                ]
            else:
                record = apply_column_map(record, column_map)
        if not reasons:
            record, dropped = drop_empty_system_messages(record)
            empty_system += dropped
            reasons = problems_for(record, kind)
        if reasons:
            bad += 1
            if bad <= MAX_PROBLEMS_PER_FILE:
                problems.append(f"{line.where}: {'; '.join(reasons)}")
            continue
        if kind == "dpo":
            if pair_is_identical(record):
                identical.append(line.where)
            record = to_dpo(record)
            records.append(
                PreferenceRecord(
                    record["prompt_messages"], record["chosen_messages"], record["rejected_messages"], line.where
                )
            )
        else:
            records.append(Record(record["messages"], line.where))
    if bad > MAX_PROBLEMS_PER_FILE:
        problems.append(
            f"{name}: ... and {bad - MAX_PROBLEMS_PER_FILE} more bad lines "
            f"({bad} in all); `llmft validate-data {name}` lists them"
        )
    if not records and not problems:
        problems.append(f"{name}: no samples (the file is empty)")
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
        try:
            example = encode(tokenizer, chat_format, record.messages, completions_only, system_message_handling)
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
    report.kept = len(examples)
    if report.too_long:
        log.warning(
            "%s: left out %d of %d samples longer than sft_args.max_seq_length=%d tokens (longest %d; "
            "first at %s); raise max_seq_length to keep them",
            label,
            report.too_long,
            len(records),
            max_seq_length,
            report.longest_left_out,
            ", ".join(report.examples),
        )
    if records and not examples:
        raise UserError(
            f"finetuning_config.sft_args.max_seq_length: every {label} sample is longer than "
            f"{max_seq_length} tokens; raise it, got {max_seq_length}"
        )
    return examples, report
