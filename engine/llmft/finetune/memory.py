"""Per-GPU memory estimate for fine-tuning: weights, gradients, optimizer, activations.

The model states follow the ZeRO paper's accounting (Rajbhandari et al., 2020)
for AdamW. With P parameters of which T are trained, weights stored in dtype d
(b_d bytes per value) and N processes:

    weights            P * b_d           / N  if weights are sharded (ZeRO-3, FSDP)
    gradients          T * b_d           / N  if gradients are sharded (ZeRO-2, ZeRO-3, FSDP)
    master weights     T * 4 (16-bit d)  / N  if optimizer states are sharded (ZeRO-1/2/3, FSDP)
    optimizer states   T * 8 (Adam m, v) / N  if optimizer states are sharded

so full fine-tuning costs 2 + 2 + 4 + 8 = 16 bytes per parameter in 16-bit
mixed precision (and 4 + 4 + 8 = 16 in fp32) before sharding. With LoRA only the
adapter (T << P) carries gradients and optimizer states; the frozen base still
costs P * b_d (sharded only under ZeRO-3/FSDP).

Activations (not sharded: each process holds its own micro-batch of b
sequences of s tokens), for a decoder with L layers, hidden size h, key/value
width h_kv, gated-MLP width I, vocabulary V, with fused/flash attention (no
s x s score matrix stored):

    per layer, per token   6h + 2h_kv + 4I values (norm inputs/outputs, q/k/v,
                            attention output, gate/up/activation/product)
    all layers             L * s * b * (6h + 2h_kv + 4I) * b_d
    with gradient checkpointing: L * s * b * h * b_d (layer inputs) plus one
                            layer recomputed: s * b * (6h + 2h_kv + 4I) * b_d
    logits and loss        s * b * V * (b_d + 8)  (logits, fp32 upcast, log-softmax)

Not included: the CUDA context (~0.5-1 GiB), allocator fragmentation,
communication buckets (DDP, ZeRO) and ZeRO-3/FSDP's gathered-layer buffers.
Treat the activation term as an order-of-magnitude estimate; the model-state
terms are exact for the stated layout.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmft.errors import UserError

GIB = 1024**3
DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}

# Which model states are divided by the number of processes: (weights, gradients, optimizer states).
SHARDING = {
    "single": (False, False, False),
    "ddp": (False, False, False),
    "zero1": (False, False, True),
    "zero2": (False, True, True),
    "zero3": (True, True, True),
    "fsdp": (True, True, True),
}
PRESET_NAMES = {
    "auto-single-process": "single",
    "auto-ddp": "ddp",
    "auto-deepspeed-stage1": "zero1",
    "auto-deepspeed-stage2": "zero2",
    "auto-deepspeed-stage3": "zero3",
    "auto-fsdp": "fsdp",
}

# Reference shapes (public Llama 3.x configs) for the docs table and quick estimates: --model llama-8b.
REFERENCE_MODELS: dict[str, dict[str, Any]] = {
    "llama-1b": dict(
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=True,
    ),
    "llama-8b": dict(
        hidden_size=4096,
        intermediate_size=14336,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
    "llama-70b": dict(
        hidden_size=8192,
        intermediate_size=28672,
        num_hidden_layers=80,
        num_attention_heads=64,
        num_key_value_heads=8,
        vocab_size=128256,
        tie_word_embeddings=False,
    ),
}


@dataclass(frozen=True)
class ModelShape:
    """What the estimate needs to know about a model; None where only a parameter count is known."""

    params: int
    layers: int | None = None
    hidden: int | None = None
    kv_width: int | None = None
    intermediate: int | None = None
    vocab: int | None = None
    lora_linear_dims: tuple[tuple[int, int], ...] | None = None  # (in, out) of every all-linear target
    name: str = ""

    def lora_params(self, rank: int) -> int:
        """Trainable LoRA parameters at `rank` on every linear layer except the output head (PEFT all-linear)."""
        if self.lora_linear_dims is None:
            raise UserError(
                "LoRA estimates need the model's layer shapes: give --model PATH (a folder with "
                "config.json) or a reference model (" + ", ".join(REFERENCE_MODELS) + ")"
            )
        return sum(rank * (fan_in + fan_out) for fan_in, fan_out in self.lora_linear_dims)


def shape_from_config(config, name: str = "") -> ModelShape:
    """Exact parameter count and linear-layer shapes: the model is built on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    params = sum(p.numel() for p in model.parameters())
    output = model.get_output_embeddings()
    dims = tuple(
        (m.in_features, m.out_features) for m in model.modules() if isinstance(m, torch.nn.Linear) and m is not output
    )
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    head_dim = getattr(text, "head_dim", None) or (hidden // heads if hidden and heads else None)
    kv_heads = getattr(text, "num_key_value_heads", None) or heads
    return ModelShape(
        params=params,
        layers=getattr(text, "num_hidden_layers", None),
        hidden=hidden,
        kv_width=kv_heads * head_dim if kv_heads and head_dim else None,
        intermediate=getattr(text, "intermediate_size", None),
        vocab=getattr(text, "vocab_size", None),
        lora_linear_dims=dims,
        name=name,
    )


@functools.lru_cache(maxsize=16)
def load_shape(model: str) -> ModelShape:
    """A reference model name, or a local folder (or config.json) of a Hugging Face causal LM."""
    from transformers import AutoConfig, LlamaConfig

    if model in REFERENCE_MODELS:
        return shape_from_config(LlamaConfig(**REFERENCE_MODELS[model]), name=model)
    path = Path(model).expanduser()
    folder = path.parent if path.name == "config.json" else path
    if not (folder / "config.json").is_file():
        raise UserError(
            f"--model: {model} is neither a folder with config.json nor one of {', '.join(REFERENCE_MODELS)}"
        )
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (ValueError, OSError, json.JSONDecodeError) as error:
        raise UserError(f"--model: cannot read {folder / 'config.json'}: {error}") from None
    return shape_from_config(config, name=str(folder))


@dataclass(frozen=True)
class Estimate:
    """Bytes per GPU, by component."""

    preset: str
    gpus: int
    params: int
    trainable: int
    weights: float
    gradients: float
    master_weights: float
    optimizer_states: float
    activations: float | None

    @property
    def model_states(self) -> float:
        return self.weights + self.gradients + self.master_weights + self.optimizer_states

    @property
    def total(self) -> float:
        return self.model_states + (self.activations or 0.0)

    def as_dict(self) -> dict:
        data = asdict(self)
        data.update(model_states=self.model_states, total=self.total)
        return data


def normalise_preset(preset: str) -> str:
    name = PRESET_NAMES.get(preset, preset)
    if name not in SHARDING:
        raise UserError(
            f"--preset: unknown {preset!r}; one of {', '.join(SHARDING)} (or the chart names {', '.join(PRESET_NAMES)})"
        )
    return name


def model_states(params: int, trainable: int, preset: str, gpus: int, dtype: str) -> dict:
    """Bytes per GPU for weights, gradients, master weights and Adam states (see the module docstring)."""
    preset = normalise_preset(preset)
    if dtype not in DTYPE_BYTES:
        raise UserError(f"--dtype: one of {', '.join(DTYPE_BYTES)}, got {dtype!r}")
    if gpus < 1:
        raise UserError(f"--gpus: must be a positive integer, got {gpus}")
    if preset == "single" and gpus != 1:
        raise UserError(f"--preset single runs one process; use ddp, zero1/2/3 or fsdp for {gpus} GPUs")
    width = DTYPE_BYTES[dtype]
    shard_weights, shard_grads, shard_optimizer = SHARDING[preset]
    frozen = params - trainable
    weights = (frozen + trainable) * width
    gradients = trainable * width
    master = trainable * 4 if width < 4 else 0
    optimizer = trainable * 8
    return {
        "weights": weights / gpus if shard_weights else weights,
        "gradients": gradients / gpus if shard_grads else gradients,
        "master_weights": master / gpus if shard_optimizer else master,
        "optimizer_states": optimizer / gpus if shard_optimizer else optimizer,
    }


def activation_bytes(
    shape: ModelShape, batch_size: int, seq_len: int, dtype: str, gradient_checkpointing: bool = False
) -> float:
    """Activation memory of one micro-batch (see the module docstring for the formula)."""
    layers, hidden, kv_width, intermediate, vocab = (
        shape.layers,
        shape.hidden,
        shape.kv_width,
        shape.intermediate,
        shape.vocab,
    )
    if layers is None or hidden is None or kv_width is None or intermediate is None or vocab is None:
        raise UserError("activation estimates need the model's shape: give --model PATH or a reference model")
    width = DTYPE_BYTES[dtype]
    tokens = batch_size * seq_len
    per_layer = (6 * hidden + 2 * kv_width + 4 * intermediate) * tokens * width
    if gradient_checkpointing:
        all_layers = layers * hidden * tokens * width + per_layer
    else:
        all_layers = layers * per_layer
    logits = tokens * vocab * (width + 8)
    return float(all_layers + logits)


def estimate(
    shape: ModelShape,
    *,
    method: str = "full",
    lora_rank: int = 16,
    preset: str = "single",
    gpus: int = 1,
    dtype: str = "bf16",
    batch_size: int = 1,
    seq_len: int = 2048,
    gradient_checkpointing: bool = False,
) -> Estimate:
    """The per-GPU estimate for one configuration."""
    if method not in ("full", "lora"):
        raise UserError(f"--method: full or lora, got {method!r}")
    if method == "lora" and lora_rank < 1:
        raise UserError(f"--lora-rank: must be a positive integer, got {lora_rank}")
    lora = shape.lora_params(lora_rank) if method == "lora" else 0
    params = shape.params + lora
    trainable = lora if method == "lora" else shape.params
    states = model_states(params, trainable, preset, gpus, dtype)
    activations = None
    if shape.layers is not None:
        activations = activation_bytes(shape, batch_size, seq_len, dtype, gradient_checkpointing)
    return Estimate(
        preset=normalise_preset(preset),
        gpus=gpus,
        params=params,
        trainable=trainable,
        activations=activations,
        **states,
    )


def format_estimate(result: Estimate, shape: ModelShape, dtype: str) -> str:
    """A readable breakdown in GiB."""

    def gib(value):
        return "n/a (give --model)" if value is None else f"{value / GIB:9.2f} GiB"

    lines = [
        f"model: {shape.name or 'given parameter count'}; {result.params / 1e9:.3g}B parameters, "
        f"{result.trainable / 1e6:.4g}M trained; dtype {dtype}; preset {result.preset} on {result.gpus} GPU(s)",
        f"  weights           {gib(result.weights)}",
        f"  gradients         {gib(result.gradients)}",
        f"  master weights    {gib(result.master_weights)}",
        f"  optimizer states  {gib(result.optimizer_states)}",
        f"  activations       {gib(result.activations)}",
        f"  total per GPU     {gib(result.total)}",
        "  (excludes CUDA context, fragmentation and communication buffers; see docs/distributed-training.md)",
    ]
    return "\n".join(lines)


def presets_that_fit(
    shape: ModelShape, *, nodes: int, gpus: int, gpu_memory_gib: float, headroom: float = 0.1, **options
) -> list[tuple[str, Estimate, bool]]:
    """Every preset that can run on `nodes` x `gpus` processes, its per-GPU estimate, and whether it fits in
    `gpu_memory_gib` with `headroom` (a fraction) left for what the estimate does not count.

    Sharding divides by every process of every node. `single` runs one process (one node, one GPU); the others
    span nodes (`llmft.finetune.distributed.spans_nodes`).
    """
    from llmft.finetune.distributed import spans_nodes

    if nodes < 1:
        raise UserError(f"--nodes: must be a positive integer, got {nodes}")
    chart_names = {short: chart for chart, short in PRESET_NAMES.items()}
    total = nodes * gpus
    rows = []
    for preset in SHARDING:
        if preset == "single" and total != 1:
            continue
        if nodes > 1 and not spans_nodes(chart_names[preset]):
            continue
        result = estimate(shape, preset=preset, gpus=total, **options)
        rows.append((preset, result, result.total <= gpu_memory_gib * GIB * (1 - headroom)))
    return rows


def format_fits(rows: list[tuple[str, Estimate, bool]], nodes: int, gpus: int, gpu_memory_gib: float) -> str:
    lines = [
        f"presets on {nodes} node(s) x {gpus} GPU(s) = {nodes * gpus} process(es), {gpu_memory_gib:g} GiB per GPU "
        "(10% kept free):"
    ]
    for preset, result, fits in rows:
        lines.append(f"  {preset:6} {result.total / GIB:9.2f} GiB per GPU  {'fits' if fits else 'does not fit'}")
    if not any(fits for _, _, fits in rows):
        lines.append("  none fits: add GPUs or nodes, use LoRA, gradient checkpointing or a shorter sequence")
    return "\n".join(lines)


def markdown_table(
    gpus: int = 8,
    dtype: str = "bf16",
    lora_rank: int = 16,
    batch_size: int = 1,
    seq_len: int = 2048,
    gradient_checkpointing: bool = True,
) -> str:
    """The docs table: GiB per GPU for the reference models under every preset, full and LoRA."""
    presets = list(SHARDING)
    header = (
        "| model | method | "
        + " | ".join(f"{p} (1 GPU)" if p == "single" else f"{p} ({gpus} GPUs)" for p in presets)
        + " |"
    )
    rows = [header, "|" + "---|" * (len(presets) + 2)]
    for name in REFERENCE_MODELS:
        shape = load_shape(name)
        for method in ("full", "lora"):
            cells = []
            for preset in presets:
                result = estimate(
                    shape,
                    method=method,
                    lora_rank=lora_rank,
                    preset=preset,
                    gpus=1 if preset == "single" else gpus,
                    dtype=dtype,
                    batch_size=batch_size,
                    seq_len=seq_len,
                    gradient_checkpointing=gradient_checkpointing,
                )
                cells.append(f"{result.total / GIB:.1f}")
            label = "full" if method == "full" else f"LoRA r={lora_rank}"
            rows.append(f"| {name} ({shape.params / 1e9:.2f}B) | {label} | " + " | ".join(cells) + " |")
    return "\n".join(rows)
