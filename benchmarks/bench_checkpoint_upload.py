"""Checkpoint streaming: upload throughput, and what background sync costs a training run.

1. **Upload throughput.** A multi-file checkpoint (~1 GiB: four weight shards, an
   optimizer state, small files) goes to a local SeaweedFS bucket three ways, alternately:
   - **ours**: what the background sync does per checkpoint (`upload_verified_tree`:
     hash, parallel multipart upload, manifest last, read-back verification), with the
     sync's own transfer settings;
   - **sequential single-stream**: one `put_object` per file, one after another;
   - **parallel raw boto3**: every file at once with boto3's multipart `upload_file`
     (no hashing, no manifest, no verification): the practical limit of this machine.
2. **Training overhead.** A small Llama trains with a save every few steps, with
   `CheckpointSync`'s callback (uploads running in the background) and without it
   (the same local saves); steps/s on versus off. `finish()` is not timed: it waits for
   the last upload after training, which the off case never does.

Every figure is a ratio of medians of runs measured alternately in one process.
"""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import bench_bucket, figure, interleaved, median, result

MIB = 1024 * 1024


def _make_checkpoint(folder: Path, shard_bytes: int, shards: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4 * MIB)

    def write(name: str, size: int, salt: int) -> None:
        with open(folder / name, "wb") as handle:
            written = 0
            while written < size:
                chunk = block[: min(len(block), size - written)]
                handle.write(chunk)
                written += len(chunk)
            handle.write(salt.to_bytes(8, "little"))  # distinct contents per file

    for index in range(shards):
        write(f"model-{index + 1:05d}-of-{shards:05d}.safetensors", shard_bytes, index)
    write("optimizer.pt", shard_bytes, 99)
    for name, size in (("scheduler.pt", 1500), ("rng_state.pth", 14000), ("training_args.bin", 6000)):
        write(name, size, 7)
    (folder / "trainer_state.json").write_text('{"global_step": 100}\n')
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}' + " " * 2_000_000 + "\n")
    return sum(p.stat().st_size for p in folder.iterdir())


def _upload_throughput(work: Path, quick: bool) -> dict:
    from llmft.storage import parse_location
    from llmft.storage.client import s3_client
    from llmft.storage.transfer import delete_tree
    from llmft.sync import background_settings
    from llmft.sync.remote_ops import upload_verified_tree

    shard_bytes, shards, repeats = (8 * MIB, 4, 2) if quick else (200 * MIB, 4, 2)
    folder = work / "checkpoint-100"
    total = _make_checkpoint(folder, shard_bytes, shards)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    client = s3_client()
    settings = background_settings()

    def ours():
        upload_verified_tree(folder, parse_location("bench/ours/checkpoint-100"), settings, label="bench upload")

    def sequential():
        for path in files:
            with open(path, "rb") as handle:
                client.put_object(Bucket="bench", Key=f"sequential/checkpoint-100/{path.name}", Body=handle)

    def parallel_raw():
        with ThreadPoolExecutor(max_workers=len(files)) as pool:
            list(pool.map(lambda path: client.upload_file(str(path), "bench", f"raw/checkpoint-100/{path.name}"),
                          files))

    prefixes = {"ours": "bench/ours", "sequential single-stream": "bench/sequential",
                "parallel raw boto3": "bench/raw"}

    def setup(name: str) -> None:
        delete_tree(parse_location(prefixes[name]))  # no "unchanged, skipped" shortcuts

    times = interleaved({"ours": ours, "sequential single-stream": sequential, "parallel raw boto3": parallel_raw},
                        repeats, setup)
    return {"bytes": total, "files": len(files), "repeats": repeats, "workers": settings.workers,
            "runs_s": times, "median_s": {name: median(values) for name, values in times.items()}}


def _training_overhead(work: Path, quick: bool) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from llmft.sync import CheckpointSync

    hidden, layers, steps, save_steps, repeats = (64, 2, 12, 4, 2) if quick else (256, 4, 40, 10, 3)
    config = LlamaConfig(vocab_size=4096, hidden_size=hidden, intermediate_size=hidden * 3,
                         num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128)
    ids = torch.randint(3, 4000, (256, 64), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row.clone()} for row in ids]
    train_seconds: dict[str, list[float]] = {"sync on": [], "sync off": []}
    checkpoint_bytes = [0]

    def one(name: str) -> None:
        output = work / "train" / name.replace(" ", "-")
        shutil.rmtree(output, ignore_errors=True)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        args = TrainingArguments(output_dir=str(output), max_steps=steps, save_strategy="steps",
                                 save_steps=save_steps, save_total_limit=2, per_device_train_batch_size=8,
                                 logging_steps=10_000, report_to=[], use_cpu=True, disable_tqdm=True,
                                 dataloader_num_workers=0)
        sync = None
        callbacks = []
        if name == "sync on":
            sync = CheckpointSync(f"bench/train-{secrets.token_hex(4)}", output, save_total_limit=2)
            callbacks.append(sync.callback())
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=callbacks)
        started = time.perf_counter()
        trainer.train()
        train_seconds[name].append(time.perf_counter() - started)
        newest = output / f"checkpoint-{steps}"
        checkpoint_bytes[0] = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
        if sync is not None:
            trainer.save_model(str(output / "checkpoint-final"))
            sync.finish()

    one("sync off")  # warm-up: imports, allocator, page cache
    train_seconds["sync off"].clear()
    for index in range(repeats):
        for name in (("sync on", "sync off") if index % 2 == 0 else ("sync off", "sync on")):
            one(name)
    return {"steps": steps, "save_steps": save_steps, "checkpoint_bytes": checkpoint_bytes[0],
            "model": f"llama hidden {hidden}, {layers} layers, vocab 4096", "repeats": repeats,
            "train_runs_s": train_seconds,
            "steps_per_s": {name: steps / median(values) for name, values in train_seconds.items()}}


def run(quick: bool) -> dict:
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-sync-"))
    try:
        with bench_bucket(work):
            upload = _upload_throughput(work, quick)
            shutil.rmtree(work / "checkpoint-100", ignore_errors=True)
            overhead = _training_overhead(work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    t = upload["median_s"]
    versus_raw = t["parallel raw boto3"] / t["ours"]
    versus_sequential = t["sequential single-stream"] / t["ours"]
    rate = overhead["steps_per_s"]
    on_off = rate["sync on"] / rate["sync off"]
    return result(
        "Checkpoint streaming: upload throughput and training overhead",
        [
            figure("throughput ours / parallel raw boto3", versus_raw, ">= 0.9", versus_raw >= 0.9,
                   "1.0 = as fast as the raw parallel upload, although ours also hashes, writes a manifest "
                   "and verifies"),
            figure("throughput ours / sequential single-stream", versus_sequential, "> 1", versus_sequential > 1,
                   "how much faster than uploading the files one by one in one stream"),
            figure("steps/s with background sync / without", on_off, ">= 0.98", on_off >= 0.98,
                   "1.0 = uploading checkpoints in the background costs training nothing"),
        ],
        {"upload": upload, "training": overhead},
        f"{upload['bytes'] / MIB:.0f} MiB checkpoint in {upload['files']} files to a local SeaweedFS, "
        f"{upload['workers']} transfer workers, median of {upload['repeats']} alternating runs; training: "
        f"{overhead['model']}, {overhead['steps']} steps, a save every {overhead['save_steps']} "
        f"({overhead['checkpoint_bytes'] / MIB:.0f} MiB each), CPU, median of {overhead['repeats']} alternating runs",
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
