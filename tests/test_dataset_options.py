"""Dataset options, one model for every method (TorchTune's names): `source`, `split`, `column_map`,
`new_system_prompt`, `train_on_input`, text / label columns. Each option has a test that fails without it,
and bad options fail before any model is loaded, naming the file and the fix (exit 2, no traceback)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from review_data import reviews, write_reviews

from llmft.errors import UserError
from llmft.finetune.classification import label_set
from llmft.finetune.config import DatasetSpec, load_config
from llmft.finetune.data import LabeledRecord, Record, TextRecord, encode_records, load_records
from llmft.storage import parse_location, upload_file

CLASSIFY = "sequence-classification"
REVIEW_COLUMNS = {"text": "review", "label": "sentiment"}


def spec(path: Path | str, **options) -> DatasetSpec:
    return DatasetSpec(path=str(path), **options)


def load(path, kind="sft", workdir: Path | None = None, **options):
    records, problems = load_records(spec(path, **options), workdir or Path(path).parent, kind)
    return records, problems


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((row if isinstance(row, str) else json.dumps(row)) + "\n" for row in rows))
    return path


def chat(user: str, answer: str, system: str | None = None) -> dict:
    messages = [{"role": "system", "content": system}] if system else []
    return {"messages": [*messages, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


# ------------------------------------------------------------------------------------------ source


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".json", ".jsonl"])
def test_every_format_gives_the_same_labelled_records(tmp_path, suffix):
    path = write_reviews(tmp_path / f"reviews{suffix}", count=20)
    records, problems = load(path, CLASSIFY, column_map=REVIEW_COLUMNS)
    assert problems == []
    expected = reviews(20)
    assert [(r.text, r.label) for r in records] == [(row["review"], row["sentiment"]) for row in expected]
    assert all(isinstance(record, LabeledRecord) for record in records)


def test_arrow_files_are_read(tmp_path):
    import datasets

    folder = tmp_path / "saved"
    datasets.Dataset.from_list(reviews(10)).save_to_disk(str(folder))
    (arrow,) = folder.glob("*.arrow")
    records, problems = load(arrow, CLASSIFY, column_map=REVIEW_COLUMNS)
    assert problems == [] and len(records) == 10


def test_source_overrides_the_extension(tmp_path):
    path = write_reviews(tmp_path / "reviews.csv", count=6).rename(tmp_path / "reviews.txt")
    with pytest.raises(UserError, match=r"datasets\[0\].source: cannot tell the format of .*reviews.txt"):
        load_config(_config(str(path)))
    records, problems = load(path, CLASSIFY, source="csv", column_map=REVIEW_COLUMNS)
    assert problems == [] and len(records) == 6


def test_gzip_compressed_files_are_read(tmp_path):
    import gzip

    plain = write_reviews(tmp_path / "reviews.jsonl", count=5)
    packed = tmp_path / "reviews.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    records, problems = load(packed, CLASSIFY, workdir=tmp_path / "scratch", column_map=REVIEW_COLUMNS)
    assert problems == [] and [r.text for r in records] == [row["review"] for row in reviews(5)]
    assert records[0].where == f"{packed}:1"


def test_a_file_that_is_not_its_format_is_named(tmp_path):
    path = tmp_path / "broken.parquet"
    path.write_text("not parquet")
    with pytest.raises(UserError, match=r"dataset .*broken.parquet: cannot read it as parquet"):
        load(path, CLASSIFY)


def test_reads_from_a_bucket_location(bucket, tmp_path):
    local = write_reviews(tmp_path / "reviews.parquet", count=12)
    upload_file(local, parse_location(f"{bucket}/data/reviews.parquet"))
    records, problems = load(
        f"{bucket}/data/reviews.parquet", CLASSIFY, workdir=tmp_path / "scratch", column_map=REVIEW_COLUMNS
    )
    assert problems == [] and len(records) == 12
    assert records[0].where == f"s3://{bucket}/data/reviews.parquet:row 1"


# ------------------------------------------------------------------------------------------ split


def test_split_selects_rows_as_the_hub_does(tmp_path):
    path = write_reviews(tmp_path / "reviews.parquet", count=50)
    texts = [row["review"] for row in reviews(50)]

    def texts_of(split):
        return [r.text for r in load(path, CLASSIFY, split=split, column_map=REVIEW_COLUMNS)[0]]

    assert texts_of("train[:80%]") == texts[:40] and texts_of("train[80%:]") == texts[40:]
    assert texts_of("train[10:20]") == texts[10:20]
    assert texts_of("train[:3000]") == texts  # beyond the end: every row, like the Hub
    assert texts_of("train[:10%]+train[-10%:]") == texts[:5] + texts[45:]


def test_split_on_jsonl_keeps_line_numbers(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat(f"q{i}", f"a{i}") for i in range(4)] + ["{bad json"])
    records, problems = load(path, split="train[2:]")
    assert [r.where for r in records] == [f"{path}:3", f"{path}:4"]
    assert len(problems) == 1 and problems[0].startswith(f"{path}:5: invalid JSON")


def test_split_selecting_nothing_fails_naming_the_file_and_the_fix(tmp_path):
    path = write_reviews(tmp_path / "reviews.parquet", count=10)
    with pytest.raises(UserError, match=r"reviews.parquet: split 'train\[20:\]' selects none of its 10 rows; widen"):
        load(path, CLASSIFY, split="train[20:]", column_map=REVIEW_COLUMNS)


def test_split_syntax_is_checked_with_the_config():
    with pytest.raises(UserError, match=r"datasets\[0\].split: must be the Hub's split syntax"):
        load_config(_config("./train.parquet", split="test[:10]"))


# ------------------------------------------------------------------------------------------ column_map


def test_column_map_names_text_and_label_columns_and_a_missing_one_is_named(tmp_path):
    path = write_reviews(tmp_path / "reviews.parquet", count=4)
    with pytest.raises(UserError) as caught:
        load(path, CLASSIFY)  # the defaults `text` and `label` are not there
    assert "no column 'text', 'label'; its columns are 'review', 'sentiment'" in str(caught.value)
    assert "column_map" in str(caught.value)
    with pytest.raises(UserError, match=r"no column 'stars' \(column_map.label\)"):
        load(path, CLASSIFY, column_map={"text": "review", "label": "stars"})


def test_column_map_renames_the_messages_column(tmp_path):
    row = {"conversation": chat("hi", "hello")["messages"]}
    path = write_jsonl(tmp_path / "d.jsonl", [row])
    (record,), problems = load(path, column_map={"messages": "conversation"})
    assert problems == [] and record.messages[-1]["content"] == "hello"
    records, problems = load(path)
    assert records == [] and "missing `messages`" in problems[0]


def test_column_map_turns_instruction_rows_of_a_parquet_file_into_chat(tmp_path):
    import datasets

    path = tmp_path / "alpaca.parquet"
    datasets.Dataset.from_list(
        [{"instruction": "Translate", "question": "Hallo", "answer": "Hello", "sys": "Be brief"}]
    ).to_parquet(str(path))
    columns = {"instruction": "instruction", "input": "question", "output": "answer", "system": "sys"}
    (record,), problems = load(path, column_map=columns)
    assert record.messages == [
        {"role": "system", "content": "Be brief"},
        {"role": "user", "content": "Translate\n\nHallo"},
        {"role": "assistant", "content": "Hello"},
    ]
    assert record.where == f"{path}:row 1"


def test_dpo_column_map_reads_string_columns(tmp_path):
    path = write_jsonl(tmp_path / "p.jsonl", [{"q": "2+2?", "good": "4", "bad": "5"}])
    (record,), problems = load(path, "dpo", column_map={"prompt": "q", "chosen": "good", "rejected": "bad"})
    assert problems == []
    assert record.prompt == [{"role": "user", "content": "2+2?"}]
    assert record.chosen == [{"role": "assistant", "content": "4"}]


def test_column_map_fields_a_task_does_not_read_are_config_errors():
    with pytest.raises(UserError, match=r"column_map.label: chat data does not read label"):
        load_config(_config("./d.jsonl", column_map={"label": "y"}, task="chat"))


def test_a_bad_row_is_reported_as_file_row(tmp_path):
    import datasets

    path = tmp_path / "d.parquet"
    datasets.Dataset.from_list([{"text": "fine", "label": "a"}, {"text": "", "label": "b"}]).to_parquet(str(path))
    records, problems = load(path, CLASSIFY)
    assert len(records) == 1
    assert problems == [f'{path}:row 2: `text` must be a non-empty string, got ""']


# ------------------------------------------------------------------------------------------ labels


def test_labels_integer_or_string_in_id_order_and_unknown_labels_fail():
    train = [LabeledRecord("t", label, f"f:{i}") for i, label in enumerate([2, 0, 1, 10])]
    assert label_set(None, train, []) == ["0", "1", "2", "10"]  # integers sorted as numbers
    words = [LabeledRecord("t", label, "f:1") for label in ("pos", "neg")]
    assert label_set(None, words, []) == ["neg", "pos"]
    assert label_set(["pos", "neg"], words, []) == ["pos", "neg"]
    with pytest.raises(UserError) as caught:
        label_set(None, words, [LabeledRecord("t", "neutral", "eval.parquet:row 7")])
    assert "eval.parquet:row 7: label 'neutral'" in str(caught.value) and "sft_args.labels" in str(caught.value)


# ------------------------------------------------------------------------------------------ system prompt, input


def test_new_system_prompt_replaces_or_adds_the_system_message(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [chat("a", "b", system="old"), chat("c", "d")])
    records, _ = load(path, new_system_prompt="You are terse.")
    assert [r.messages[0] for r in records] == [{"role": "system", "content": "You are terse."}] * 2
    assert [len(r.messages) for r in records] == [3, 3]
    assert load(path)[0][1].messages[0]["role"] == "user"


def test_train_on_input_puts_loss_on_the_prompt_too(tmp_path, tiny_model_dir):
    from transformers import AutoTokenizer

    from llmft.finetune.templates import apply_chat_format

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    chat_format, _ = apply_chat_format(tokenizer, "keep-original")
    messages = chat("What is the capital of France?", "Paris")["messages"]
    (prompt_too,) = encode_records([Record(messages, "f:1", True)], tokenizer, chat_format, 512, True)
    (default,) = encode_records([Record(messages, "f:1")], tokenizer, chat_format, 512, True)
    trained = [label for label in prompt_too.example["labels"] if label != -100]
    assert trained == prompt_too.example["input_ids"]
    assert sum(label != -100 for label in default.example["labels"]) < len(trained) / 2
    path = write_jsonl(tmp_path / "d.jsonl", [chat("a", "b")])
    assert load(path, train_on_input=True)[0][0].train_on_input is True


def test_options_a_task_does_not_read_are_config_errors():
    with pytest.raises(UserError) as caught:
        load_config(_config("./d.jsonl", task="text", train_on_input=True, new_system_prompt="x"))
    assert "train_on_input: only chat data has an input" in str(caught.value)
    assert "new_system_prompt: text data has no system message" in str(caught.value)


# ------------------------------------------------------------------------------------------ the command


def test_bad_options_fail_before_any_model_loads_with_exit_2(tmp_path):
    """The model folder does not exist: the data problem must be reported first (nothing loaded)."""
    data = write_reviews(tmp_path / "reviews.parquet", count=10)
    config = _config(str(data), split="train[50:60]", column_map=REVIEW_COLUMNS, task=CLASSIFY)
    config["run_conf"]["model"] = str(tmp_path / "no-model-here")
    config["training_args"]["output_dir"] = str(tmp_path / "out")
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps(config))
    result = subprocess.run(
        [sys.executable, "-m", "llmft", "sft", str(path)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2, result.stderr
    assert f"dataset {data}: split 'train[50:60]' selects none of its 10 rows; widen the slice" in result.stderr
    assert "Traceback" not in result.stderr and "no-model-here" not in result.stderr


def _config(path: str, task: str | None = None, **options) -> dict:
    config: dict = {
        "data_conf": {"training_data": {"datasets": [{"path": path, **options}]}},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": "./model"},
        "training_args": {"output_dir": "/tmp/llmft-never-written"},
    }
    if task:
        config["task"] = task
    return config


def test_text_records(tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", [{"body": "One document."}, {"body": ""}])
    records, problems = load(path, "text", column_map={"text": "body"})
    assert records == [TextRecord("One document.", f"{path}:1")]
    assert problems == [f'{path}:2: `body` must be a non-empty string, got ""']


def test_a_run_finished_before_the_dataset_options_existed_is_still_the_same_run():
    """Its summary.json records the config without `task`, `source`, `split`, ...: relaunching it is not a change."""
    from llmft.finetune.recipe import check_same_config

    config = load_config(_config("./d.jsonl"))
    recorded = config.model_dump(mode="json")
    del recorded["task"], recorded["sft_args"]["labels"]
    for key in ("source", "split", "new_system_prompt", "train_on_input"):
        del recorded["data_conf"]["training_data"]["datasets"][0][key]
    check_same_config(config, {"config": recorded}, "here", "fix")
    recorded["training_args"]["learning_rate"] = 1.0
    with pytest.raises(UserError, match="training_args.learning_rate"):
        check_same_config(config, {"config": recorded}, "here", "fix")
