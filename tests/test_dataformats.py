"""The shared SFT / DPO record rules and conversions."""

from __future__ import annotations

import pytest

from llmft.dataformats import (
    apply_column_map,
    detect_kind,
    dpo_problems,
    read_jsonl,
    sft_problems,
    to_dpo,
)

U = {"role": "user", "content": "q"}
A = {"role": "assistant", "content": "a"}
S = {"role": "system", "content": "be brief"}


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ([], "non-empty list"),
        ([U], "must end with a assistant message"),
        ([A], "starting with user"),
        ([U, U, A], "message 1 is 'user'"),
        ([U, A, S], "system message may only come first"),
        ([{"role": "bot", "content": "x"}, A], "role must be one of"),
        ([U, {"role": "assistant", "content": "  "}], "content must be a non-empty string"),
        ([U, {"role": "assistant", "content": "a", "weight": 1}], "unknown keys ['weight']"),
    ],
)
def test_bad_sft_records(messages, fragment):
    problems = sft_problems({"messages": messages})
    assert any(fragment in p for p in problems), problems


def test_good_sft_records():
    assert sft_problems({"messages": [S, U, A, U, A], "dataset": "x", "id": 3}) == []
    assert sft_problems({"text": "hi"})[0].startswith("missing `messages`")


def test_dpo_forms_and_rules():
    ours = {"prompt_messages": [U], "chosen_messages": [A], "rejected_messages": [A]}
    trl = {"prompt": [U], "chosen": [A], "rejected": [A], "id": "7"}
    assert dpo_problems(ours) == [] and dpo_problems(trl) == []
    assert to_dpo(trl) == {**ours, "id": "7"}
    assert detect_kind(trl) == detect_kind(ours) == "dpo"
    assert any("start with an assistant" in p for p in dpo_problems({**ours, "chosen_messages": [U]}))
    assert any("must end with a user" in p for p in dpo_problems({**ours, "prompt_messages": [U, A]}))


def test_column_map_like_torchtune():
    row = {"incorrect": "teh cat", "correct": "the cat", "id": 1}
    assert apply_column_map(row, {"input": "incorrect", "output": "correct"}) == {
        "messages": [{"role": "user", "content": "teh cat"}, {"role": "assistant", "content": "the cat"}],
        "id": 1,
    }
    alpaca = apply_column_map({"instruction": "Fix", "input": "teh", "output": "the"}, {})
    assert alpaca["messages"][0]["content"] == "Fix\n\nteh"


def test_read_jsonl_reports_bad_json_with_line_numbers(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text('{"messages": []}\n\n{oops\n')
    lines = list(read_jsonl(path))
    assert [line.number for line in lines] == [1, 3]
    assert lines[1].error.startswith("invalid JSON") and lines[1].where.endswith("d.jsonl:3")
