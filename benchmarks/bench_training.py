"""Training throughput on the CPU: packing versus padded batches versus plain trl.

A Llama-architecture model with random weights (tens of millions of parameters at
full size, built offline by `llmft.tiny_model`) trains on a synthetic chat data set
whose sample lengths follow a lognormal distribution (most samples short, a long
tail up to `max_seq_length`, drawn deterministically). Three candidates, same
model, data, batch size and hyperparameters, run alternately:

- **a. engine, packed**: `run_sft` with `sft_args.packing: true` (first-fit-decreasing
  rows, block-diagonal attention so no sample sees another);
- **b. engine, padded**: `run_sft` without packing (each batch padded to its longest
  sample: what the replaced charts did);
- **c. plain trl**: trl's `SFTTrainer` on the same conversations, no packing, none of
  our layers (no progress lines, metrics.jsonl, token counting).

Only the training loop is timed, the same way for all three: a TrainerCallback
(`StepClock`) notes the time at the end of every optimizer step and records, for
every batch the data loader collates, its real tokens (the un-padded length of each
row; padding is excluded) and its token slots (`input_ids.numel()`). Effective
tokens/s = real tokens of the batches after the warm-up steps / time from the end
of the warm-up to the end of the last step. Model load, tokenisation, packing and
the final save are outside the window. Figures are ratios of medians.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import figure, interleaved, median, result

# quick: checks the script runs (numbers mean nothing); full: sized for ~6-8 minutes on 2 busy cores.
SIZES = {
    True: dict(
        hidden=64,
        layers=2,
        heads=4,
        intermediate=128,
        max_len=96,
        batch=4,
        median_len=24,
        samples=48,
        warmup=1,
        steps={"packed": 3, "padded": 3},
        repeats=1,
    ),
    False: dict(
        hidden=512,
        layers=4,
        heads=8,
        intermediate=1536,
        max_len=256,
        batch=8,
        median_len=40,
        samples=600,
        warmup=1,
        steps={"packed": 4, "padded": 6},
        repeats=2,
        max_repeats=6,
        budget_s=240,
    ),
}
SIGMA = 1.0  # lognormal shape: median `median_len`, mean ~1.6x the median, ~3% of samples above 4x the median
LEARNING_RATE = 1e-4
SEED = 42


def make_dataset(path: Path, tokenizer, samples: int, max_len: int, median_len: int, seed: int = 0) -> list[int]:
    """Write `samples` chat records whose token lengths are lognormal (tail up to `max_len`); return the targets.

    Lengths above `max_len` are drawn again (not clipped), so the tail thins out towards the
    maximum instead of piling up on it. Text is made of corpus words whose token counts are known
    (the byte-level pre-tokenizer splits at spaces, so counts add up word by word).
    """
    from importlib import resources

    corpus = resources.files("llmft.assets").joinpath("tiny_corpus.txt").read_text().split()
    words = sorted(set(corpus))
    cost = {word: len(tokenizer(" " + word, add_special_tokens=False)["input_ids"]) for word in words}
    overhead = len(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}, {"role": "assistant", "content": "x"}], tokenize=True, return_dict=True
        )["input_ids"]
    )
    rng = random.Random(seed)

    def text(tokens: int) -> str:
        chosen, used = [], 0
        while used < tokens:
            word = rng.choice(words)
            chosen.append(word)
            used += cost[word]
        return " ".join(chosen)

    targets, rows = [], []
    for _ in range(samples):
        length = max_len + 1
        while length > max_len - 4:  # a little margin for word boundaries
            length = max(overhead + 4, round(rng.lognormvariate(math.log(median_len), SIGMA)))
        content = length - overhead
        user = max(1, round(content * rng.uniform(0.2, 0.4)))
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": text(user)},
                    {"role": "assistant", "content": text(content - user)},
                ]
            }
        )
        targets.append(length)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return targets


class Recorder:
    """Wraps a data collator: per batch, the real tokens (un-padded row lengths) and the slots computed."""

    def __init__(self, inner):
        self.inner = inner
        self.batches: list[tuple[int, int]] = []

    def __call__(self, features):
        batch = self.inner(features)
        real = sum(len(feature["input_ids"]) for feature in features)
        self.batches.append((real, int(batch["input_ids"].numel())))
        return batch


def step_clock(warmup: int):
    """A TrainerCallback timing the optimizer steps after `warmup` and counting their batches' tokens."""
    from transformers import TrainerCallback

    class StepClock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []
            self.cpu: list[float] = []  # this process's CPU time: less sensitive to other processes' load
            self.recorder: Recorder | None = None

        def on_train_begin(self, args, state, control, train_dataloader=None, **kwargs):
            # The data loader's iterator is created after this call, so it picks up the wrapper
            # (on accelerate's DataLoaderShard, on the torch DataLoader it wraps).
            loader = getattr(train_dataloader, "base_dataloader", train_dataloader)
            self.recorder = Recorder(loader.collate_fn)
            loader.collate_fn = self.recorder

        def on_step_end(self, args, state, control, **kwargs):
            self.ends.append(time.perf_counter())
            self.cpu.append(time.process_time())

        def measurement(self) -> dict:
            timed = self.recorder.batches[warmup : len(self.ends)]  # batch i feeds step i (no accumulation)
            real = sum(b[0] for b in timed)
            slots = sum(b[1] for b in timed)
            seconds = self.ends[-1] - self.ends[warmup - 1]
            cpu_seconds = self.cpu[-1] - self.cpu[warmup - 1]
            return {
                "steps": len(self.ends) - warmup,
                "seconds": seconds,
                "cpu_seconds": cpu_seconds,
                "real_tokens": real,
                "slots": slots,
                "tokens_per_s": real / seconds,
                "tokens_per_cpu_s": real / cpu_seconds,
                "padding_fraction": 1 - real / slots,
            }

    return StepClock()


def engine_config(model_dir: Path, data: Path, output: Path, size: dict, packing: bool, steps: int) -> dict:
    return {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(data)}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(output),
            "learning_rate": LEARNING_RATE,
            "lr_scheduler_type": "constant",
            "max_steps": steps,
            "logging_steps": 5,
            "save_strategy": "no",
            "report_to": [],
            "seed": SEED,
        },
        "batchsize_conf": {"total_train_batch_size": size["batch"], "max_per_device_train_batch_size": size["batch"]},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {
            "model": str(model_dir),
            "resume_from_checkpoint": "none",
            "model_args": {"dtype": "fp32", "attn_implementation": "sdpa"},
        },
        "sft_args": {"max_seq_length": size["max_len"], "packing": packing, "train_on_completions_only": False},
    }


def run_engine(model_dir: Path, data: Path, output: Path, size: dict, packing: bool) -> dict:
    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft

    steps = size["warmup"] + size["steps"]["packed" if packing else "padded"]
    clock = step_clock(size["warmup"])
    shutil.rmtree(output, ignore_errors=True)
    if run_sft(load_config(engine_config(model_dir, data, output, size, packing, steps)), callbacks=[clock]) != 0:
        raise RuntimeError("run_sft failed")
    shutil.rmtree(output, ignore_errors=True)
    return clock.measurement()


def run_plain_trl(model_dir: Path, data: Path, output: Path, size: dict) -> dict:
    """trl's SFTTrainer as a user would call it, with the engine's model settings and hyperparameters.

    trl's SFTConfig changes some defaults (gradient checkpointing on, bf16 on); they are set to what the
    engine runs (its config defaults: off, fp32) so that only our layers differ. Both use transformers'
    default optimizer, adamw_torch_fused.
    """
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    steps = size["warmup"] + size["steps"]["padded"]
    clock = step_clock(size["warmup"])
    shutil.rmtree(output, ignore_errors=True)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="sdpa")
    model.config.use_cache = False  # as the engine does: no KV cache while training
    args = SFTConfig(
        output_dir=str(output),
        per_device_train_batch_size=size["batch"],
        gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE,
        lr_scheduler_type="constant",
        max_steps=steps,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        seed=SEED,
        use_cpu=True,
        disable_tqdm=True,
        max_length=size["max_len"],
        packing=False,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        bf16=False,
        fp16=False,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=load_dataset("json", data_files=str(data))["train"],
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[clock],
    )
    trainer.train()
    shutil.rmtree(output, ignore_errors=True)
    return clock.measurement()


def run(quick: bool) -> dict:
    from transformers import AutoTokenizer

    from llmft.tiny_model import build_tiny_model

    size = SIZES[quick]
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-training-"))
    try:
        model_dir = build_tiny_model(
            work / "model",
            hidden_size=size["hidden"],
            layers=size["layers"],
            heads=size["heads"],
            kv_heads=size["heads"],
            intermediate_size=size["intermediate"],
            max_positions=size["max_len"],
        )
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        data = work / "chat.jsonl"
        targets = make_dataset(data, tokenizer, size["samples"], size["max_len"], size["median_len"])
        from transformers import AutoConfig, AutoModelForCausalLM

        parameters = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model_dir)).num_parameters()
        runs: dict[str, list[dict]] = {"a. engine packed": [], "b. engine padded": [], "c. plain trl": []}
        candidates = {
            "a. engine packed": lambda: runs["a. engine packed"].append(
                run_engine(model_dir, data, work / "out", size, packing=True)
            ),
            "b. engine padded": lambda: runs["b. engine padded"].append(
                run_engine(model_dir, data, work / "out", size, packing=False)
            ),
            "c. plain trl": lambda: runs["c. plain trl"].append(run_plain_trl(model_dir, data, work / "out", size)),
        }
        wall = interleaved(
            candidates, size["repeats"], budget_s=size.get("budget_s"), max_repeats=size.get("max_repeats")
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {name: median([m["tokens_per_s"] for m in values]) for name, values in runs.items()}
    cpu_rate = {name: median([m["tokens_per_cpu_s"] for m in values]) for name, values in runs.items()}
    padding = {name: median([m["padding_fraction"] for m in values]) for name, values in runs.items()}
    packed_vs_padded = rate["a. engine packed"] / rate["b. engine padded"]
    ours_vs_trl = rate["b. engine padded"] / rate["c. plain trl"]
    lengths = sorted(targets)
    return result(
        "Training throughput (CPU): packing, padding, plain trl",
        [
            figure(
                "effective tokens/s: a. packed / b. padded",
                packed_vs_padded,
                ">= 2",
                packed_vs_padded >= 2,
                "real (non-padding) tokens trained per second, engine with packing over engine with padded batches",
            ),
            figure(
                "effective tokens/s: b. engine padded / c. plain trl",
                ours_vs_trl,
                ">= 0.98",
                ours_vs_trl >= 0.98,
                "1.0 = our layers (config, callbacks, counting) cost nothing over trl",
            ),
            figure(
                "effective tokens per CPU second: b. engine padded / c. plain trl",
                cpu_rate["b. engine padded"] / cpu_rate["c. plain trl"],
                explain="the same ratio on this process's CPU time instead of wall time: less sensitive to "
                "other processes on a shared machine (informational)",
            ),
            *[
                figure(
                    f"padding fraction, {name}",
                    padding[name],
                    explain="share of computed token slots that are padding (not a ratio of runs; lower is better)",
                )
                for name in runs
            ],
        ],
        {
            "effective_tokens_per_s": rate,
            "effective_tokens_per_cpu_s": cpu_rate,
            "padding_fraction": padding,
            "runs": runs,
            "wall_s": wall,
            "parameters": parameters,
            "sample_lengths": {
                "count": len(lengths),
                "median": lengths[len(lengths) // 2],
                "p90": lengths[int(0.9 * len(lengths))],
                "max": lengths[-1],
                "mean": sum(lengths) / len(lengths),
            },
        },
        f"Llama {parameters / 1e6:.1f}M parameters (hidden {size['hidden']}, {size['layers']} layers, "
        f"intermediate {size['intermediate']}), fp32, sdpa, CPU; {size['samples']} synthetic chats, lognormal "
        f"lengths (median {lengths[len(lengths) // 2]}, p90 {lengths[int(0.9 * len(lengths))]}, max "
        f"{lengths[-1]} tokens; max_seq_length {size['max_len']}), batch {size['batch']}, AdamW lr "
        f"{LEARNING_RATE}; {size['warmup']} warm-up step then {size['steps']['packed']} (packed) / "
        f"{size['steps']['padded']} (padded) timed steps; median of {len(wall['c. plain trl'])} alternating runs",
    )


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
