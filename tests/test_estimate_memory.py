"""`llmft estimate-memory`: the arithmetic of per-GPU memory, checked against known cases and real models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmft.cli import main as cli_main
from llmft.errors import UserError
from llmft.finetune import memory
from llmft.finetune.memory import ModelShape, estimate, model_states

REPO = Path(__file__).resolve().parents[1]
P = 7_000_000_000


def per_param(states: dict, params: int = P) -> float:
    return sum(states.values()) / params


def test_full_fine_tuning_mixed_precision_adamw_is_16_bytes_per_parameter():
    states = model_states(P, P, "single", 1, "bf16")
    assert states == {"weights": 2 * P, "gradients": 2 * P, "master_weights": 4 * P, "optimizer_states": 8 * P}
    assert per_param(states) == 16
    # fp32: no separate master copy, still 4 + 4 + 8
    assert per_param(model_states(P, P, "single", 1, "fp32")) == 16
    # DDP replicates everything
    assert model_states(P, P, "ddp", 8, "bf16") == states


@pytest.mark.parametrize(
    "preset, bytes_per_param",
    [
        ("zero1", 2 + 2 + 12 / 8),  # optimizer states (master + Adam) sharded
        ("zero2", 2 + (2 + 12) / 8),  # + gradients
        ("zero3", 16 / 8),  # + weights: all three divided
        ("fsdp", 16 / 8),
        ("auto-deepspeed-stage3", 16 / 8),  # the chart's preset names work too
    ],
)
def test_sharding_divides_the_right_states(preset, bytes_per_param):
    assert per_param(model_states(P, P, preset, 8, "bf16")) == pytest.approx(bytes_per_param)


def test_zero3_over_8_gpus_divides_all_three():
    single = model_states(P, P, "single", 1, "bf16")
    sharded = model_states(P, P, "zero3", 8, "bf16")
    for key in single:
        assert sharded[key] == single[key] / 8


def test_lora_trains_only_the_adapter():
    trainable = 40_000_000
    states = model_states(P + trainable, trainable, "single", 1, "bf16")
    assert states["weights"] == 2 * (P + trainable)  # the frozen base is still held
    assert states["gradients"] == 2 * trainable
    assert states["master_weights"] == 4 * trainable and states["optimizer_states"] == 8 * trainable
    assert model_states(P + trainable, trainable, "zero3", 4, "bf16")["weights"] == 2 * (P + trainable) / 4


def test_exact_parameter_and_lora_counts_match_the_real_model_and_peft(tiny_model_dir):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = memory.load_shape(str(tiny_model_dir))
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert shape.params == model.num_parameters()
    peft_model = get_peft_model(
        model, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM")
    )
    trainable, total = peft_model.get_nb_trainable_parameters()
    assert shape.lora_params(8) == trainable
    result = estimate(shape, method="lora", lora_rank=8)
    assert result.params == total and result.trainable == trainable


def test_reference_models_have_the_published_sizes():
    assert memory.load_shape("llama-8b").params == 8_030_261_248  # Llama 3.1 8B
    assert memory.load_shape("llama-8b").lora_params(16) == 41_943_040  # r=16 on all linear layers
    assert memory.load_shape("llama-1b").params == 1_235_814_400  # Llama 3.2 1B (tied embeddings)
    assert round(memory.load_shape("llama-70b").params / 1e9, 1) == 70.6


def test_activation_formula_arithmetic():
    shape = ModelShape(params=1, layers=2, hidden=64, kv_width=32, intermediate=128, vocab=512)
    tokens = 3 * 100
    per_layer = (6 * 64 + 2 * 32 + 4 * 128) * tokens * 2
    logits = tokens * 512 * (2 + 8)
    assert memory.activation_bytes(shape, 3, 100, "bf16") == 2 * per_layer + logits
    checkpointed = 2 * 64 * tokens * 2 + per_layer + logits
    assert memory.activation_bytes(shape, 3, 100, "bf16", gradient_checkpointing=True) == checkpointed


def test_activation_estimate_is_close_to_what_autograd_saves():
    """The activation term against the tensors autograd really keeps for backward (CPU, fp32)."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig

    config = LlamaConfig(
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        vocab_size=128,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").train()
    parameters = {p.data_ptr() for p in model.parameters()}
    saved = {}

    def keep(tensor):
        if tensor.data_ptr() not in parameters:
            saved[(tensor.data_ptr(), tensor.dtype, tuple(tensor.shape), tensor.stride())] = (
                tensor.numel() * tensor.element_size()
            )
        return tensor

    ids = torch.randint(3, 120, (2, 256))
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor):
        model(input_ids=ids, labels=ids, use_cache=False)
    measured = sum(saved.values())
    estimated = memory.activation_bytes(memory.shape_from_config(config), 2, 256, "fp32")
    assert 0.7 * measured < estimated < 1.3 * measured


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(preset="single", gpus=8), "--preset single runs one process"),
        (dict(preset="zero4", gpus=8), "--preset: unknown 'zero4'"),
        (dict(method="lora"), "LoRA estimates need the model's layer shapes"),
        (dict(dtype="int8"), "--dtype: one of"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, message):
    with pytest.raises(UserError, match=message):
        estimate(ModelShape(params=P), **kwargs)


def test_cli_json_and_text(tiny_model_dir, capsys):
    assert cli_main(["estimate-memory", "--params", "7e9", "--preset", "zero3", "--gpus", "8", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["total"] == pytest.approx(16 * P / 8) and result["activations"] is None
    assert (
        cli_main(
            [
                "estimate-memory",
                "--model",
                str(tiny_model_dir),
                "--method",
                "lora",
                "--lora-rank",
                "4",
                "--batch-size",
                "2",
                "--seq-len",
                "128",
            ]
        )
        == 0
    )
    text = capsys.readouterr().out
    assert "activations" in text and "total per GPU" in text and "GiB" in text
    assert cli_main(["estimate-memory", "--model", "/nonexistent/model"]) == 2
    assert "neither a folder with config.json" in capsys.readouterr().err


def test_docs_table_is_the_commands_output():
    docs = (REPO / "docs" / "distributed-training.md").read_text()
    assert memory.markdown_table() in docs, "regenerate with: llmft estimate-memory --table --gpus 8"
