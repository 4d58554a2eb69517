"""SFT end to end on the CPU with the tiny model: full-parameter and LoRA runs learn fixed answers,
write the documented outputs, resume to the same weights, and read model and data from the bucket."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from llmft.cli import main
from llmft.finetune.config import load_config
from llmft.finetune.outputs import adapter_is_lora_only, complete_checkpoints
from llmft.finetune.sft import run_sft

pytestmark = pytest.mark.slow

QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
]


def write_data(path: Path, pairs=QA, repeat: int = 4) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows * repeat))
    return path


def sft_config(output_dir: Path, model: str, dataset: str, peft: str = "NO_PEFT", **sections) -> dict:
    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": dataset}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(output_dir),
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "max_steps": 30,
            "logging_steps": 5,
            "save_steps": 15,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 6, "max_per_device_train_batch_size": 6},
        "peft_conf": {"peft_type": "NO_PEFT"}
        if peft == "NO_PEFT"
        else {"peft_type": "LORA", "peft_kwargs": {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0}},
        "run_conf": {"model": model, "resume_from_checkpoint": "auto"},
        "sft_args": {"max_seq_length": 256},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def answer(model_dir: Path, question: str) -> str:
    """Greedy generation from a saved model folder, as a server would do it (stops at the eos ids)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    inputs = tokenizer.apply_chat_template(
        [{"role": "user", "content": question}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    output = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1] :])


def eos_ids(folder: Path) -> list[int]:
    ids = json.loads((folder / "generation_config.json").read_text())["eos_token_id"]
    return [ids] if isinstance(ids, int) else ids


def token_id(folder: Path, token: str) -> int:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(folder).convert_tokens_to_ids(token)


def test_full_parameter_sft_learns_answers_and_writes_the_outputs(tiny_model_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="llmft")
    out = tmp_path / "out"
    dataset = write_data(tmp_path / "train.jsonl")
    assert run_sft(load_config(sft_config(out, str(tiny_model_dir), str(dataset)))) == 0

    for question, expected in QA:
        assert answer(out / "checkpoint-final", question) == expected + "</s>"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "complete" and summary["training"] == "full"
    assert summary["steps"] == 30 and summary["serve"] == "checkpoint-final"
    assert summary["final_train_loss"] < summary["first_train_loss"] / 4
    assert summary["tokens_seen"] > 0 and summary["tokens_per_second"] > 0
    assert summary["data"]["training"]["kept"] == 12 and summary["data"]["training"]["left_out_too_long"] == 0
    assert summary["config"]["training_args"]["max_steps"] == 30

    # Layout: resumable checkpoints, the final model, metrics; no adapter for full training.
    assert [step for step, _ in complete_checkpoints(out)] == [15, 30]
    assert not (out / "checkpoint-final-adapter").exists()
    for folder in (out / "checkpoint-15", out / "checkpoint-final"):
        assert (folder / "tokenizer_config.json").is_file() and (folder / "chat_template.jinja").is_file()
        assert token_id(folder, "</s>") in eos_ids(folder)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [5, 10, 15, 20, 25, 30]
    assert {"step", "epoch", "loss", "learning_rate", "grad_norm", "tokens_seen", "tokens_per_second"} <= set(rows[0])
    assert rows[-1]["tokens_seen"] == summary["tokens_seen"]
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step ")]
    assert len(progress) == 6 and progress[1].startswith("step 10/30 (33%), loss ")
    assert "tokens/s" in progress[1] and "ETA" in progress[1]

    # A finished run is not repeated: `auto` sees summary.json and exits at once.
    assert run_sft(load_config(sft_config(out, str(tiny_model_dir), str(dataset)))) == 0
    assert json.loads((out / "summary.json").read_text())["runtime_seconds"] == summary["runtime_seconds"]


def test_lora_with_new_template_tokens_trains_them_and_serves_the_merged_model(tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    dataset = write_data(tmp_path / "train.jsonl", repeat=5)
    config = sft_config(
        out,
        str(tiny_model_dir),
        str(dataset),
        peft="LORA",
        data_conf={"chat_template_name": "chat-ml", "validation_data": {"type": "AUTO_SPLIT", "ratio": 0.2}},
        training_args={"eval_strategy": "steps", "eval_steps": 15, "report_to": ["tensorboard"]},
        run_conf={"merge_adapter": True},
    )
    assert run_sft(load_config(config)) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["training"] == "lora" and summary["resized_embeddings"] is True
    assert summary["added_tokens"] == ["<|im_start|>", "<|im_end|>"]
    assert summary["outputs"] == {
        "final_model": "checkpoint-final",
        "adapter": "checkpoint-final-adapter",
        "merged": True,
    }
    # The adapter carries the resized embedding and output layers, so it cannot be served alone.
    assert summary["adapter_servable_alone"] is False and "serve the merged model" in summary["notes"][0]
    assert not adapter_is_lora_only(out / "checkpoint-final-adapter")
    assert summary["final_eval_loss"] is not None and summary["data"]["validation"]["kept"] == 3
    for question, expected in QA:
        assert answer(out / "checkpoint-final", question) == expected + "<|im_end|>"
    for folder in (out / "checkpoint-15", out / "checkpoint-final", out / "checkpoint-final-adapter"):
        assert token_id(folder, "<|im_end|>") in eos_ids(folder), folder
        assert "<|im_start|>" in (folder / "chat_template.jinja").read_text()
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows if "eval_loss" in row] == [15, 30]
    assert list((out / "logs").glob("events.out.tfevents.*"))


def _adapter_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_resume_after_a_crash_ends_with_the_same_weights(tiny_model_dir, tmp_path):
    from transformers import TrainerCallback

    dataset = write_data(tmp_path / "train.jsonl", QA + [(f"Say the number {i}.", f"{i}") for i in range(9)], repeat=1)

    def config(out):
        return load_config(
            sft_config(
                out,
                str(tiny_model_dir),
                str(dataset),
                peft="LORA",
                training_args={
                    "max_steps": 6,
                    "save_steps": 3,
                    "logging_steps": 1,
                    "learning_rate": 5e-3,
                    "lr_scheduler_type": "linear",
                    "warmup_steps": 2,
                },
                batchsize_conf={"total_train_batch_size": 4, "max_per_device_train_batch_size": 2},
            )
        )

    class Crash(TrainerCallback):
        """Stands in for a killed pod: fails right after checkpoint-3 is written."""

        def on_save(self, args, state, control, **kwargs):
            if state.global_step == 3:
                raise RuntimeError("simulated crash")

    uninterrupted = tmp_path / "uninterrupted"
    assert run_sft(config(uninterrupted)) == 0

    resumed = tmp_path / "resumed"
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_sft(config(resumed), callbacks=[Crash()])
    assert [step for step, _ in complete_checkpoints(resumed)] == [3]
    assert not (resumed / "summary.json").exists()
    assert run_sft(config(resumed)) == 0

    summary = json.loads((resumed / "summary.json").read_text())
    assert summary["resumed_from"].endswith("checkpoint-3") and summary["steps"] == 6
    expected, got = (
        _adapter_weights(uninterrupted / "checkpoint-final-adapter"),
        _adapter_weights(resumed / "checkpoint-final-adapter"),
    )
    assert expected.keys() == got.keys() and expected
    for name in expected:
        assert torch.allclose(expected[name], got[name], atol=1e-6), name
    # An adapter without new tokens is pure LoRA: servable on the base model as is.
    assert summary["adapter_servable_alone"] is True and not (resumed / "checkpoint-final").exists()
    assert adapter_is_lora_only(resumed / "checkpoint-final-adapter")
    steps = [json.loads(line)["step"] for line in (resumed / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_model_and_data_from_the_bucket(tiny_model_dir, bucket, tmp_path, monkeypatch):
    from llmft.storage import upload_file, upload_tree
    from llmft.storage.location import parse_location

    monkeypatch.setenv("LLMFT_CACHE_DIR", str(tmp_path / "cache"))
    upload_tree(tiny_model_dir, parse_location(f"{bucket}/models/tiny"))
    upload_file(write_data(tmp_path / "train.jsonl"), parse_location(f"{bucket}/datasets/train.jsonl"))
    out = tmp_path / "out"
    config = sft_config(
        out,
        f"{bucket}/models/tiny",
        f"s3://{bucket}/datasets/train.jsonl",
        training_args={"max_steps": 2, "save_steps": 2, "logging_steps": 1},
    )
    assert run_sft(load_config(config)) == 0
    assert json.loads((out / "summary.json").read_text())["steps"] == 2
    assert (out / "checkpoint-final" / "model.safetensors").is_file()
    assert (tmp_path / "cache" / "models" / bucket / "models" / "tiny" / "config.json").is_file()


def test_missing_bucket_model_fails_before_training(bucket, tmp_path):
    dataset = write_data(tmp_path / "train.jsonl")
    config = load_config(sft_config(tmp_path / "out", f"{bucket}/models/absent", str(dataset)))
    from llmft.errors import UserError

    with pytest.raises(UserError, match=f"finetuning_config.run_conf.model: no complete folder at s3://{bucket}/"):
        run_sft(config)


def test_cli_reports_config_problems_and_checks(tmp_path, capsys, tiny_model_dir):
    import yaml

    dataset = write_data(tmp_path / "train.jsonl")
    good = sft_config(tmp_path / "out", str(tiny_model_dir), str(dataset))
    (tmp_path / "good.yaml").write_text(yaml.safe_dump(good))
    assert main(["sft", "--check", str(tmp_path / "good.yaml")]) == 0
    bad = json.loads(json.dumps(good))
    bad["peft_conf"] = {"peft_type": "LORA", "peft_kwargs": {"r": "eight"}}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(bad))
    assert main(["sft", str(tmp_path / "bad.yaml")]) == 2
    assert (
        'finetuning_config.peft_conf.peft_kwargs.r: must be a positive integer, got "eight"' in capsys.readouterr().err
    )
