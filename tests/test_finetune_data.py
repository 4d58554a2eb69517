"""Training data: bad lines reported as file:line all at once, column maps, mixing, splitting,
bucket datasets, and length filtering that counts what it leaves out."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from llmft.errors import UserError
from llmft.finetune import data
from llmft.finetune.config import DataConf, SftArgs
from llmft.finetune.model import load_tokenizer, prepare_tokenizer


def _chat(question: str, answer: str) -> dict:
    return {"messages": [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]}


def _write(path, rows) -> str:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return str(path)


def _conf(**data_conf) -> DataConf:
    return DataConf.model_validate(data_conf)


def test_every_bad_line_of_every_file_is_reported_with_file_and_line(tmp_path):
    first = _write(
        tmp_path / "a.jsonl",
        [
            _chat("q1", "a1"),
            "{not json",
            {"messages": [{"role": "user", "content": "only a question"}]},
            {"messages": [{"role": "robot", "content": "hi"}, {"role": "assistant", "content": "x"}]},
        ],
    )
    second = _write(tmp_path / "b.jsonl", [{"text": "no messages"}, _chat("q", "a")])
    conf = _conf(training_data={"datasets": [{"path": first}, {"path": second}]})
    with pytest.raises(UserError) as caught:
        data.load_datasets(conf.training_data.datasets, tmp_path)
    message = str(caught.value)
    assert f"{first}:2: invalid JSON" in message
    assert f"{first}:3: `messages` must end with a assistant message" in message
    assert f"{first}:4: `messages[0]`.role must be one of system, user, assistant, got 'robot'" in message
    assert f"{second}:1: missing `messages`" in message
    assert f"{first}:1" not in message and f"{second}:2" not in message


def test_many_bad_lines_are_listed_up_to_a_limit_and_counted(tmp_path):
    path = _write(tmp_path / "bad.jsonl", ["[]"] * 30)
    spec = _conf(training_data={"datasets": [{"path": path}]}).training_data.datasets[0]
    records, problems = data.load_records(spec, tmp_path)
    assert records == [] and len(problems) == data.MAX_PROBLEMS_PER_FILE + 1
    assert problems[0] == f"{path}:1: each line must be a JSON object"
    assert problems[-1] == f"{path}: ... and 10 more bad lines (30 in all); `llmft validate-data {path}` lists them"


def test_missing_local_dataset_suggests_the_local_form(tmp_path):
    with pytest.raises(UserError, match="dataset /nowhere/x.jsonl does not exist"):
        data.fetch("/nowhere/x.jsonl", tmp_path)


def test_column_map_turns_instruction_rows_into_chats(tmp_path):
    path = _write(tmp_path / "fix.jsonl", [{"incorrect": "teh cat", "correct": "the cat", "id": 1}])
    spec = _conf(
        training_data={"datasets": [{"path": path, "column_map": {"input": "incorrect", "output": "correct"}}]}
    )
    records, problems = data.load_records(spec.training_data.datasets[0], tmp_path)
    assert problems == []
    assert records[0].messages == [{"role": "user", "content": "teh cat"}, {"role": "assistant", "content": "the cat"}]
    assert records[0].where == f"{path}:1"


def test_weighted_mix_follows_the_weights_and_the_seed(tmp_path):
    a = _write(tmp_path / "a.jsonl", [_chat(f"a{i}", "x") for i in range(10)])
    b = _write(tmp_path / "b.jsonl", [_chat(f"b{i}", "x") for i in range(30)])
    conf = _conf(
        training_data={
            "type": "PRECOMPUTE_WEIGHTED_MIX",
            "seed": 7,
            "datasets": [{"path": a, "sampling_weight": 3}, {"path": b, "sampling_weight": 1}],
        }
    )
    loaded = data.load_datasets(conf.training_data.datasets, tmp_path)
    mixed = data.mix(loaded, conf.training_data)
    sources = Counter(record.where.split(":")[0] for record in mixed)
    # 40 samples in all, 3:1 -> 30 from a (three passes over its 10) and 10 from b (a seeded subset).
    assert sources == {a: 30, b: 10}
    assert Counter(r.messages[0]["content"] for r in mixed if r.where.startswith(a)) == {f"a{i}": 3 for i in range(10)}
    again = data.mix(loaded, conf.training_data)
    assert [r.where for r in again] == [r.where for r in mixed]
    concatenated = data.mix(loaded, _conf(training_data={"datasets": [{"path": a}, {"path": b}]}).training_data)
    assert len(concatenated) == 40 and concatenated[0].where == f"{a}:1"


def test_auto_split_is_seeded_and_disjoint(tmp_path):
    path = _write(tmp_path / "t.jsonl", [_chat(f"q{i}", "a") for i in range(20)])
    conf = _conf(
        training_data={"datasets": [{"path": path}]}, validation_data={"type": "AUTO_SPLIT", "ratio": 0.25, "seed": 3}
    )
    records = data.load_datasets(conf.training_data.datasets, tmp_path)[0]
    train, held_out = data.split_validation(records, conf, tmp_path)
    assert (len(train), len(held_out)) == (15, 5)
    assert not {r.where for r in train} & {r.where for r in held_out}
    train2, held_out2 = data.split_validation(records, conf, tmp_path)
    assert [r.where for r in held_out2] == [r.where for r in held_out]


def test_validation_concatenation_reads_its_own_files(tmp_path):
    train_path = _write(tmp_path / "t.jsonl", [_chat("q", "a")] * 3)
    valid_path = _write(tmp_path / "v.jsonl", [_chat("vq", "va")] * 2)
    conf = _conf(
        training_data={"datasets": [{"path": train_path}]},
        validation_data={"type": "CONCATENATION", "datasets": [{"path": valid_path}]},
    )
    train, held_out = data.split_validation(
        data.load_datasets(conf.training_data.datasets, tmp_path)[0], conf, tmp_path
    )
    assert len(train) == 3 and [r.where for r in held_out] == [f"{valid_path}:1", f"{valid_path}:2"]


def test_long_samples_are_left_out_counted_and_reported(tiny_model_dir, tmp_path, caplog):
    tokenizer = load_tokenizer(tiny_model_dir)
    setup = prepare_tokenizer(tokenizer, "chat-ml", "bos-repurpose")
    path = _write(tmp_path / "t.jsonl", [_chat("short", "ok"), _chat("long " * 200, "ok"), _chat("hi", "yes")])
    records = data.load_datasets(_conf(training_data={"datasets": [{"path": path}]}).training_data.datasets, tmp_path)[
        0
    ]
    examples, report = data.encode_all(records, tokenizer, setup.chat_format, 64, True, "training data")
    assert len(examples) == 2 and report.kept == 2 and report.too_long == 1
    assert report.examples == [f"{path}:2"] and report.longest_left_out > 64
    assert "left out 1 of 3 samples longer than sft_args.max_seq_length=64" in caplog.text
    with pytest.raises(UserError, match="every training data sample is longer than 4 tokens"):
        data.encode_all(records, tokenizer, setup.chat_format, 4, True, "training data")
    assert SftArgs().max_seq_length == 2048


def test_dataset_read_from_the_bucket(bucket, tmp_path):
    from llmft.storage import upload_file
    from llmft.storage.location import parse_location

    _write(tmp_path / "train.jsonl", [_chat("q1", "a1"), _chat("q2", "a2")])
    upload_file(tmp_path / "train.jsonl", parse_location(f"{bucket}/datasets/train.jsonl"))
    for form in (f"{bucket}/datasets/train.jsonl", f"s3://{bucket}/datasets/train.jsonl"):
        conf = _conf(training_data={"datasets": [{"path": form}]})
        records = data.load_datasets(conf.training_data.datasets, tmp_path / "work")[0]
        assert [r.messages[1]["content"] for r in records] == ["a1", "a2"]
        assert records[0].where == f"s3://{bucket}/datasets/train.jsonl:1"


def test_bad_line_in_a_bucket_dataset_names_the_bucket_location(bucket, tmp_path):
    from llmft.storage import upload_file
    from llmft.storage.location import parse_location

    _write(tmp_path / "bad.jsonl", [_chat("q", "a"), "{oops"])
    upload_file(tmp_path / "bad.jsonl", parse_location(f"{bucket}/bad.jsonl"))
    conf = _conf(training_data={"datasets": [{"path": f"{bucket}/bad.jsonl"}]})
    with pytest.raises(UserError, match=f"s3://{bucket}/bad.jsonl:2: invalid JSON"):
        data.load_datasets(conf.training_data.datasets, tmp_path / "work")


def test_conversations_the_template_refuses_are_all_listed_with_file_and_line(tiny_model_dir):
    from chat_template_cases import family_tokenizer

    tokenizer = family_tokenizer(tiny_model_dir, "gemma-2")  # raises "System role not supported"
    setup = prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose")
    system = {"role": "system", "content": "Be brief."}
    records = [data.Record(_chat("q", "a")["messages"], "d.jsonl:1")] + [
        data.Record([system] + _chat("q", "a")["messages"], f"d.jsonl:{n}") for n in (2, 3)
    ]
    with pytest.raises(UserError) as caught:
        data.encode_all(records, tokenizer, setup.chat_format, 256, True, "training data")
    lines = str(caught.value).splitlines()
    assert lines[0] == "the chat template cannot render 2 training data conversation(s):"
    assert [line.split(": ", 1)[0].strip() for line in lines[1:]] == ["d.jsonl:2", "d.jsonl:3"]
    assert "the chat template refused this conversation: System role not supported" in lines[1]
    examples, report = data.encode_all(
        records, tokenizer, setup.chat_format, 256, True, "training data", "fold-into-first-user"
    )
    assert report.kept == 3 and len(examples) == 3
