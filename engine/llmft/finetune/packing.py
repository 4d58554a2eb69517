"""Packing several tokenised samples into one sequence without cross-contamination.

Packing fills each training row with several samples so that little compute goes
to padding. It is only correct if the packed row computes exactly what the
samples would compute on their own, so this module guarantees three things:

1. **Positions restart.** `position_ids` count from 0 within each sample, so
   rotary embeddings see the same positions as in an unpacked run.
2. **Attention stays inside a sample.** Each token attends only to earlier
   tokens of its own sample, never across a boundary and never to padding. How
   that is achieved depends on the attention backend (`packing_mode`):

   - `sdpa`, `eager` -> **"mask"**: the collator emits an explicit 4D
     block-diagonal causal mask of shape (batch, 1, length, length). transformers
     5.x passes a 4D mask to the kernel unchanged. Restarting position_ids alone
     is NOT enough there: transformers detects packed rows from position_ids
     only when no cache object exists, and causal LMs create one by default
     (`use_cache=True`), after which the plain causal mask lets sample 2 see
     sample 1 (measured: logits differ by ~0.65 on the tiny model).
   - `flash_attention_2|3|4` and hub flash kernels -> **"varlen"**: the batch is
     flattened into one padding-free row and the collator passes
     `cu_seq_lens_q/k` and `max_length_q/k`, which transformers hands to the
     variable-length flash kernel (`flash_attn_varlen_func`); no mask at all.
   - anything else (`flex_attention`, `paged|...`, custom kernels) -> refused
     with a `UserError`. flex_attention would need a BlockMask; a dense 4D mask
     routed through its score_mod crashes the CPU kernel in torch 2.13.
3. **No loss term crosses a boundary.** Causal LMs shift labels inside the loss
   (the logit at position t is scored against label t+1), so the last token of
   sample A would be scored against the first token of sample B. The first
   label of every packed sample is therefore set to -100. An unpacked run never
   scores that label either (nothing precedes it), so the set of trained
   (prediction, target) pairs is exactly the unpacked one.

Loss averaging: the loss of an optimizer step is the sum of the per-token
cross-entropies over every trained target token in the step (all
micro-batches, all processes) divided by the number of those tokens. That is
what the Hugging Face Trainer computes when the model accepts
`num_items_in_batch` (it counts `labels[..., 1:] != -100` over the whole
accumulation window and across devices), and it is the same number for packed
and unpacked batches holding the same samples, because rule 3 makes the
trained-token counts identical. (A per-row or per-sample mean would weight
samples differently once they share rows; we do not use one.)

Bin packing is first-fit decreasing (FFD): samples sorted by length, longest
first (ties keep dataset order), each placed into the first row that still has
room, a new row opened when none has. It is deterministic (same samples, same
rows) and runs in O(n log n) with a max segment tree over remaining capacities.
Rows are later shuffled by the Trainer's sampler like any dataset.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from llmft.errors import UserError

IGNORE_INDEX = -100

MASK = "mask"
VARLEN = "varlen"

# Backends that take an explicit 4D mask as-is (verified with transformers 5.23:
# `masking_utils._preprocess_mask_arguments` returns a 4D mask unchanged).
_MASK_BACKENDS = {"sdpa", "eager"}


def packing_mode(attn_implementation: str) -> str:
    """How packed samples are kept apart under `attn_implementation`: MASK or VARLEN.

    Pass the model's resolved backend (`model.config._attn_implementation`).
    Raises UserError (naming `sft_args.packing`) for a backend that cannot keep
    samples apart, so a run never trains contaminated.
    """
    name = attn_implementation or ""
    if name in _MASK_BACKENDS:
        return MASK
    if "flash" in name and not name.startswith("paged|"):
        # transformers routes every "*flash*" implementation (flash_attention_2/3/4
        # and hub kernels such as kernels-community/flash-attn2) through
        # `_flash_attention_forward`, which honours cu_seq_lens_q/k.
        return VARLEN
    raise UserError(
        f"sft_args.packing: true cannot keep packed samples apart with attention implementation "
        f"{attn_implementation!r} (run_conf.model_args.attn_implementation): it accepts neither a "
        f"per-sample (block-diagonal) mask nor variable-length sequence boundaries. Use 'sdpa' or "
        f"'eager' (explicit block-diagonal mask; works on the CPU) or 'flash_attention_2' "
        f"(variable-length attention on the GPU), or set sft_args.packing: false."
    )


class _FirstFit:
    """Leftmost bin with at least `length` free slots, in O(log n).

    A max segment tree over the free capacity of `count` bins that all start
    empty. Opened bins are always to the left of empty ones, so "leftmost bin
    with room" is exactly first-fit, opening a new bin when no open one fits.
    """

    def __init__(self, count: int, capacity: int):
        size = 1
        while size < max(count, 1):
            size *= 2
        self.size = size
        self.free = [capacity] * (2 * size)

    def place(self, length: int) -> int:
        node = 1
        while node < self.size:
            node = 2 * node if self.free[2 * node] >= length else 2 * node + 1
        self.free[node] -= length
        parent = node // 2
        while parent:
            self.free[parent] = max(self.free[2 * parent], self.free[2 * parent + 1])
            parent //= 2
        return node - self.size


def pack_samples(samples: Sequence[Mapping[str, Sequence[int]]], max_seq_length: int) -> list[dict]:
    """Pack tokenised samples into rows of at most `max_seq_length` tokens (first-fit decreasing).

    Each sample is a mapping with `input_ids` and `labels` (same length; -100 on
    tokens that carry no loss). Returns one dict per row with lists
    `input_ids`, `labels` (first label of every sample set to -100),
    `position_ids` (restarting at 0 per sample) and `seq_lengths` (the length of
    each sample in the row, in order). Samples longer than `max_seq_length` are
    an error: filter or truncate them before packing (and count them).
    """
    if max_seq_length < 1:
        raise UserError(f"sft_args.max_seq_length: must be a positive integer, got {max_seq_length!r}")
    lengths = []
    for index, sample in enumerate(samples):
        length = len(sample["input_ids"])
        if length != len(sample["labels"]):
            raise ValueError(f"sample {index}: {length} input_ids but {len(sample['labels'])} labels")
        if length == 0:
            raise ValueError(f"sample {index}: empty input_ids")
        if length > max_seq_length:
            raise UserError(
                f"sample {index} has {length} tokens, more than sft_args.max_seq_length={max_seq_length}: "
                f"filter or truncate samples to max_seq_length before packing, or raise max_seq_length"
            )
        lengths.append(length)

    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins = _FirstFit(len(lengths), max_seq_length)
    members: list[list[int]] = []
    for index in order:
        row = bins.place(lengths[index])
        if row == len(members):
            members.append([])
        members[row].append(index)

    rows = []
    for row_members in members:
        input_ids: list[int] = []
        labels: list[int] = []
        position_ids: list[int] = []
        for index in row_members:
            sample_labels = list(samples[index]["labels"])
            sample_labels[0] = IGNORE_INDEX  # never scored against the previous sample's last token
            input_ids.extend(samples[index]["input_ids"])
            labels.extend(sample_labels)
            position_ids.extend(range(lengths[index]))
        rows.append(
            {
                "input_ids": input_ids,
                "labels": labels,
                "position_ids": position_ids,
                "seq_lengths": [lengths[i] for i in row_members],
            }
        )
    return rows


def packing_summary(rows: Sequence[Mapping], max_seq_length: int) -> dict:
    """Samples, rows, tokens and row fill (tokens / (rows * max_seq_length)) of a packed dataset."""
    tokens = sum(len(row["input_ids"]) for row in rows)
    samples = sum(len(row["seq_lengths"]) for row in rows)
    capacity = len(rows) * max_seq_length
    return {
        "samples": samples,
        "rows": len(rows),
        "tokens": tokens,
        "max_seq_length": max_seq_length,
        "row_fill": round(tokens / capacity, 6) if capacity else 0.0,
    }


@dataclass
class PackingStats:
    """Running efficiency counters of a collator: real tokens vs token slots computed.

    `slots` counts every position the model computes (real tokens plus padding
    added to align rows in a batch); `padding_fraction = 1 - tokens / slots`.
    Counted where the collator runs: with `dataloader_num_workers > 0` the
    counts stay in the worker processes, so read them with 0 workers (default).
    """

    batches: int = 0
    rows: int = 0
    samples: int = 0
    tokens: int = 0
    slots: int = 0

    def add(self, rows: int, samples: int, tokens: int, slots: int) -> None:
        self.batches += 1
        self.rows += rows
        self.samples += samples
        self.tokens += tokens
        self.slots += slots

    @property
    def padding_fraction(self) -> float:
        return 1.0 - self.tokens / self.slots if self.slots else 0.0

    @property
    def tokens_per_batch(self) -> float:
        """Effective (non-padding) tokens per batch, on average."""
        return self.tokens / self.batches if self.batches else 0.0

    def as_dict(self) -> dict:
        return {
            "batches": self.batches,
            "rows": self.rows,
            "samples": self.samples,
            "effective_tokens": self.tokens,
            "padded_tokens": self.slots - self.tokens,
            "padding_fraction": round(self.padding_fraction, 6),
            "effective_tokens_per_batch": round(self.tokens_per_batch, 3),
        }


def block_causal_mask(segment_ids, additive: bool):
    """4D attention mask (batch, 1, L, L) from per-token segment ids (batch, L).

    Token q may attend to token k iff k <= q and both carry the same segment id.
    Padding gets its own segment id, so no real token ever attends to it (and a
    padding row still attends to itself, which keeps softmax finite).
    `additive=False` gives a boolean mask (True = attend; sdpa); `additive=True`
    a float32 mask with 0 where allowed and the float32 minimum elsewhere, which
    is what eager attention adds to its scores.
    """
    import torch

    length = segment_ids.shape[-1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    allowed = (segment_ids[:, :, None] == segment_ids[:, None, :]) & causal
    allowed = allowed[:, None, :, :]
    if not additive:
        return allowed
    mask = torch.zeros(allowed.shape, dtype=torch.float32)
    return mask.masked_fill_(~allowed, torch.finfo(torch.float32).min)


class PackedCollator:
    """Collate packed rows (from `pack_samples`) into model inputs for one attention backend.

    Mask mode (sdpa, eager): rows are right-padded to the longest row of the
    batch (`pad_to_multiple_of` optional); the batch carries `input_ids`,
    `labels`, `position_ids` and a 4D block-diagonal causal `attention_mask`.

    Varlen mode (flash kernels): the rows of the batch are concatenated into one
    padding-free row of shape (1, total_tokens) with `position_ids` and
    `cu_seq_lens_q/k` (int32 sample boundaries) plus `max_length_q/k`, and no
    attention_mask (transformers then calls the variable-length kernel).

    `stats` accumulates the efficiency counters (PackingStats).
    """

    def __init__(self, attn_implementation: str, pad_token_id: int, pad_to_multiple_of: int | None = None):
        self.attn_implementation = attn_implementation
        self.mode = packing_mode(attn_implementation)
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.stats = PackingStats()

    def __call__(self, rows: Iterable[Mapping]) -> dict:
        rows = list(rows)
        if not rows:
            raise ValueError("PackedCollator got an empty batch")
        for row in rows:
            if "seq_lengths" not in row or sum(row["seq_lengths"]) != len(row["input_ids"]):
                raise ValueError("PackedCollator needs rows made by pack_samples (with matching seq_lengths)")
        if self.mode == VARLEN:
            return self._varlen(rows)
        return self._masked(rows)

    def _masked(self, rows: list[Mapping]) -> dict:
        import torch

        longest = max(len(row["input_ids"]) for row in rows)
        if self.pad_to_multiple_of:
            longest = -(-longest // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch = len(rows)
        input_ids = torch.full((batch, longest), self.pad_token_id, dtype=torch.long)
        labels = torch.full((batch, longest), IGNORE_INDEX, dtype=torch.long)
        position_ids = torch.zeros((batch, longest), dtype=torch.long)
        segments = torch.full((batch, longest), -1, dtype=torch.long)  # -1 = padding
        tokens = samples = 0
        for b, row in enumerate(rows):
            n = len(row["input_ids"])
            input_ids[b, :n] = torch.tensor(row["input_ids"], dtype=torch.long)
            labels[b, :n] = torch.tensor(row["labels"], dtype=torch.long)
            position_ids[b, :n] = torch.tensor(row["position_ids"], dtype=torch.long)
            segments[b, :n] = torch.repeat_interleave(
                torch.arange(len(row["seq_lengths"])), torch.tensor(row["seq_lengths"])
            )
            position_ids[b, n:] = torch.arange(longest - n)
            tokens += n
            samples += len(row["seq_lengths"])
        self.stats.add(rows=batch, samples=samples, tokens=tokens, slots=batch * longest)
        return {
            "input_ids": input_ids,
            "labels": labels,
            "position_ids": position_ids,
            "attention_mask": block_causal_mask(segments, additive=self.attn_implementation == "eager"),
        }

    def _varlen(self, rows: list[Mapping]) -> dict:
        import torch

        input_ids = [t for row in rows for t in row["input_ids"]]
        labels = [t for row in rows for t in row["labels"]]
        position_ids = [t for row in rows for t in row["position_ids"]]
        lengths = [n for row in rows for n in row["seq_lengths"]]
        boundaries = torch.tensor([0, *lengths], dtype=torch.int32).cumsum(0, dtype=torch.int32)
        self.stats.add(rows=len(rows), samples=len(lengths), tokens=len(input_ids), slots=len(input_ids))
        return {
            "input_ids": torch.tensor([input_ids], dtype=torch.long),
            "labels": torch.tensor([labels], dtype=torch.long),
            "position_ids": torch.tensor([position_ids], dtype=torch.long),
            "cu_seq_lens_q": boundaries,
            "cu_seq_lens_k": boundaries.clone(),
            "max_length_q": max(lengths),
            "max_length_k": max(lengths),
        }
