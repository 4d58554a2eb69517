"""Check a JSONL data set line by line and summarise it (`llmft validate-data`, `prepare-data`).

The record rules are `llmft.dataformats`' (shared with training); this module
applies them to whole files: it detects the format (SFT `messages`, DPO
`prompt_messages`/`chosen_messages`/`rejected_messages`, or the records of the
other tasks: plain `text`, and `text` with a `label` for sequence classification)
from the first record that has one, checks every line against it, and collects
what a person wants to see before training: record count, messages per role or
records per label, and length percentiles in characters and (with a tokenizer)
in tokens.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmft.dataformats import (
    RECORD_KINDS,
    detect_kind,
    drop_empty_system_messages,
    label_problems,
    pair_is_identical,
    problems_for,
    read_jsonl,
    text_problems,
    to_dpo,
)
from llmft.errors import UserError
from llmft.tokenizer_folder import TOKENIZER_FILES, check_tokenizer_folder

# Records of `task: text` and `task: sequence-classification`, under the default column names.
TEXT_KINDS = ("text", "sequence-classification")
PERCENTILES = (50, 90, 99)
# The text fields whose lengths the summary reports, per kind.
LENGTH_FIELDS = {
    "sft": ("conversation",),
    "dpo": ("prompt", "prompt+chosen", "prompt+rejected"),
    "text": ("text",),
    "sequence-classification": ("text",),
}


@dataclass
class Invalid:
    where: str  # file:line
    line: int
    reason: str


@dataclass
class FileReport:
    path: str
    kind: str | None = None
    records: int = 0  # valid records
    invalid: list[Invalid] = field(default_factory=list)
    valid_lines: list[int] = field(default_factory=list)
    roles: Counter = field(default_factory=Counter)
    labels: Counter = field(default_factory=Counter)  # classification records per label
    chars: dict[str, list[int]] = field(default_factory=dict)
    tokens: dict[str, list[int]] = field(default_factory=dict)
    empty_system_dropped: int = 0  # records whose empty system message was dropped (harmless)
    identical_pairs: list[str] = field(default_factory=list)  # file:line of DPO pairs with chosen == rejected

    @property
    def ok(self) -> bool:
        return not self.invalid and self.records > 0


def percentiles(values: list[int], points: tuple[int, ...] = PERCENTILES) -> dict[str, int]:
    """Nearest-rank percentiles plus the maximum (empty for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    found = {f"p{p}": ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] for p in points}
    found["max"] = ordered[-1]
    return found


def detect_file_kind(record: Any) -> str | None:
    """The format a record announces: SFT or DPO (`llmft.dataformats`), else text or classification."""
    kind = detect_kind(record)
    if kind is None and isinstance(record, dict) and "text" in record:
        return "sequence-classification" if "label" in record else "text"
    return kind


def text_record_problems(record: Any, kind: str) -> list[str]:
    """Training's rules for a text or classification record (`llmft.dataformats`)."""
    if not isinstance(record, dict):
        return ["a record must be a JSON object"]
    problems = text_problems(record.get("text"), "text")
    if kind == "sequence-classification":
        problems += label_problems(record.get("label"), "label")
    return problems


def _texts(record: dict, kind: str) -> dict[str, list[dict]]:
    """The message lists whose lengths are reported, per length field."""
    if kind == "sft":
        return {"conversation": record["messages"]}
    record = to_dpo(record)
    prompt = record["prompt_messages"]
    return {
        "prompt": prompt,
        "prompt+chosen": prompt + record["chosen_messages"],
        "prompt+rejected": prompt + record["rejected_messages"],
    }


class TokenCounter:
    """Token lengths with a tokenizer: through its chat template when it has one, as in training.

    A conversation the template refuses raises `llmft.finetune.templates.TemplateRefusal`.
    """

    def __init__(self, tokenizer, name: str):
        self.tokenizer = tokenizer
        self.name = name
        self.templated = bool(getattr(tokenizer, "chat_template", None))

    def __call__(self, messages: list[dict]) -> int:
        if self.templated:
            from llmft.finetune.templates import render

            return len(self.tokenizer(render(self.tokenizer, messages), add_special_tokens=False)["input_ids"])
        return len(self.tokenizer("\n".join(m["content"] for m in messages))["input_ids"])

    def text(self, text: str) -> int:
        """Tokens of a plain text (text and classification records)."""
        return len(self.tokenizer(text)["input_ids"])


def validate_file(
    path: str | Path,
    kind: str | None = None,
    tokens: TokenCounter | None = None,
    display_name: str | None = None,
    strict: bool = False,
) -> FileReport:
    """Check every line of one JSONL file; never raises for bad data (see `FileReport.invalid`).

    `strict`: a DPO pair whose chosen and rejected answers are equal is invalid (else counted).
    """
    path = Path(path)
    if kind is not None and kind not in RECORD_KINDS:
        raise UserError(f"--kind must be one of {', '.join(RECORD_KINDS)}; got {kind!r}")
    if path.is_dir():
        raise UserError(f"{path} is a folder; give one .jsonl file (`llmft prepare-data` takes a folder)")
    if not path.is_file():
        raise UserError(f"{path} does not exist")
    report = FileReport(display_name or str(path), kind)
    lines = list(read_jsonl(path, display_name=report.path))
    for line in lines:
        if report.kind is None and line.error is None:
            report.kind = detect_file_kind(line.record)
    for line in lines:
        if line.error is not None:
            report.invalid.append(Invalid(line.where, line.number, line.error))
            continue
        record, dropped = drop_empty_system_messages(line.record)
        report.empty_system_dropped += dropped
        if report.kind is None:
            report.invalid.append(
                Invalid(
                    line.where,
                    line.number,
                    "neither an SFT record (`messages`), a DPO record (`prompt_messages`, `chosen_messages`, "
                    "`rejected_messages`) nor a text record (`text`, with a `label` for classification)",
                )
            )
            continue
        other = detect_kind(record)
        if other is not None and other != report.kind:
            reason = (
                f"{other.upper()} record in a file of {report.kind.upper()} records (the format comes from "
                f"{'--kind' if kind else 'the first record'}; one file holds one format)"
            )
            report.invalid.append(Invalid(line.where, line.number, reason))
            continue
        if report.kind in TEXT_KINDS:
            problems = text_record_problems(record, report.kind)
            if kind is None and report.kind == "text" and "label" in record:
                problems.append(LABEL_IN_TEXT_FILE)
            if problems:
                report.invalid.append(Invalid(line.where, line.number, "; ".join(problems)))
            else:
                _count_text(report, line.number, record, tokens)
            continue
        problems = problems_for(record, report.kind)
        if not problems and report.kind == "dpo" and pair_is_identical(record):
            if strict:
                problems = [IDENTICAL_PAIR]
            else:
                report.identical_pairs.append(line.where)
        if problems:
            report.invalid.append(Invalid(line.where, line.number, "; ".join(problems)))
            continue
        _count(report, report.kind, line, record, tokens)
    return report


LABEL_IN_TEXT_FILE = (
    "a `label` in a file of text records (the format comes from the first record, which has none): give every "
    "record of a classification file a label, or --kind text to train on the text alone"
)
IDENTICAL_PAIR = "the chosen and rejected answers are the same, so the pair teaches nothing; fix or remove it"


def _count(report: FileReport, kind: str, line, record: dict, tokens: TokenCounter | None) -> None:
    """Count a valid `kind` record; one its tokenizer's chat template refuses is an invalid line instead."""
    number = line.number
    lengths = {}
    if tokens is not None:
        from llmft.finetune.templates import TemplateRefusal

        try:
            lengths = {name: tokens(messages) for name, messages in _texts(record, kind).items()}
        except TemplateRefusal as error:
            report.invalid.append(Invalid(line.where, number, str(error)))
            return
    report.records += 1
    report.valid_lines.append(number)
    for messages in (
        [record["messages"]]
        if kind == "sft"
        else [to_dpo(record)[f] for f in ("prompt_messages", "chosen_messages", "rejected_messages")]
    ):
        report.roles.update(m["role"] for m in messages)
    for name, messages in _texts(record, kind).items():
        report.chars.setdefault(name, []).append(sum(len(m["content"]) for m in messages))
        if name in lengths:
            report.tokens.setdefault(name, []).append(lengths[name])


def _count_text(report: FileReport, number: int, record: dict, tokens: TokenCounter | None) -> None:
    report.records += 1
    report.valid_lines.append(number)
    if report.kind == "sequence-classification":
        report.labels[str(record["label"])] += 1
    report.chars.setdefault("text", []).append(len(record["text"]))
    if tokens is not None:
        report.tokens.setdefault("text", []).append(tokens.text(record["text"]))


def summary(report: FileReport, tokens: TokenCounter | None = None) -> str:
    """A few lines a person reads before training on the file."""
    kind = report.kind.upper() if report.kind else "unknown format"
    head = f"{report.path}: {kind}, {report.records} valid record(s)"
    if report.invalid:
        head += f", {len(report.invalid)} invalid line(s)"
    lines = [head]
    if report.empty_system_dropped:
        lines.append(f"  empty system messages dropped (harmless): {report.empty_system_dropped} record(s)")
    if report.identical_pairs:
        lines.append(
            f"  pairs whose chosen and rejected answers are the same: {len(report.identical_pairs)} "
            f"(they teach nothing; first at {', '.join(report.identical_pairs[:3])}; --strict rejects "
            "them)"
        )
    if report.roles:
        lines.append(
            "  messages per role: " + ", ".join(f"{role} {count}" for role, count in sorted(report.roles.items()))
        )
    if report.labels:
        lines.append(
            "  records per label: " + ", ".join(f"{label} {count}" for label, count in sorted(report.labels.items()))
        )
    for unit, table in (
        ("characters", report.chars),
        (f"tokens ({tokens.name})" if tokens else "tokens", report.tokens),
    ):
        for name, values in table.items():
            stats = percentiles(values)
            if stats:
                lines.append(f"  {name} length in {unit}: " + ", ".join(f"{k} {v}" for k, v in stats.items()))
    return "\n".join(lines)


def error_listing(reports: list[FileReport], limit: int = 20) -> str:
    """`file:line: reason` for the first `limit` invalid lines, then a count of the rest."""
    invalid = [item for report in reports for item in report.invalid]
    shown = [f"{item.where}: {item.reason}" for item in invalid[:limit]]
    if len(invalid) > limit:
        shown.append(f"... and {len(invalid) - limit} more invalid line(s)")
    return "\n".join(shown)


def load_token_counter(location: str) -> TokenCounter:
    """A tokenizer from a local folder or a bucket folder (only its tokenizer files are downloaded)."""
    import tempfile

    from llmft.storage import parse_location

    where = parse_location(location)
    if where.is_local:
        check_tokenizer_folder(where.path, "--tokenizer")
        return TokenCounter(_load_tokenizer(where.path, location), location)
    folder = Path(tempfile.mkdtemp(prefix="llmft-tokenizer-"))
    download_tokenizer_files(where, folder)
    return TokenCounter(_load_tokenizer(folder, location), location)


def download_tokenizer_files(where, folder: Path) -> None:
    from llmft.storage import download_file, read_manifest

    manifest = read_manifest(where)
    if manifest is None:
        raise UserError(
            f"tokenizer {where} has no manifest: give a complete model folder in the bucket "
            "(as written by download-model)"
        )
    wanted = [name for name in manifest.files if name in TOKENIZER_FILES]
    if not wanted:
        raise UserError(f"{where} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}, ...)")
    for name in wanted:
        download_file(where.child(name), folder / name, manifest.files[name])


def _load_tokenizer(folder: Path, location: str) -> Any:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise UserError("--tokenizer needs the `transformers` package in this image") from None
    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as error:
        raise UserError(f"cannot load a tokenizer from {location}: {str(error).splitlines()[0]}") from None
