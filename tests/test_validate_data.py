"""`llmft validate-data FILE`: the laptop check of a data file (exit 0 + summary, or 1 + file:line errors)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.errors import UserError
from llmft.staging.validate import load_token_counter, percentiles, summary, validate_file

LLMFT = str(Path(sys.executable).parent / "llmft")


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([LLMFT, "validate-data", *args], capture_output=True, text=True, timeout=120)


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(*turns: tuple[str, str]) -> dict:
    return {"messages": [{"role": role, "content": content} for role, content in turns]}


def test_valid_sft_file_exits_zero_with_a_summary(tmp_path):
    rows = [chat(("system", "Be brief."), ("user", "q" * n), ("assistant", "a" * n)) for n in range(1, 101)]
    result = run(str(write(tmp_path / "sft.jsonl", rows)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{tmp_path / 'sft.jsonl'}: SFT, 100 valid record(s)"
    assert lines[1] == "  messages per role: assistant 100, system 100, user 100"
    # Conversation length = 9 + 2n characters for n = 1..100 (nearest-rank percentiles).
    assert lines[2] == "  conversation length in characters: p50 109, p90 189, p99 207, max 209"
    assert lines[-1].endswith("sft.jsonl is valid")


def test_invalid_file_exits_one_with_file_line_reasons_and_no_traceback(tmp_path):
    rows = [
        chat(("user", "q"), ("assistant", "a")),
        "{not json",
        chat(("assistant", "a"), ("user", "q")),
        chat(("user", "q"), ("assistant", "")),
        {"text": "plain"},
    ]
    path = write(tmp_path / "bad.jsonl", rows)
    result = run(str(path))
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = result.stderr.splitlines()
    assert errors[0].startswith(f"{path}:2: invalid JSON")
    assert errors[1].startswith(f"{path}:3: `messages`: roles must alternate user, assistant")
    assert errors[2] == f"{path}:4: `messages[1]`.content must be a non-empty string"
    assert errors[3].startswith(f"{path}:5: missing `messages`")
    assert errors[-1] == f"{path} is not valid: 4 invalid line(s)"
    assert "SFT, 1 valid record(s), 4 invalid line(s)" in result.stdout


def test_dpo_is_detected_and_trl_preference_rows_are_accepted(tmp_path):
    ours = {
        "prompt_messages": [{"role": "user", "content": "Pick one"}],
        "chosen_messages": [{"role": "assistant", "content": "Good"}],
        "rejected_messages": [{"role": "assistant", "content": "Bad!"}],
    }
    trl = {
        "prompt": [{"role": "user", "content": "Pick two"}],
        "chosen": [{"role": "assistant", "content": "Yes"}],
        "rejected": [{"role": "assistant", "content": "No"}],
    }
    path = write(tmp_path / "dpo.jsonl", [ours, trl])
    report = validate_file(path)
    assert report.kind == "dpo" and report.records == 2 and not report.invalid
    assert report.chars == {"prompt": [8, 8], "prompt+chosen": [12, 11], "prompt+rejected": [12, 10]}
    result = run(str(path))
    assert result.returncode == 0 and "DPO, 2 valid record(s)" in result.stdout
    assert "prompt+chosen length in characters" in result.stdout


def test_kind_option_and_mixed_formats(tmp_path):
    sft_row = chat(("user", "q"), ("assistant", "a"))
    dpo_row = {
        "prompt_messages": [{"role": "user", "content": "p"}],
        "chosen_messages": [{"role": "assistant", "content": "c"}],
        "rejected_messages": [{"role": "assistant", "content": "r"}],
    }
    mixed = write(tmp_path / "mixed.jsonl", [sft_row, dpo_row])
    result = run(str(mixed))
    assert result.returncode == 1
    assert f"{mixed}:2: DPO record in a file of SFT records" in result.stderr
    as_dpo = run(str(mixed), "--kind", "dpo")
    assert as_dpo.returncode == 1 and f"{mixed}:1: SFT record in a file of DPO records" in as_dpo.stderr


def test_text_kinds_can_be_forced_and_a_label_in_a_text_file_is_named(tmp_path):
    path = write(tmp_path / "reviews.jsonl", [{"text": "no label yet"}, {"text": "great", "label": "positive"}])
    detected = run(str(path))
    assert detected.returncode == 1
    assert f"{path}:2: a `label` in a file of text records" in detected.stderr  # not silently ignored
    as_classification = run(str(path), "--kind", "sequence-classification")
    assert as_classification.returncode == 1
    assert f"{path}:1: `label` must be an integer or a non-empty string label, got null" in as_classification.stderr
    as_text = run(str(path), "--kind", "text")
    assert as_text.returncode == 0 and "TEXT, 2 valid record(s)" in as_text.stdout
    unknown = run(str(path), "--kind", "chat")
    assert unknown.returncode == 2 and "invalid choice: 'chat'" in unknown.stderr


def test_max_errors_counts_the_rest(tmp_path):
    path = write(tmp_path / "bad.jsonl", ["x"] * 50)
    result = run(str(path), "--max-errors", "3")
    assert result.returncode == 1
    assert "... and 47 more invalid line(s)" in result.stderr
    assert result.stderr.count("invalid JSON") == 3


def test_token_lengths_with_the_tiny_models_tokenizer(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    row = chat(("user", "Hello there"), ("assistant", "General Kenobi"))
    path = write(tmp_path / "d.jsonl", [row, row])
    counter = load_token_counter(str(tiny_model_dir))
    report = validate_file(path, tokens=counter)
    # Counted through the chat template, as training sees the conversation.
    expected = len(
        AutoTokenizer.from_pretrained(tiny_model_dir).apply_chat_template(row["messages"], tokenize=True)["input_ids"]
    )
    assert report.tokens == {"conversation": [expected, expected]}
    assert f"conversation length in tokens ({tiny_model_dir}): p50 {expected}" in summary(report, counter)


def test_missing_file_and_bad_tokenizer_are_user_errors(tmp_path):
    missing = run(str(tmp_path / "nope.jsonl"))
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "does not exist" in missing.stderr
    (tmp_path / "empty-model").mkdir()
    with pytest.raises(UserError, match="empty-model has no tokenizer files"):
        load_token_counter(str(tmp_path / "empty-model"))
    (tmp_path / "latin.jsonl").write_bytes(b'{"messages": "\xe9"}\n')
    report = validate_file(tmp_path / "latin.jsonl")  # an invalid line with its number, not a crash
    assert [(item.line, item.reason) for item in report.invalid] == [
        (1, "not UTF-8 text (byte 0xe9 at column 15); save the file as UTF-8")
    ]


def test_percentiles_nearest_rank():
    assert percentiles(list(range(1, 101))) == {"p50": 50, "p90": 90, "p99": 99, "max": 100}
    assert percentiles([7]) == {"p50": 7, "p90": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {}
