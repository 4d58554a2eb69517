"""Data files as users bring them: bytes that are not UTF-8 and keys given twice are invalid lines with
`file:line` (never a crash, never dropped); the original tutorial's empty system messages are dropped,
counted and the records kept; DPO pairs whose answers are equal are counted (rejected with --strict); a
folder where a file belongs and a column_map naming missing columns say exactly that."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.cli import main
from llmft.errors import UserError
from llmft.finetune.config import DatasetSpec
from llmft.finetune.data import load_records


def chat(question: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system is not None else []
    return {"messages": messages + [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def write_lines(path: Path, lines: list[bytes | dict]) -> Path:
    path.write_bytes(b"".join(line if isinstance(line, bytes) else json.dumps(line).encode() + b"\n" for line in lines))
    return path


def test_non_utf8_and_duplicate_keys_are_invalid_lines_with_file_and_line(tmp_path, capsys):
    path = write_lines(
        tmp_path / "data.jsonl",
        [
            chat("Hi", "Hello"),
            '{"messages": [{"role": "user", "content": "caf\xe9"}]}\n'.encode("latin-1"),
            b'{"messages": [], "messages": [{"role": "user", "content": "a"}]}\n',
            chat("Bye", "Goodbye"),
        ],
    )
    assert main(["validate-data", str(path)]) == 1
    err = capsys.readouterr().err
    assert f"{path}:2: not UTF-8 text (byte 0xe9 at column 47); save the file as UTF-8" in err
    assert f"{path}:3: the key 'messages' appears twice in one object" in err
    assert "Traceback" not in err


def test_training_reports_the_same_bad_lines(tmp_path):
    path = write_lines(
        tmp_path / "data.jsonl",
        [chat("Hi", "Hello"), b'{"messages": 1, "messages": 2}\n', "caf\xe9\n".encode("latin-1")],
    )
    records, problems = load_records(DatasetSpec(path=str(path)), tmp_path)
    assert len(records) == 1
    assert problems == [
        f"{path}:2: the key 'messages' appears twice in one object; the second would silently "
        "replace the first: keep one",
        f"{path}:3: not UTF-8 text (byte 0xe9 at column 4); save the file as UTF-8",
    ]


def test_empty_system_messages_are_dropped_counted_and_the_records_kept(tmp_path, capsys, caplog):
    path = write_lines(
        tmp_path / "tutorial.jsonl",
        [chat("Hi", "Hello", system=""), chat("Yo", "Hey", system=" "), chat("Sup", "Fine", system="Be brief.")],
    )
    assert main(["validate-data", str(path)]) == 0
    out = capsys.readouterr().out
    assert "3 valid record(s)" in out and "empty system messages dropped (harmless): 2 record(s)" in out
    assert "messages per role: assistant 3, system 1, user 3" in out
    with caplog.at_level("INFO"):
        records, problems = load_records(DatasetSpec(path=str(path)), tmp_path)
    assert problems == [] and [len(r.messages) for r in records] == [2, 2, 3]
    assert "dropped the empty system message of 2 record(s)" in caplog.text


def test_identical_dpo_pairs_are_counted_and_rejected_with_strict(tmp_path, capsys):
    def pair(chosen, rejected):
        return {
            "prompt_messages": [{"role": "user", "content": "Q?"}],
            "chosen_messages": [{"role": "assistant", "content": chosen}],
            "rejected_messages": [{"role": "assistant", "content": rejected}],
        }

    path = write_lines(tmp_path / "pairs.jsonl", [pair("A", "B"), pair("same", "same")])
    assert main(["validate-data", str(path)]) == 0
    assert (
        f"chosen and rejected answers are the same: 1 (they teach nothing; first at {path}:2" in capsys.readouterr().out
    )
    assert main(["validate-data", str(path), "--strict"]) == 1
    assert f"{path}:2: the chosen and rejected answers are the same" in capsys.readouterr().err


def test_a_folder_given_as_a_data_file(tmp_path, capsys):
    assert main(["validate-data", str(tmp_path)]) == 2
    assert f"{tmp_path} is a folder; give one .jsonl file" in capsys.readouterr().err
    with pytest.raises(UserError, match=f"dataset {tmp_path} is a folder; give the path of one data file"):
        load_records(DatasetSpec(path=str(tmp_path)), tmp_path)


def test_column_map_naming_a_missing_column_lists_the_rows_columns(tmp_path):
    path = write_lines(tmp_path / "fixes.jsonl", [{"incorrect": "teh cat", "correct": "the cat"}])
    spec = DatasetSpec(path=str(path), column_map={"input": "wrong", "output": "correct"})
    records, problems = load_records(spec, tmp_path)
    assert records == []
    assert problems == [
        f"{path}:1: column_map names column(s) 'wrong' (for input) that this row lacks; its "
        "columns are 'incorrect', 'correct'"
    ]
    records, problems = load_records(
        DatasetSpec(path=str(path), column_map={"input": "incorrect", "output": "correct"}), tmp_path
    )
    assert problems == [] and records[0].messages[1]["content"] == "the cat"
