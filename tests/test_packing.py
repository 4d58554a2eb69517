"""Packing without cross-contamination: packed rows compute exactly what unpacked samples compute.

The acceptance test runs the real tiny Llama on the CPU: several samples of
different lengths share one row, and each sample's logits, per-sample loss, the
batch loss (Trainer definition, num_items_in_batch) and the gradients must equal
the unpacked run. The "teeth" tests show that the same checks fail without the
block-diagonal mask or without the boundary label fix.
"""

from __future__ import annotations

import pytest
import torch

from llmft.errors import UserError
from llmft.finetune.packing import (
    IGNORE_INDEX,
    MASK,
    VARLEN,
    PackedCollator,
    block_causal_mask,
    pack_samples,
    packing_mode,
    packing_summary,
)

LENGTHS = [7, 12, 5, 9, 4]  # FFD into 24-token rows: [12, 9] and [7, 5, 4] (3 samples share a row)


def make_samples(lengths=LENGTHS, seed=0):
    """Random token samples; the first two tokens of each are untrained (like a prompt)."""
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for n in lengths:
        ids = torch.randint(3, 500, (n,), generator=generator).tolist()
        labels = [IGNORE_INDEX, IGNORE_INDEX] + ids[2:]
        samples.append({"input_ids": ids, "labels": labels})
    return samples


def load(model_dir, attn):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(model_dir, attn_implementation=attn, dtype=torch.float32)


def unpacked_reference(model, samples):
    """Per-sample logits, and the summed token loss / trained-token count of the unpacked run."""
    logits, loss_sum, count = [], 0.0, 0
    for sample in samples:
        ids = torch.tensor([sample["input_ids"]])
        out = model(input_ids=ids).logits[0]
        logits.append(out)
        targets = torch.tensor(sample["labels"][1:])
        token_losses = torch.nn.functional.cross_entropy(out[:-1], targets, ignore_index=IGNORE_INDEX, reduction="sum")
        loss_sum = loss_sum + token_losses
        count += int((targets != IGNORE_INDEX).sum())
    return logits, loss_sum, count


def split_logits(batch_logits, rows, samples_in_order):
    """Per-sample logits from a packed batch, in the order samples were packed."""
    pieces = []
    for b, row in enumerate(rows):
        start = 0
        for n in row["seq_lengths"]:
            pieces.append(batch_logits[b, start : start + n])
            start += n
    return pieces


def packed_order(samples, rows):
    """The sample dicts in packed order (pack_samples reorders: first-fit decreasing)."""
    by_ids = {tuple(s["input_ids"]): s for s in samples}
    order = []
    for row in rows:
        start = 0
        for n in row["seq_lengths"]:
            order.append(by_ids[tuple(row["input_ids"][start : start + n])])
            start += n
    return order


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_equals_unpacked_logits_loss_and_gradients(tiny_model_dir, attn):
    samples = make_samples()
    rows = pack_samples(samples, max_seq_length=24)
    assert [r["seq_lengths"] for r in rows] == [[12, 9], [7, 5, 4]]
    collator = PackedCollator(attn, pad_token_id=0)
    batch = collator(rows)
    assert batch["attention_mask"].shape == (2, 1, 21, 21)  # padded to the longest row

    model = load(tiny_model_dir, attn)
    # Packed forward + backward, loss normalised the Trainer's way (num_items_in_batch).
    num_items = int((batch["labels"][..., 1:] != IGNORE_INDEX).sum())
    packed_out = model(**batch, num_items_in_batch=torch.tensor(num_items))
    packed_out.loss.backward()
    packed_grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    ordered = packed_order(samples, rows)
    ref_logits, ref_loss_sum, ref_count = unpacked_reference(model, ordered)
    (ref_loss_sum / ref_count).backward()

    # Same trained-token count as the unpacked run: the Trainer's normaliser matches.
    assert num_items == ref_count
    with torch.no_grad():
        for got, want in zip(split_logits(packed_out.logits, rows, ordered), ref_logits, strict=False):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            # per-sample loss too
        for b, row in enumerate(rows):
            start = 0
            for n in row["seq_lengths"]:
                logits = packed_out.logits[b, start : start + n]
                targets = batch["labels"][b, start + 1 : start + n]
                sample = next(s for s in ordered if s["input_ids"] == row["input_ids"][start : start + n])
                single = model(input_ids=torch.tensor([sample["input_ids"]])).logits[0]
                want = torch.nn.functional.cross_entropy(single[:-1], torch.tensor(sample["labels"][1:]))
                got = torch.nn.functional.cross_entropy(logits[:-1], targets)
                torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
                start += n
    torch.testing.assert_close(packed_out.loss.detach(), (ref_loss_sum / ref_count).detach(), atol=1e-6, rtol=1e-5)
    for name, param in model.named_parameters():
        torch.testing.assert_close(packed_grads[name], param.grad, atol=1e-6, rtol=1e-4, msg=name)


def test_without_the_mask_samples_leak_into_each_other(tiny_model_dir):
    """Teeth: restarting position_ids alone (no block-diagonal mask) changes later samples' logits."""
    samples = make_samples()
    rows = pack_samples(samples, max_seq_length=24)
    batch = PackedCollator("sdpa", pad_token_id=0)(rows)
    model = load(tiny_model_dir, "sdpa")
    with torch.no_grad():
        masked = model(
            input_ids=batch["input_ids"], position_ids=batch["position_ids"], attention_mask=batch["attention_mask"]
        ).logits
        leaky = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits
    first = rows[0]["seq_lengths"][0]
    # The first sample of a row sees nothing before it either way...
    torch.testing.assert_close(leaky[0, :first], masked[0, :first], atol=1e-5, rtol=1e-5)
    # ...but the second one attends across the boundary without the mask.
    assert (leaky[0, first:] - masked[0, first:]).abs().max() > 1e-2


def test_without_the_boundary_label_fix_the_loss_crosses_samples(tiny_model_dir):
    """Teeth: keeping each sample's first label would score sample A's last logit against sample B."""
    samples = make_samples()
    for sample in samples:  # train every token, so each sample's first label is a real token
        sample["labels"] = list(sample["input_ids"])
    rows = pack_samples(samples, max_seq_length=24)
    batch = PackedCollator("sdpa", pad_token_id=0)(rows)
    model = load(tiny_model_dir, "sdpa")
    ordered = packed_order(samples, rows)
    with torch.no_grad():
        _, ref_sum, ref_count = unpacked_reference(model, ordered)
        fixed = model(**batch).loss
        width = batch["input_ids"].shape[1]
        naive_labels = torch.tensor(
            [row["input_ids"] + [IGNORE_INDEX] * (width - len(row["input_ids"])) for row in rows]
        )
        naive = model(
            input_ids=batch["input_ids"],
            position_ids=batch["position_ids"],
            attention_mask=batch["attention_mask"],
            labels=naive_labels,
        ).loss
    torch.testing.assert_close(fixed, ref_sum / ref_count, atol=1e-6, rtol=1e-5)
    assert abs(naive.item() - (ref_sum / ref_count).item()) > 1e-3


def _reference_varlen_attention(
    module,
    query,
    key,
    value,
    attention_mask,
    scaling=None,
    dropout=0.0,
    cu_seq_lens_q=None,
    cu_seq_lens_k=None,
    max_length_q=None,
    max_length_k=None,
    **kwargs,
):
    """CPU stand-in for flash_attn_varlen_func (flash-attn needs a GPU): causal attention per segment."""
    assert attention_mask is None, "varlen batches must not carry a mask"
    assert torch.equal(cu_seq_lens_q, cu_seq_lens_k)
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, dim=1), value.repeat_interleave(groups, dim=1)
    out = torch.empty_like(query)
    bounds = cu_seq_lens_q.tolist()
    assert max(b - a for a, b in zip(bounds, bounds[1:], strict=False)) == max_length_q
    for start, end in zip(bounds, bounds[1:], strict=False):
        out[:, :, start:end] = torch.nn.functional.scaled_dot_product_attention(
            query[:, :, start:end], key[:, :, start:end], value[:, :, start:end], is_causal=True, scale=scaling
        )
    return out.transpose(1, 2).contiguous(), None


def test_varlen_batches_reach_the_attention_kernel_with_correct_boundaries(tiny_model_dir):
    """Flash backends get one padding-free row plus cu_seq_lens that transformers passes to the kernel.

    flash-attn cannot run on this CPU machine, so a registered reference kernel stands in for
    flash_attn_varlen_func; it consumes the same kwargs transformers' flash path consumes.
    """
    from transformers import AttentionInterface
    from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

    samples = make_samples()
    rows = pack_samples(samples, max_seq_length=24)
    collator = PackedCollator("flash_attention_2", pad_token_id=0)
    batch = collator(rows)
    assert "attention_mask" not in batch and batch["input_ids"].shape == (1, sum(LENGTHS))
    # transformers' own position_ids -> cu_seqlens derivation agrees with ours.
    (cu_q, _), (max_q, _) = prepare_fa_kwargs_from_position_ids(batch["position_ids"])
    assert torch.equal(cu_q, batch["cu_seq_lens_q"]) and int(max_q) == batch["max_length_q"]

    AttentionInterface.register("llmft_reference_varlen", _reference_varlen_attention)
    model = load(tiny_model_dir, "llmft_reference_varlen")
    ordered = packed_order(samples, rows)
    with torch.no_grad():
        out = model(**batch)
        ref_logits, ref_sum, ref_count = unpacked_reference(load(tiny_model_dir, "sdpa"), ordered)
    start = 0
    for want in ref_logits:
        torch.testing.assert_close(out.logits[0, start : start + len(want)], want, atol=1e-5, rtol=1e-5)
        start += len(want)
    torch.testing.assert_close(out.loss, ref_sum / ref_count, atol=1e-6, rtol=1e-5)


def test_first_fit_decreasing_layout_is_deterministic():
    lengths = [3, 5, 2, 4, 1, 3, 2]
    samples = [{"input_ids": [i + 10] * n, "labels": [i + 10] * n} for i, n in enumerate(lengths)]
    rows = pack_samples(samples, max_seq_length=8)
    # sorted: 5(#1) 4(#3) 3(#0) 3(#5) 2(#2) 2(#6) 1(#4) -> first row with room
    assert [row["seq_lengths"] for row in rows] == [[5, 3], [4, 3, 1], [2, 2]]
    assert rows[0]["input_ids"] == [11] * 5 + [10] * 3
    assert rows[0]["position_ids"] == [0, 1, 2, 3, 4, 0, 1, 2]
    assert rows[0]["labels"] == [IGNORE_INDEX, 11, 11, 11, 11, IGNORE_INDEX, 10, 10]
    assert pack_samples(samples, max_seq_length=8) == rows
    summary = packing_summary(rows, 8)
    assert summary == {"samples": 7, "rows": 3, "tokens": 20, "max_seq_length": 8, "row_fill": round(20 / 24, 6)}


def test_many_samples_each_packed_once_within_the_limit():
    generator = torch.Generator().manual_seed(1)
    lengths = torch.randint(1, 65, (2000,), generator=generator).tolist()
    samples = [{"input_ids": [i] * n, "labels": [i] * n} for i, n in enumerate(lengths)]
    rows = pack_samples(samples, max_seq_length=128)
    assert all(len(row["input_ids"]) <= 128 for row in rows)
    seen = sorted(row["input_ids"][sum(row["seq_lengths"][:k])] for row in rows for k in range(len(row["seq_lengths"])))
    assert seen == list(range(2000))
    # FFD is near-optimal: at most a few rows more than the token lower bound.
    assert len(rows) <= -(-sum(lengths) // 128) + 2


def test_padding_gets_no_attention_and_efficiency_counters():
    segments = torch.tensor([[0, 0, 1, -1]])
    mask = block_causal_mask(segments, additive=False)[0, 0]
    assert mask.tolist() == [
        [True, False, False, False],
        [True, True, False, False],
        [False, False, True, False],
        [False, False, False, True],  # padding only sees itself; no real token sees padding
    ]
    additive = block_causal_mask(segments, additive=True)[0, 0]
    assert additive[1, 0] == 0 and additive[2, 0] == torch.finfo(torch.float32).min

    rows = pack_samples(make_samples([6, 4, 10]), max_seq_length=10)  # rows of 10 and 10 tokens
    rows.append(pack_samples(make_samples([5]), max_seq_length=10)[0])  # a 5-token row
    collator = PackedCollator("sdpa", pad_token_id=0)
    batch = collator(rows)
    assert batch["input_ids"].shape == (3, 10)
    assert batch["labels"][2, 5:].eq(IGNORE_INDEX).all()
    stats = collator.stats.as_dict()
    assert stats["effective_tokens"] == 25 and stats["padded_tokens"] == 5
    assert stats["padding_fraction"] == pytest.approx(5 / 30, abs=1e-6)
    assert stats["effective_tokens_per_batch"] == 25
    varlen = PackedCollator("flash_attention_2", pad_token_id=0)
    varlen(rows)
    assert varlen.stats.padding_fraction == 0.0


def test_backends_that_cannot_isolate_samples_are_refused():
    assert packing_mode("sdpa") == MASK and packing_mode("eager") == MASK
    assert packing_mode("flash_attention_2") == VARLEN
    assert packing_mode("kernels-community/flash-attn2") == VARLEN
    for backend in ("flex_attention", "paged|flash_attention_2", "my-custom-kernel"):
        with pytest.raises(UserError) as error:
            PackedCollator(backend, pad_token_id=0)
        assert "sft_args.packing" in str(error.value) and repr(backend) in str(error.value)
        assert "sdpa" in str(error.value)


def test_sample_longer_than_max_seq_length_is_a_clear_error():
    with pytest.raises(UserError, match="sft_args.max_seq_length=8"):
        pack_samples(make_samples([5, 9]), max_seq_length=8)


# ------------------------------------------------------------------ end to end: `llmft sft` with packing

QA = [
    ("What is the capital of France?", "Paris."),
    ("What color is the sky?", "Blue."),
    ("Who wrote Hamlet?", "Shakespeare."),
    ("How many legs does a spider have?", "Eight."),
]


@pytest.mark.slow
def test_sft_with_packing_learns_and_reports_padding(tiny_model_dir, tmp_path):
    import json

    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft

    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]} for q, a in QA]
    dataset = tmp_path / "train.jsonl"
    dataset.write_text("".join(json.dumps(row) + "\n" for row in rows * 6))
    out = tmp_path / "out"
    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(dataset)}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(out),
            "learning_rate": 1e-2,
            "lr_scheduler_type": "constant",
            "max_steps": 24,
            "logging_steps": 4,
            "save_strategy": "no",
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 2, "max_per_device_train_batch_size": 2},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {"model": str(tiny_model_dir), "model_args": {"attn_implementation": "sdpa"}},
        "sft_args": {"max_seq_length": 96, "packing": True},
    }
    assert run_sft(load_config(config)) == 0

    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 24
    assert summary["final_train_loss"] < summary["first_train_loss"] / 2  # it learns
    throughput = summary["throughput"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "checkpoint-final")
    longest = max(
        len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
        for row in rows
    )
    # Several samples per row: a row holds more real tokens, on average, than the longest sample.
    assert throughput["rows"] > 0 and throughput["effective_tokens"] / throughput["rows"] > 1.5 * longest
    assert throughput["effective_tokens_per_second"] > 0
    assert 0 <= throughput["padding_fraction"] < 0.5
    assert throughput["effective_tokens"] + throughput["padding_tokens"] == round(
        throughput["mean_sequence_length"] * throughput["rows"]
    )


def test_trl_sft_trainer_loss_and_gradients_are_the_same_packed_and_unpacked(tiny_model_dir, tmp_path):
    """The SFT recipe's trainer (TRL's SFTTrainer, fused LM head) on a packed batch vs. TRL's own unpacked batch."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    examples = []
    for question, reply in QA:
        ids = tokenizer.apply_chat_template(
            [{"role": "user", "content": question}, {"role": "assistant", "content": reply}],
            tokenize=True,
            return_dict=True,
        )["input_ids"]
        examples.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 8 + ids[8:]})
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa")
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(output_dir=str(tmp_path), report_to=[], use_cpu=True, max_length=96),
        train_dataset=Dataset.from_list(examples),
        processing_class=tokenizer,
    )
    rows = pack_samples(examples, 96)
    assert max(len(row["seq_lengths"]) for row in rows) >= 2
    packed = PackedCollator("sdpa", tokenizer.pad_token_id)(rows)
    unpacked = DataCollatorForLanguageModeling(pad_token_id=tokenizer.pad_token_id)(examples)

    def step(batch):
        count = (batch["labels"][..., 1:] != IGNORE_INDEX).sum()  # the Trainer's num_items_in_batch
        model.zero_grad()
        loss = trainer.compute_loss(trainer.model, dict(batch), num_items_in_batch=count)
        loss.backward()
        return loss.detach(), int(count), torch.cat([p.grad.flatten() for p in model.parameters()])

    packed_loss, packed_count, packed_grad = step(packed)
    loss, count, grad = step(unpacked)
    assert packed_count == count
    torch.testing.assert_close(packed_loss, loss, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(packed_grad, grad, atol=1e-6, rtol=1e-4)
