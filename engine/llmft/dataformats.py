"""The JSONL data formats every part of the suite shares (seed 004's formats).

- SFT: `{"messages": [{"role": "user"|"assistant"|"system", "content": "..."}, ...]}`
  with optional `dataset` and `id` fields.
- DPO: `{"prompt_messages": [...], "chosen_messages": [...], "rejected_messages": [...]}`.

Also accepted and converted: TRL's conversational preference rows
(`prompt`/`chosen`/`rejected` as message lists) and instruction rows mapped with a
TorchTune-style `column_map` (e.g. `{"input": "incorrect", "output": "correct"}`).

Validation returns every problem of a record as text; readers attach `file:line`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = ("system", "user", "assistant")
# The record formats of a data file: chat (SFT) and preference (DPO) conversations, plain `text`, and `text` with
# a `label` (sequence classification). `--kind` of the data commands and the data chart's `dataKind` name one.
RECORD_KINDS = ("sft", "dpo", "text", "sequence-classification")
SFT_FIELDS = {"messages", "dataset", "id"}
DPO_FIELDS = {"prompt_messages", "chosen_messages", "rejected_messages", "dataset", "id"}
TRL_PREFERENCE_FIELDS = {"prompt", "chosen", "rejected"}


@dataclass(frozen=True)
class Line:
    """One line of a JSONL file: its 1-based number and the parsed object (or the JSON error)."""

    path: str
    number: int
    record: Any = None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path}:{self.number}"


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    """`json.loads`' object hook: a key given twice would silently keep only its last value."""
    record = {}
    for key, value in pairs:
        if key in record:
            raise _DuplicateKey(key)
        record[key] = value
    return record


def read_jsonl(path: str | Path, display_name: str | None = None) -> Iterator[Line]:
    """Yield every non-blank line; a line that is not UTF-8, not JSON or names a key twice is yielded with
    `error` set, never skipped."""
    name = display_name or str(path)
    with open(path, "rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                yield Line(
                    name,
                    number,
                    error=f"not UTF-8 text (byte {raw[error.start]:#04x} at column "
                    f"{error.start + 1}); save the file as UTF-8",
                )
                continue
            if not text.strip():
                continue
            try:
                yield Line(name, number, json.loads(text, object_pairs_hook=_unique_keys))
            except json.JSONDecodeError as error:
                yield Line(name, number, error=f"invalid JSON ({error.msg} at column {error.colno})")
            except _DuplicateKey as key:
                yield Line(
                    name,
                    number,
                    error=f"the key {str(key)!r} appears twice in one object; the second "
                    "would silently replace the first: keep one",
                )


def drop_empty_system_messages(record: Any) -> tuple[Any, bool]:
    """The record without system messages whose content is empty, and whether one was dropped.

    The original tutorial's data script writes `{"role": "system", "content": ""}` first in every
    record: harmless, so it is dropped (and counted by the callers) instead of failing the record.
    """
    if not isinstance(record, dict):
        return record, False
    dropped = False
    cleaned = dict(record)
    for field in ("messages", "prompt_messages", "prompt"):
        messages = record.get(field)
        if not isinstance(messages, list):
            continue
        kept = [
            m
            for m in messages
            if not (
                isinstance(m, dict)
                and m.get("role") == "system"
                and isinstance(m.get("content"), str)
                and not m["content"].strip()
            )
        ]
        if len(kept) != len(messages):
            cleaned[field] = kept
            dropped = True
    return (cleaned, True) if dropped else (record, False)


def pair_is_identical(record: dict) -> bool:
    """A valid DPO record whose chosen and rejected answers are the same (it teaches nothing)."""
    record = to_dpo(record)
    return record["chosen_messages"] == record["rejected_messages"]


def detect_kind(record: Any) -> str | None:
    """'sft', 'dpo' or None, from the fields a record carries."""
    if not isinstance(record, dict):
        return None
    if "messages" in record:
        return "sft"
    if "prompt_messages" in record or TRL_PREFERENCE_FIELDS <= record.keys():
        return "dpo"
    return None


def message_problems(messages: Any, field: str) -> list[str]:
    if not isinstance(messages, list) or not messages:
        return [f"`{field}` must be a non-empty list of messages"]
    problems = []
    for index, message in enumerate(messages):
        where = f"`{field}[{index}]`"
        if not isinstance(message, dict):
            problems.append(f"{where} must be an object with `role` and `content`")
            continue
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            problems.append(f"{where}.role must be one of {', '.join(ROLES)}, got {role!r}")
        if not isinstance(content, str) or not content.strip():
            problems.append(f"{where}.content must be a non-empty string")
        extra = set(message) - {"role", "content"}
        if extra:
            problems.append(f"{where} has unknown keys {sorted(extra)} (only role and content are used)")
    return problems


def _turn_order_problems(roles: list[str], field: str, must_end_with: str) -> list[str]:
    body = roles[1:] if roles and roles[0] == "system" else roles
    if "system" in body:
        return [f"`{field}`: a system message may only come first"]
    if not body:
        return [f"`{field}` has no user or assistant message"]
    expected = "user"
    for index, role in enumerate(body):
        if role != expected:
            return [
                f"`{field}`: roles must alternate user, assistant, ... starting with user; "
                f"message {index + (len(roles) - len(body))} is {role!r}"
            ]
        expected = "assistant" if role == "user" else "user"
    if body[-1] != must_end_with:
        return [f"`{field}` must end with a {must_end_with} message"]
    return []


def sft_problems(record: Any) -> list[str]:
    """Everything wrong with an SFT record (empty when valid)."""
    if not isinstance(record, dict):
        return ["each line must be a JSON object"]
    if "messages" not in record:
        return ['missing `messages` (SFT records are {"messages": [{"role": ..., "content": ...}]})']
    problems = message_problems(record["messages"], "messages")
    if not problems:
        problems = _turn_order_problems([m["role"] for m in record["messages"]], "messages", "assistant")
    return problems + _metadata_problems(record)


def _metadata_problems(record: dict) -> list[str]:
    problems = []
    if "dataset" in record and not isinstance(record["dataset"], str):
        problems.append("`dataset` must be a string")
    if "id" in record and not isinstance(record["id"], (str, int)):
        problems.append("`id` must be a string or an integer")
    return problems


def to_dpo(record: dict) -> dict:
    """TRL's conversational `prompt`/`chosen`/`rejected` to the suite's DPO form (others unchanged)."""
    if "prompt_messages" in record or not TRL_PREFERENCE_FIELDS <= record.keys():
        return record
    converted = {
        "prompt_messages": record["prompt"],
        "chosen_messages": record["chosen"],
        "rejected_messages": record["rejected"],
    }
    for key in ("dataset", "id"):
        if key in record:
            converted[key] = record[key]
    return converted


def dpo_problems(record: Any) -> list[str]:
    """Everything wrong with a DPO record, in the suite's or TRL's conversational form."""
    if not isinstance(record, dict):
        return ["each line must be a JSON object"]
    record = to_dpo(record)
    missing = [f for f in ("prompt_messages", "chosen_messages", "rejected_messages") if f not in record]
    if missing:
        return [
            f"missing {', '.join('`' + m + '`' for m in missing)} (DPO records need "
            "prompt_messages, chosen_messages and rejected_messages)"
        ]
    problems = message_problems(record["prompt_messages"], "prompt_messages")
    if not problems:
        problems += _turn_order_problems([m["role"] for m in record["prompt_messages"]], "prompt_messages", "user")
    for field in ("chosen_messages", "rejected_messages"):
        field_problems = message_problems(record[field], field)
        if not field_problems and record[field][0]["role"] != "assistant":
            field_problems.append(f"`{field}` must start with an assistant message")
        problems += field_problems
    return problems + _metadata_problems(record)


def problems_for(record: Any, kind: str) -> list[str]:
    return sft_problems(record) if kind == "sft" else dpo_problems(record)


def apply_column_map(row: dict, column_map: dict[str, str]) -> dict:
    """An instruction row to SFT messages via a TorchTune-style column map.

    Expected names are `input` and `output` (and optional `system`, `instruction`);
    `column_map` maps each to the row's actual column, e.g. `{"input": "incorrect",
    "output": "correct"}`. With `instruction`, the user turn is instruction, a blank
    line, then input (Alpaca style).
    """

    def column(name: str) -> Any:
        return row.get(column_map.get(name, name))

    user = column("input")
    instruction = column("instruction")
    if instruction:
        user = f"{instruction}\n\n{user}" if user else instruction
    messages = []
    if column("system"):
        messages.append({"role": "system", "content": column("system")})
    messages.append({"role": "user", "content": user})
    messages.append({"role": "assistant", "content": column("output")})
    record: dict[str, Any] = {"messages": messages}
    for key in ("dataset", "id"):
        if key in row:
            record[key] = row[key]
    return record


# ------------------------------------------------------------------------------------------ other tasks


def chat_row(row: dict, column_map: dict[str, str]) -> dict:
    """A chat row with `column_map` applied: `messages` renamed, or instruction columns made messages."""
    if "messages" in column_map or not ({"input", "output", "instruction"} & column_map.keys()):
        source = column_map.get("messages", "messages")
        record = {"messages": row.get(source)} if source in row else dict(row)
        for key in ("dataset", "id"):
            if key in row and row[key] is not None:
                record[key] = row[key]
        return record
    return apply_column_map(row, column_map)


def with_system_prompt(messages: Any, prompt: str) -> Any:
    """`messages` with `prompt` as its system message: the sample's own replaced, or one added first."""
    if not isinstance(messages, list):
        return messages
    rest = (
        messages[1:] if messages and isinstance(messages[0], dict) and messages[0].get("role") == "system" else messages
    )
    return [{"role": "system", "content": prompt}, *rest]


def preference_row(row: dict, column_map: dict[str, str]) -> dict:
    """A DPO row with `column_map` applied (TRL's prompt/chosen/rejected); strings become one message each."""
    if not column_map:
        return row
    roles = {"prompt": "user", "chosen": "assistant", "rejected": "assistant"}
    record: dict[str, Any] = {}
    for field, role in roles.items():
        value = row.get(column_map.get(field, field))
        record[field] = [{"role": role, "content": value}] if isinstance(value, str) else value
    for key in ("dataset", "id"):
        if key in row and row[key] is not None:
            record[key] = row[key]
    return record


def text_problems(value: Any, column: str) -> list[str]:
    if not isinstance(value, str) or not value.strip():
        return [f"`{column}` must be a non-empty string, got {_shown(value)}"]
    return []


def label_problems(value: Any, column: str) -> list[str]:
    if isinstance(value, bool) or not isinstance(value, (int, str)) or (isinstance(value, str) and not value.strip()):
        return [f"`{column}` must be an integer or a non-empty string label, got {_shown(value)}"]
    return []


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
