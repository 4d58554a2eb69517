"""The throughput report in summary.json: effective tokens/s, padding, peak memory and MFU.

**Effective tokens** are the real (non-padding) tokens of every batch the model trained on. They
are measured where the batch is collated (`counting(TrainerClass)` wraps the training data
collator, which still knows the rows' own lengths): the sum of a 2D attention mask where the batch
has one (unpacked SFT, DPO), otherwise the lengths of the rows (packed SFT, whose rows the collator
pads). A measurement is counted only when `training_step` consumes its batch (in collation order),
because the data loader collates one batch ahead that a run stopping at `max_steps` never trains.
**Slots** are the token positions the model computed (`input_ids.numel()`);
`padding_fraction = 1 - effective / slots`. Evaluation batches and DPO's reference precompute are
not counted. With `dataloader_num_workers > 0` the collator runs in the worker processes, so the
counts are not available and the report says so (null fields).

**Model FLOPs per token** (the PaLM / Chinchilla convention, counting a multiply-add as 2 FLOPs and
ignoring recomputation from gradient checkpointing, norms and softmax):

    FLOPs/token = 2 N                       forward through every linear layer (N = their weights)
                + 2 N                       backward: gradients of the activations
                + 2 N_trainable             backward: gradients of the trainable weights
                + 12 L s w                  attention scores and values: forward 4 L s w, backward 8 L s w
                [+ 2 N_base + 4 L s w]      DPO only: the reference model's forward (unless precomputed)

N counts the weights of every `nn.Linear` the forward runs through (the output layer included, the
input embedding lookup excluded); N_trainable those that train. Full fine-tuning: 6 N + 12 L s w.
LoRA: 4 N_frozen + 6 N_lora + 12 L s w (frozen weights need no weight gradients). N_base leaves out
the LoRA matrices (the reference is the base model). L = layers, w = attention heads x head size,
s = the mean computed sequence length (slots per row). MFU = FLOPs/token x effective tokens /
(runtime x processes x peak FLOP/s per device); the peak is the device's dense bf16 peak from
`PEAK_BF16_FLOPS`, or `LLMFT_PEAK_FLOPS` (FLOP/s per device, e.g. for a CPU); null when unknown.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

PEAK_FLOPS_ENV = "LLMFT_PEAK_FLOPS"

# Dense (no sparsity) bf16 tensor peaks per device, from the vendors' data sheets. Matched in order
# against the device name torch reports, so the more specific names come first.
PEAK_BF16_FLOPS: list[tuple[tuple[str, ...], float]] = [
    (("H100", "PCIE"), 756e12),
    (("H100", "NVL"), 835e12),
    (("H100",), 989e12),  # SXM (reported as e.g. "NVIDIA H100 80GB HBM3")
    (("H200",), 989e12),
    (("GH200",), 989e12),
    (("A100",), 312e12),
    (("L40S",), 362e12),
    (("MI300X",), 1307e12),
    (("MI250X",), 383e12),
]

FORMULA = (
    "flops_per_token = 2*N + 2*N + 2*N_trainable + 12*L*s*w [+ 2*N_base + 4*L*s*w for a DPO reference "
    "forward]; N = weights of the linear layers run, L = layers, w = heads*head_dim, s = mean computed "
    "sequence length; see llmft/finetune/throughput.py"
)


def peak_flops_for(device_name: str | None) -> float | None:
    """Dense bf16 peak FLOP/s of a GPU by its name, or None when it is not in the table."""
    if not device_name:
        return None
    name = device_name.upper()
    for needles, peak in PEAK_BF16_FLOPS:
        if all(needle in name for needle in needles):
            return peak
    return None


# ------------------------------------------------------------------------------------------ counting


def measure(batch, features) -> tuple[int, int, int]:
    """(real tokens, computed positions, rows) of one collated batch."""
    input_ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if mask is not None and mask.dim() == 2:
        effective = int(mask.sum())
    elif "cu_seq_lens_q" in batch:  # one padding-free row of variable-length samples
        effective = int(input_ids.numel())
    else:  # packed rows, padded by the collator to the longest row
        effective = sum(len(feature["input_ids"]) for feature in features)
    rows = len(features) if "cu_seq_lens_q" in batch else int(input_ids.shape[0])
    return effective, int(input_ids.numel()), rows


@dataclass
class TokenCounts:
    """Counts over the training batches this process trained on.

    `collated` queues a batch's measurement; `consume` (one call per training step, i.e. per
    micro-batch) counts the oldest queued one. Batches collated but never trained stay queued.
    """

    batches: int = 0
    rows: int = 0
    effective: int = 0
    slots: int = 0
    pending: deque = field(default_factory=deque)

    def collated(self, batch, features) -> None:
        self.pending.append(measure(batch, features))

    def consume(self) -> None:
        if not self.pending:
            return  # collated elsewhere (dataloader workers): nothing to count here
        effective, slots, rows = self.pending.popleft()
        self.batches += 1
        self.rows += rows
        self.effective += effective
        self.slots += slots


class CountingCollator:
    """Wraps a data collator and measures the real and computed tokens of every batch it builds."""

    def __init__(self, inner, counts: TokenCounts):
        self.inner = inner
        self.counts = counts

    def __call__(self, features):
        batch = self.inner(features)
        self.counts.collated(batch, features)
        return batch


_COUNTING_CLASSES: dict[type, type] = {}


def counting(trainer_class: type) -> type:
    """A subclass of a (TRL) Trainer class that counts the tokens of its training batches.

    Only the training dataloader's collator is wrapped, so evaluation batches are not counted, and
    a batch counts when `training_step` runs on it. The counts are in `trainer.llmft_token_counts`.
    """
    if trainer_class not in _COUNTING_CLASSES:

        class Counting(trainer_class):
            def get_train_dataloader(self):
                counts = self.__dict__.setdefault("llmft_token_counts", TokenCounts())
                counts.pending.clear()  # a new dataloader: nothing collated by an old one will be trained
                inner = self.data_collator
                self.data_collator = CountingCollator(inner, counts)
                try:
                    return super().get_train_dataloader()
                finally:
                    self.data_collator = inner

            def training_step(self, *args, **kwargs):
                counts = self.__dict__.get("llmft_token_counts")
                if counts is not None:
                    counts.consume()
                return super().training_step(*args, **kwargs)

        Counting.__name__ = Counting.__qualname__ = f"Counting{trainer_class.__name__}"
        _COUNTING_CLASSES[trainer_class] = Counting
    return _COUNTING_CLASSES[trainer_class]


# ------------------------------------------------------------------------------------------ FLOPs


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs formula needs from a model."""

    linear: int  # N: weights of every linear layer the forward runs through
    trainable: int  # N_trainable
    base: int  # N_base: linear weights without LoRA matrices
    layers: int  # L
    attention_width: int  # w = heads x head_dim


def model_shape(model) -> ModelShape:
    import torch

    linear = trainable = base = 0
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear) or "original_module" in name:
            continue  # PEFT's modules_to_save keeps an unused copy of the original layer
        count = module.weight.numel()
        linear += count
        if module.weight.requires_grad:
            trainable += count
        if "lora_" not in name:
            base += count
    config = model.config
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    heads = text.num_attention_heads
    head_dim = getattr(text, "head_dim", None) or text.hidden_size // heads
    return ModelShape(linear, trainable, base, text.num_hidden_layers, heads * head_dim)


def flops_per_token(shape: ModelShape, sequence_length: float, reference_forward: bool = False) -> float:
    """Model FLOPs per trained token (see the module docstring for the formula)."""
    attention = 4 * shape.layers * sequence_length * shape.attention_width  # one forward
    flops = 4 * shape.linear + 2 * shape.trainable + 3 * attention
    if reference_forward:
        flops += 2 * shape.base + attention
    return float(flops)


# ------------------------------------------------------------------------------------------ the report


def peak_memory() -> dict:
    """Peak resident memory of this process and, with CUDA, the peak allocated GPU memory."""
    import resource

    import torch

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB
    cuda = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    return {"cpu_rss_peak_bytes": rss, "cuda_max_allocated_bytes": cuda}


def device_peak() -> tuple[str, float | None, str | None]:
    """(device name, peak FLOP/s per device, where the peak came from)."""
    import torch

    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    from llmft import settings

    override = settings.current().peak_flops
    if override:
        return name, override, PEAK_FLOPS_ENV
    peak = peak_flops_for(name) if name != "cpu" else None
    return name, peak, ("dense bf16 table" if peak else None)


def _gathered(trainer, values: list[float], how: str) -> list[float]:
    """Sum or max `values` over every process (a collective call)."""
    if trainer.accelerator.num_processes == 1:
        return values
    import torch

    tensor = torch.tensor(values, dtype=torch.float64, device=trainer.accelerator.device)
    gathered = trainer.accelerator.gather(tensor[None]).reshape(-1, len(values))
    reduced = gathered.sum(0) if how == "sum" else gathered.max(0).values
    return reduced.tolist()


def report(trainer, runtime: float, reference_forward: bool = False) -> dict:
    """The `throughput` block of summary.json (every process must call it: counts are gathered)."""
    counts = getattr(trainer, "llmft_token_counts", None) or TokenCounts()
    memory = peak_memory()
    batches, rows, effective, slots = _gathered(
        trainer, [counts.batches, counts.rows, counts.effective, counts.slots], "sum"
    )
    rss, cuda = _gathered(trainer, [memory["cpu_rss_peak_bytes"], memory["cuda_max_allocated_bytes"] or 0], "max")
    processes = trainer.accelerator.num_processes
    name, peak, source = device_peak()
    result = {
        "effective_tokens": None,
        "padding_tokens": None,
        "padding_fraction": None,
        "effective_tokens_per_second": None,
        "rows": int(rows),
        "mean_sequence_length": None,
        "peak_memory": {
            "cpu_rss_peak_bytes": int(rss),
            "cuda_max_allocated_bytes": int(cuda) if memory["cuda_max_allocated_bytes"] is not None else None,
        },
        "flops_per_token": None,
        "model_flops": None,
        "flops_formula": FORMULA,
        "device": name,
        "processes": processes,
        "peak_flops_per_device": peak,
        "peak_flops_source": source,
        "mfu": None,
        "notes": [],
    }
    if trainer.args.dataloader_num_workers > 0:
        result["notes"].append(
            "token counts need dataloader_num_workers: 0 (the collator runs in worker processes otherwise)"
        )
        return result
    if not slots:
        return result
    model = trainer.accelerator.unwrap_model(trainer.model)
    sequence = slots / rows
    per_token = flops_per_token(model_shape(model), sequence, reference_forward)
    total = per_token * effective
    result.update(
        effective_tokens=int(effective),
        padding_tokens=int(slots - effective),
        padding_fraction=round(1 - effective / slots, 6),
        effective_tokens_per_second=round(effective / runtime, 1) if runtime > 0 else None,
        mean_sequence_length=round(sequence, 3),
        flops_per_token=per_token,
        model_flops=total,
    )
    if peak and runtime > 0:
        result["mfu"] = round(total / (runtime * processes * peak), 6)
    elif not peak:
        result["notes"].append(
            f"MFU needs the device's peak FLOP/s: {name} is not in the table; set "
            f"{PEAK_FLOPS_ENV} (FLOP/s per device) to compute it"
        )
    return result
