"""Evaluation samples: read one JSONL file (local or bucket), check every line, key each sample.

Chat data is checked with the training rules (`llmft.dataformats`, SFT records): the reference is the
last assistant turn and the prompt everything before it. Classification data is one text and one label
per line. Every bad line is reported at once (`file:line: reason`) before any model loads.

A sample's key is a hash of its content and its position, so a restarted evaluation recognises the
samples it already scored (`samples.jsonl`) even when the file was re-uploaded unchanged.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from llmft.dataformats import read_jsonl, sft_problems
from llmft.errors import UserError
from llmft.evaluate.spec import Data
from llmft.finetune.templates import fold_system_message

MAX_PROBLEMS = 20


@dataclass
class Sample:
    key: str
    where: str  # file:line
    messages: list[dict] | None = None  # chat: the whole conversation (loss sees all of it)
    text: str | None = None  # classification
    label: str | int | None = None  # classification: the reference label as written

    @property
    def conversation(self) -> list[dict]:
        """Chat: the whole conversation."""
        assert self.messages is not None, "a chat sample"
        return self.messages

    @property
    def prompt(self) -> list[dict]:
        """Chat: the conversation up to the last assistant turn."""
        return self.conversation[:-1]

    @property
    def reference(self) -> str:
        return self.conversation[-1]["content"]

    @property
    def question(self) -> str:
        """The last user turn, for the judge."""
        return next(m["content"] for m in reversed(self.prompt) if m["role"] == "user")


def _key(number: int, record: dict) -> str:
    digest = hashlib.sha256(f"{number}\n{json.dumps(record, sort_keys=True)}".encode()).hexdigest()
    return digest[:16]


def _classification_problems(record, data: Data) -> list[str]:
    if not isinstance(record, dict):
        return ["each line must be a JSON object"]
    problems = []
    text = record.get(data.text_field)
    if data.text_field not in record:
        problems.append(
            f"missing the text field {data.text_field!r} (set data.text_field to the field that holds "
            f"the text; this line has {', '.join(sorted(record)) or 'no fields'})"
        )
    elif not isinstance(text, str) or not text.strip():
        problems.append(f"{data.text_field!r} must be a non-empty string")
    if data.label_field not in record:
        problems.append(
            f"missing the reference field {data.label_field!r} (set data.label_field to the field "
            f"that holds the label; this line has {', '.join(sorted(record)) or 'no fields'})"
        )
    elif not isinstance(record[data.label_field], (str, int)) or isinstance(record[data.label_field], bool):
        problems.append(f"{data.label_field!r} must be a class name (string) or a class index (integer)")
    return problems


def _chat_problems(record) -> list[str]:
    problems = sft_problems(record)
    if problems and isinstance(record, dict) and "messages" not in record:
        problems = [
            "missing the reference: chat samples are SFT records whose last message is the assistant's "
            'reference answer ({"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}); '
            'for {"text", "label"} rows set data.format: classification'
        ]
    return problems


def read_samples(data: Data) -> list[Sample]:
    """Every sample of `data.path` (the first `max_samples`); one UserError with every bad line."""
    from llmft.storage import download_file, parse_location

    location = parse_location(data.path)
    with tempfile.TemporaryDirectory(prefix="llmft-eval-data-") as scratch:
        if location.is_local:
            local, name = location.path.expanduser(), str(location.path)
            if not local.is_file():
                hint = (
                    " (for a local file write ./" + data.path + ")" if not data.path.startswith(("/", ".", "~")) else ""
                )
                raise UserError(f"data.path: {data.path} does not exist{hint}")
        else:
            local, name = Path(scratch) / "data.jsonl", str(location)
            download_file(location, local)
        return _parse(local, name, data)


def _parse(local: Path, name: str, data: Data) -> list[Sample]:
    samples: list[Sample] = []
    problems: list[str] = []
    bad = 0
    for line in read_jsonl(local, display_name=name):
        if data.max_samples is not None and len(samples) >= data.max_samples:
            break
        record = line.record
        reasons = (
            [line.error]
            if line.error
            else (_chat_problems(record) if data.format == "chat" else _classification_problems(record, data))
        )
        if reasons:
            bad += 1
            if bad <= MAX_PROBLEMS:
                problems.append(f"{line.where}: {'; '.join(reasons)}")
            continue
        key = _key(line.number, record)
        if data.format == "chat":
            messages = record["messages"]
            if data.system_message_handling == "fold-into-first-user":
                messages = fold_system_message(messages)
            samples.append(Sample(key, line.where, messages=messages))
        else:
            samples.append(Sample(key, line.where, text=record[data.text_field], label=record[data.label_field]))
    if bad > MAX_PROBLEMS:
        problems.append(f"{name}: ... and {bad - MAX_PROBLEMS} more bad lines ({bad} in all)")
    if problems:
        raise UserError("invalid evaluation data (fix these lines):\n  " + "\n  ".join(problems))
    if not samples:
        raise UserError(f"data.path: {name} has no samples (the file is empty)")
    return samples
