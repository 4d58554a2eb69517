"""Checkpoint streaming: upload throughput and CPU cost, and what background sync costs a training run.

The S3 server sits behind a shaped link (`benchmarks/netshape.py`: its own network namespace,
capacity capped with tc, a round trip and a per-connection cap added by a relay), pinned to its
own core; where namespaces are not allowed it runs on loopback and the results say so.

1. **Upload throughput and CPU.** A multi-file checkpoint (four weight shards, an optimizer
   state, small files) goes to the bucket three ways, alternately:
   - **ours**: what the background sync does per checkpoint (`upload_verified_tree`: sha256
     of every file once, sent as the checksum the server verifies, parallel multipart upload,
     manifest last, a HEAD and one listing to confirm), with the sync's own transfer settings;
   - **sequential single-stream**: one `put_object` per file, one after another;
   - **parallel raw boto3**: every file at once with `upload_file` on a plain
     `boto3.client("s3", endpoint_url=...)` with boto3's defaults (no manifest, no
     verification of ours): what a user writing raw boto3 gets.
   Throughput figures are ratios of wall times; the CPU figure compares this process's CPU
   seconds (all threads; the server is another process) per GiB, ours over raw boto3.
2. **Training overhead.** A small Llama trains with a save every few steps, with
   `CheckpointSync`'s callback (uploads running in the background) and without it (the same
   local saves); steps/s on versus off. The training thread runs on its own core (one torch
   thread), the sync's upload threads on another, the S3 server on its own: the figure is
   what the sync costs the training loop (staging, the GIL), not a fight for the only core.
   `finish()` is not timed: it waits for the last upload after training, which the off case
   never does.

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

from benchmarks.common import SERVER_CPUS, bench_bucket, figure, interleaved, median, network, result
from benchmarks.netshape import pin_to

MIB = 1024 * 1024
GIB = 1024 * MIB


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


def _plain_boto3_client():
    """boto3 as a user would call it: only the endpoint and credentials, every other setting boto3's default."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=os.environ["BUCKET_STORAGE_HOST"],
        aws_access_key_id=os.environ["BUCKET_STORAGE_ACCESS_KEY"],
        aws_secret_access_key=os.environ["BUCKET_STORAGE_SECRET_KEY"],
        region_name="us-east-1",
    )


def _upload_throughput(work: Path, quick: bool) -> dict:
    from llmft.storage import parse_location
    from llmft.storage.client import s3_client
    from llmft.storage.transfer import delete_tree
    from llmft.sync import background_settings
    from llmft.sync.remote_ops import upload_verified_tree

    shard_bytes, shards, repeats = (4 * MIB, 4, 1) if quick else (64 * MIB, 4, 3)
    folder = work / "checkpoint-100"
    total = _make_checkpoint(folder, shard_bytes, shards)
    files = sorted(p for p in folder.iterdir() if p.is_file())
    client = s3_client()
    raw_client = _plain_boto3_client()
    settings = background_settings()
    cpu: dict[str, list[float]] = {"ours": [], "sequential single-stream": [], "parallel raw boto3": []}

    def ours():
        upload_verified_tree(folder, parse_location("bench/ours/checkpoint-100"), settings, label="bench upload")

    def sequential():
        for path in files:
            with open(path, "rb") as handle:
                client.put_object(Bucket="bench", Key=f"sequential/checkpoint-100/{path.name}", Body=handle)

    def parallel_raw():
        with ThreadPoolExecutor(max_workers=len(files)) as pool:
            list(
                pool.map(
                    lambda path: raw_client.upload_file(str(path), "bench", f"raw/checkpoint-100/{path.name}"), files
                )
            )

    def cpu_timed(name, action):
        def timed():
            started = time.process_time()
            action()
            cpu[name].append(time.process_time() - started)

        return timed

    prefixes = {"ours": "bench/ours", "sequential single-stream": "bench/sequential", "parallel raw boto3": "bench/raw"}

    def setup(name: str) -> None:
        delete_tree(parse_location(prefixes[name]))  # no "unchanged, skipped" shortcuts

    candidates = {"ours": ours, "sequential single-stream": sequential, "parallel raw boto3": parallel_raw}
    times = interleaved({name: cpu_timed(name, action) for name, action in candidates.items()}, repeats, setup)
    return {
        "bytes": total,
        "files": len(files),
        "repeats": repeats,
        "workers": settings.workers,
        "runs_s": times,
        "median_s": {name: median(values) for name, values in times.items()},
        "cpu_runs_s": cpu,
        "cpu_s_per_gib": {name: median(values) * GIB / total for name, values in cpu.items()},
    }


def _training_overhead(work: Path, quick: bool) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    from llmft.sync import CheckpointSync

    hidden, layers, steps, save_steps, repeats = (64, 2, 12, 4, 2) if quick else (256, 4, 40, 10, 3)
    config = LlamaConfig(
        vocab_size=4096,
        hidden_size=hidden,
        intermediate_size=hidden * 3,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=128,
    )
    ids = torch.randint(3, 4000, (256, 64), generator=torch.Generator().manual_seed(0))
    dataset = [{"input_ids": row, "labels": row.clone()} for row in ids]
    train_seconds: dict[str, list[float]] = {"sync on": [], "sync off": []}
    thread_cpu: dict[str, list[float]] = {"sync on": [], "sync off": []}  # the training thread's own CPU time
    checkpoint_bytes = [0]

    def one(name: str) -> None:
        output = work / "train" / name.replace(" ", "-")
        torch.set_num_threads(1)
        shutil.rmtree(output, ignore_errors=True)
        torch.manual_seed(0)
        model = LlamaForCausalLM(config)
        args = TrainingArguments(
            output_dir=str(output),
            max_steps=steps,
            save_strategy="steps",
            save_steps=save_steps,
            save_total_limit=2,
            per_device_train_batch_size=8,
            logging_steps=10_000,
            report_to=[],
            use_cpu=True,
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        sync = None
        callbacks = []
        if name == "sync on":
            sync = CheckpointSync(f"bench/train-{secrets.token_hex(4)}", output, save_total_limit=2)
            callbacks.append(sync.callback())
            sync.start_background()
            _pin_thread("llmft-checkpoint-sync", sync_cpus)  # its transfer threads start from it and inherit
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=callbacks)
        started, started_cpu = time.perf_counter(), time.thread_time()
        trainer.train()
        train_seconds[name].append(time.perf_counter() - started)
        thread_cpu[name].append(time.thread_time() - started_cpu)
        newest = output / f"checkpoint-{steps}"
        checkpoint_bytes[0] = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file())
        if sync is not None:
            trainer.save_model(str(output / "checkpoint-final"))
            sync.finish()

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus = {int(c) for c in SERVER_CPUS.split(",")}
    training_cpus = {c for c in cpus if c not in server_cpus}
    sync_cpus = server_cpus if training_cpus else set()
    saved_affinity = pin_to({min(training_cpus)}) if training_cpus else None
    try:
        _train_alternately(one, repeats, train_seconds, thread_cpu)
    finally:
        if saved_affinity is not None:
            os.sched_setaffinity(0, saved_affinity)
    return {
        "steps": steps,
        "save_steps": save_steps,
        "checkpoint_bytes": checkpoint_bytes[0],
        "model": f"llama hidden {hidden}, {layers} layers, vocab 4096",
        "repeats": repeats,
        "training_cpus": sorted(training_cpus)[:1],
        "sync_cpus": sorted(sync_cpus),
        "train_runs_s": train_seconds,
        "training_thread_cpu_s": thread_cpu,
        "training_thread_cpu_per_step_s": {name: median(values) / steps for name, values in thread_cpu.items()},
        "steps_per_s": {name: steps / median(values) for name, values in train_seconds.items()},
    }


def _pin_thread(name: str, cpus: set[int]) -> None:
    import threading

    if not cpus:
        return
    for thread in threading.enumerate():
        if thread.name == name and thread.native_id is not None:
            os.sched_setaffinity(thread.native_id, cpus)


def _train_alternately(one, repeats: int, train_seconds: dict, thread_cpu: dict) -> None:
    one("sync off")  # warm-up: imports, allocator, page cache
    train_seconds["sync off"].clear()
    thread_cpu["sync off"].clear()
    for index in range(repeats):
        for name in ("sync on", "sync off") if index % 2 == 0 else ("sync off", "sync on"):
            one(name)


def run(quick: bool) -> dict:
    link, network_note = network()
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-sync-"))
    try:
        with bench_bucket(work, link=link):
            upload = _upload_throughput(work, quick)
            shutil.rmtree(work / "checkpoint-100", ignore_errors=True)
            overhead = _training_overhead(work, quick)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    t = upload["median_s"]
    versus_raw = t["parallel raw boto3"] / t["ours"]
    versus_sequential = t["sequential single-stream"] / t["ours"]
    cpu = upload["cpu_s_per_gib"]
    cpu_ratio = cpu["ours"] / cpu["parallel raw boto3"]
    rate = overhead["steps_per_s"]
    on_off = rate["sync on"] / rate["sync off"]
    per_step = overhead["training_thread_cpu_per_step_s"]
    thread_ratio = per_step["sync off"] / per_step["sync on"]
    figures = []
    if link is not None:
        of_link = upload["bytes"] / t["ours"] / link.capacity
        figures.append(
            figure(
                "verified upload throughput / link capacity",
                of_link,
                ">= 0.85",
                of_link >= 0.85,
                "1.0 = the verified upload fills the link",
            )
        )
    figures += [
        figure(
            "throughput ours / parallel raw boto3",
            versus_raw,
            ">= 0.95",
            versus_raw >= 0.95,
            "1.0 = as fast as the raw parallel upload, although ours also hashes, writes a manifest and verifies",
        ),
        figure(
            "throughput ours / sequential single-stream",
            versus_sequential,
            ">= 3" if link is not None else "> 1",
            versus_sequential >= 3 if link is not None else versus_sequential > 1,
            "what parallel transfers gain over uploading the files one by one in one stream",
        ),
        figure(
            "CPU seconds per GiB: ours / raw boto3",
            cpu_ratio,
            "<= 1.15",
            cpu_ratio <= 1.15,
            f"this process's CPU per GiB sent: ours {cpu['ours']:.2f} s, plain boto3 "
            f"{cpu['parallel raw boto3']:.2f} s, one stream of put_object on our client "
            f"{cpu['sequential single-stream']:.2f} s",
        ),
        figure(
            "steps/s with background sync / without",
            on_off,
            ">= 0.95",
            on_off >= 0.95,
            "1.0 = uploading checkpoints in the background costs training nothing",
        ),
        figure(
            "training thread CPU seconds per step: without sync / with",
            thread_ratio,
            explain="the training thread's own CPU time (staging included), less sensitive to other processes "
            "on a shared machine than wall time; waits for the GIL are not in it (informational)",
        ),
    ]
    return result(
        "Checkpoint streaming: upload throughput, CPU cost and training overhead",
        figures,
        {"upload": upload, "training": overhead, "link": link.as_dict() if link else None},
        f"{network_note}; {upload['bytes'] / MIB:.0f} MiB checkpoint in {upload['files']} files, "
        f"{upload['workers']} transfer workers, median of {upload['repeats']} alternating runs; training: "
        f"{overhead['model']}, {overhead['steps']} steps, a save every {overhead['save_steps']} "
        f"({overhead['checkpoint_bytes'] / MIB:.0f} MiB each), CPU, training thread on CPU "
        f"{overhead['training_cpus']}, upload threads and server on {overhead['sync_cpus'] or 'any'}, median of "
        f"{overhead['repeats']} alternating runs",
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
