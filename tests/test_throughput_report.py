"""The throughput report in summary.json: effective (non-padding) tokens equal the real tokens of the
training batches, the padding fraction is consistent and packing lowers it on skewed lengths, the FLOPs
formula matches a hand count of the tiny model, MFU uses the device's peak, peak memory is recorded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from test_sft import sft_config

from llmft.finetune import throughput
from llmft.finetune.config import load_config
from llmft.finetune.sft import run_sft

# Skewed lengths: most answers are short, a few are long, so unpacked batches are mostly padding.
SKEWED = [(f"Question {i}?", "Yes." if i % 4 else " ".join(["long answer words"] * 20)) for i in range(12)]


def write_skewed(path: Path, pairs=SKEWED) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in pairs]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def sample_lengths(model_dir: Path, pairs) -> list[int]:
    """Token counts of each sample as the engine encodes it (an independent count of the real tokens)."""
    from llmft.finetune import data
    from llmft.finetune import model as modeling

    tokenizer = modeling.load_tokenizer(model_dir)
    setup = modeling.prepare_tokenizer(tokenizer, "keep-original", "bos-repurpose")
    return [
        len(
            data.encode(
                tokenizer,
                setup.chat_format,
                [{"role": "user", "content": q}, {"role": "assistant", "content": a}],
                True,
            )["input_ids"]
        )
        for q, a in pairs
    ]


@pytest.mark.slow
def test_effective_tokens_padding_and_mfu_unpacked_and_packed(tiny_model_dir, tmp_path, monkeypatch):
    dataset = write_skewed(tmp_path / "train.jsonl")
    validation = write_skewed(tmp_path / "val.jsonl", SKEWED[:3])
    expected = 2 * sum(sample_lengths(tiny_model_dir, SKEWED))  # two epochs over every training sample
    summaries = {}
    # Unpacked: 3 steps per epoch, stopped mid-way through the second epoch (the data loader has then
    # collated a batch that is never trained). Packed: two whole epochs.
    for name, packing, max_steps in (("unpacked", False, 5), ("packed", True, -1)):
        if packing:
            monkeypatch.setenv(throughput.PEAK_FLOPS_ENV, "1e12")
        config = sft_config(
            tmp_path / name,
            str(tiny_model_dir),
            str(dataset),
            data_conf={"validation_data": {"type": "CONCATENATION", "datasets": [{"path": str(validation)}]}},
            training_args={
                "max_steps": max_steps,
                "num_train_epochs": 2,
                "save_strategy": "no",
                "eval_strategy": "epoch",
                "logging_steps": 1,
            },
            batchsize_conf={"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
            sft_args={"max_seq_length": 256, "packing": packing},
        )
        assert run_sft(load_config(config)) == 0
        summaries[name] = json.loads((tmp_path / name / "summary.json").read_text())

    unpacked, packed = summaries["unpacked"]["throughput"], summaries["packed"]["throughput"]
    # Real tokens of the batches trained on, and only those: no evaluation batch, no batch collated ahead.
    assert packed["effective_tokens"] == expected  # every training sample twice, counted by hand
    assert unpacked["effective_tokens"] == summaries["unpacked"]["tokens_seen"] < expected  # = the Trainer's count
    assert unpacked["rows"] == 5 * 4 and summaries["unpacked"]["steps"] == 5
    for summary in summaries.values():
        report = summary["throughput"]
        effective = report["effective_tokens"]
        slots = report["effective_tokens"] + report["padding_tokens"]
        assert 0 <= report["padding_fraction"] < 1
        assert report["padding_fraction"] == pytest.approx(report["padding_tokens"] / slots, abs=1e-6)
        assert report["mean_sequence_length"] == pytest.approx(slots / report["rows"], abs=1e-3)
        assert report["effective_tokens_per_second"] == pytest.approx(effective / summary["runtime_seconds"], rel=0.01)
        assert report["model_flops"] == pytest.approx(report["flops_per_token"] * effective)
        assert report["peak_memory"]["cpu_rss_peak_bytes"] > 50 * 2**20
        assert report["peak_memory"]["cuda_max_allocated_bytes"] is None and report["device"] == "cpu"
    assert unpacked["padding_fraction"] > 0.3
    assert packed["padding_fraction"] < unpacked["padding_fraction"] / 2
    assert packed["rows"] < unpacked["rows"]
    # MFU: none without a known peak on the CPU; with LLMFT_PEAK_FLOPS it is FLOPs / (time x peak).
    assert unpacked["mfu"] is None and unpacked["peak_flops_per_device"] is None
    assert any("LLMFT_PEAK_FLOPS" in note for note in unpacked["notes"])
    assert packed["peak_flops_per_device"] == 1e12 and packed["peak_flops_source"] == "LLMFT_PEAK_FLOPS"
    assert packed["mfu"] == pytest.approx(
        packed["model_flops"] / (summaries["packed"]["runtime_seconds"] * 1e12), rel=0.01
    )


def tiny_counts(tiny_model_dir: Path) -> dict:
    """Linear-layer weights of the tiny model, counted by hand from its config.json."""
    cfg = json.loads((tiny_model_dir / "config.json").read_text())
    h, i, n, kv, vocab = (
        cfg["hidden_size"],
        cfg["intermediate_size"],
        cfg["num_attention_heads"],
        cfg["num_key_value_heads"],
        cfg["vocab_size"],
    )
    d = h // n
    per_layer = {
        "q_proj": (h, n * d),
        "k_proj": (h, kv * d),
        "v_proj": (h, kv * d),
        "o_proj": (n * d, h),
        "gate_proj": (h, i),
        "up_proj": (h, i),
        "down_proj": (i, h),
    }
    layers = cfg["num_hidden_layers"]
    linear = layers * sum(a * b for a, b in per_layer.values()) + h * vocab
    return {"linear": linear, "layers": layers, "width": n * d, "per_layer": per_layer}


def test_flops_per_token_matches_a_hand_count_for_full_and_lora(tiny_model_dir):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    counts = tiny_counts(tiny_model_dir)
    N, L, w, s = counts["linear"], counts["layers"], counts["width"], 37.5
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shape = throughput.model_shape(model)
    assert (shape.linear, shape.trainable, shape.layers, shape.attention_width) == (N, N, L, w)
    attention = 4 * L * s * w
    assert throughput.flops_per_token(shape, s) == pytest.approx(6 * N + 3 * attention)
    assert throughput.flops_per_token(shape, s, reference_forward=True) == pytest.approx(8 * N + 4 * attention)

    r = 4
    lora = get_peft_model(model, LoraConfig(r=r, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"))
    n_lora = L * sum(r * (a + b) for a, b in counts["per_layer"].values())  # lm_head is not adapted
    shape = throughput.model_shape(lora)
    assert (shape.linear, shape.trainable, shape.base) == (N + n_lora, n_lora, N)
    # Frozen weights need only activation gradients (4 N), LoRA's train in full (6 N_lora).
    assert throughput.flops_per_token(shape, s) == pytest.approx(4 * N + 6 * n_lora + 3 * attention)
    # A DPO reference forward is the base model with the adapter disabled: 2 N more.
    assert throughput.flops_per_token(shape, s, reference_forward=True) == pytest.approx(
        6 * N + 6 * n_lora + 4 * attention
    )


@pytest.mark.parametrize(
    "name, peak",
    [
        ("NVIDIA H100 80GB HBM3", 989e12),
        ("NVIDIA H100 PCIe", 756e12),
        ("NVIDIA H100 NVL", 835e12),
        ("NVIDIA H200", 989e12),
        ("NVIDIA A100-SXM4-80GB", 312e12),
        ("NVIDIA A100 80GB PCIe", 312e12),
        ("NVIDIA L40S", 362e12),
        ("AMD Instinct MI300X", 1307e12),
        ("NVIDIA GeForce RTX 3090", None),
        ("cpu", None),
    ],
)
def test_peak_flops_table(name, peak):
    assert throughput.peak_flops_for(name) == peak


def test_token_counts_for_every_batch_layout():
    counts = throughput.TokenCounts()
    # Padded batch with a 2D attention mask (unpacked SFT, DPO): real tokens = the mask's sum.
    counts.collated(
        {
            "input_ids": torch.zeros(2, 5, dtype=torch.long),
            "attention_mask": torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]),
        },
        [{}, {}],
    )
    # Packed rows padded by the collator (4D block mask): real tokens = the rows' own lengths.
    counts.collated(
        {"input_ids": torch.zeros(2, 6, dtype=torch.long), "attention_mask": torch.ones(2, 1, 6, 6)},
        [{"input_ids": [1] * 6}, {"input_ids": [1] * 2}],
    )
    # Variable-length (padding-free) packing: every position is real.
    counts.collated(
        {"input_ids": torch.zeros(1, 7, dtype=torch.long), "cu_seq_lens_q": torch.tensor([0, 3, 7])},
        [{"input_ids": [1] * 3}, {"input_ids": [1] * 4}],
    )
    assert (counts.effective, counts.slots, counts.batches) == (0, 0, 0)  # collated is not trained
    counts.consume()
    assert (counts.effective, counts.slots, counts.rows) == (8, 10, 2)
    counts.consume()
    assert (counts.effective, counts.slots, counts.rows) == (16, 22, 4)
    counts.consume()
    assert (counts.effective, counts.slots, counts.rows, counts.batches) == (23, 29, 6, 3)
    counts.consume()  # nothing queued (e.g. collated in dataloader workers): nothing counted
    assert counts.batches == 3
