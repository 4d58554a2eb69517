"""`task: text`: plain-text causal LM training (continued pre-training) from a `text` column, loss on every
token, packed across documents without cross-contamination (llmft.finetune.packing's block-diagonal mask)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.finetune.config import load_config
from llmft.finetune.data import TextRecord
from llmft.finetune.packing import PackedCollator, pack_samples
from llmft.finetune.sft import run_sft
from llmft.finetune.text_lm import encode_texts

DOCUMENTS = [
    "The heron stood still in the shallow water, waiting for a fish.",
    "Granite forms when magma cools slowly deep below the surface.",
    "A sourdough starter is a culture of wild yeast and bacteria.",
    "Tides rise and fall twice a day because of the moon's pull.",
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model_dir)


def test_every_token_carries_loss_and_each_document_ends_with_eos(tokenizer):
    records = [TextRecord(text, f"d.jsonl:{i}") for i, text in enumerate(DOCUMENTS, 1)]
    examples, report = encode_texts(records, tokenizer, 512, "training data")
    assert len(examples) == 4 and report.split_texts == 0
    for example, text in zip(examples, DOCUMENTS, strict=True):
        assert example["labels"] == example["input_ids"]
        assert example["input_ids"][-1] == tokenizer.eos_token_id
        assert text in tokenizer.decode(example["input_ids"])


def test_a_text_longer_than_max_seq_length_is_cut_into_pieces_not_dropped(tokenizer):
    long = " ".join(DOCUMENTS * 5)
    examples, report = encode_texts([TextRecord(long, "d.jsonl:7")], tokenizer, 32, "training data")
    assert report.split_texts == 1 and report.first_split == ["d.jsonl:7"]
    assert all(len(e["input_ids"]) <= 32 for e in examples)
    assert [t for e in examples for t in e["input_ids"]] == tokenizer(long)["input_ids"] + [tokenizer.eos_token_id]


def test_packed_documents_do_not_see_each_other(tiny_model_dir, tokenizer):
    """The loss of each document in a packed row equals its loss alone (no attention, no label across)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    records = [TextRecord(text, f"d:{i}") for i, text in enumerate(DOCUMENTS)]
    examples, _ = encode_texts(records, tokenizer, 512, "training data")
    (row,) = pack_samples(examples, 512)
    batch = PackedCollator("sdpa", tokenizer.pad_token_id or 0)([row])
    with torch.no_grad():
        packed_logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[0]
    start = 0
    for length in row["seq_lengths"]:
        ids = row["input_ids"][start : start + length]
        with torch.no_grad():
            alone = model(input_ids=torch.tensor([ids])).logits[0]
        assert torch.allclose(packed_logits[start : start + length], alone, atol=1e-4)
        assert batch["labels"][0, start].item() == -100  # no target predicted across the boundary
        start += length


@pytest.mark.slow
def test_text_task_trains_a_causal_lm_from_a_mapped_text_column(tiny_model_dir, tmp_path):
    import datasets

    data = tmp_path / "corpus.parquet"
    datasets.Dataset.from_list([{"body": text, "source": "wiki"} for text in DOCUMENTS * 6]).to_parquet(str(data))
    out = tmp_path / "out"
    config = {
        "method": "sft",
        "task": "text",
        "data_conf": {
            "training_data": {
                "datasets": [{"path": str(data), "split": "train[:90%]", "column_map": {"text": "body"}}]
            },
            "validation_data": {
                "type": "CONCATENATION",
                "datasets": [{"path": str(data), "split": "train[90%:]", "column_map": {"text": "body"}}],
            },
        },
        "training_args": {
            "output_dir": str(out),
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "max_steps": 6,
            "logging_steps": 2,
            "eval_strategy": "steps",
            "eval_steps": 6,
            "save_steps": 6,
        },
        "batchsize_conf": {"total_train_batch_size": 2, "max_per_device_train_batch_size": 2},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(tiny_model_dir)},
        "sft_args": {"max_seq_length": 128, "packing": True},
    }
    assert run_sft(load_config(config)) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["chat_template"] == "none"
    assert summary["data"]["training"]["texts"] == 22 and summary["data"]["validation"]["texts"] == 2
    assert summary["final_train_loss"] < summary["first_train_loss"]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("eval_loss" in row for row in rows)
    assert (Path(out) / "checkpoint-final" / "config.json").is_file()
