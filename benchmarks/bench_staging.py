"""Model staging: streamed (`llmft download-model`) versus download-everything-then-upload.

A multi-file model (~1 GiB: four weight shards and the small files) is served by
the Hub stand-in (tests/hub_standin.py) in its own process, with a bandwidth cap
so that downloading costs time as it does from the real Hub, and copied into a
bucket behind the shaped link of `benchmarks/netshape.py` (loopback where namespaces
are not allowed): alocal SeaweedFS bucket two ways, alternately:

- **streamed**: `download_model("hf://...")`, fetches and uploads overlapping;
- **download-then-upload**: the same fetcher downloads every file first (timed:
  "download alone"), then `upload_tree` uploads the folder (timed: "upload alone").

Figures: streamed / download-then-upload (how much the overlap saves), and
streamed / max(download alone, upload alone) (target <= 1.15: the pipeline costs
little more than its slower half).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.common import bench_bucket, figure, interleaved, median, network, result

REPO = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
REPO_ID = "bench/sharded-model"
WORKERS = 4


def _make_model(folder: Path, shard_bytes: int, shards: int) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    block = os.urandom(4 * MIB)
    for index in range(shards):
        with open(folder / f"model-{index + 1:05d}-of-{shards:05d}.safetensors", "wb") as handle:
            written = 0
            while written < shard_bytes:
                chunk = block[: min(len(block), shard_bytes - written)]
                handle.write(chunk)
                written += len(chunk)
            handle.write(index.to_bytes(8, "little"))  # distinct contents per shard
    (folder / "config.json").write_text('{"model_type": "llama"}\n')
    (folder / "tokenizer.json").write_text('{"version": "1.0"}' + " " * 2_000_000 + "\n")
    (folder / "generation_config.json").write_text("{}\n")
    return sum(p.stat().st_size for p in folder.iterdir())


@contextlib.contextmanager
def _environment(values: dict[str, str], drop: tuple[str, ...]):
    saved = {name: os.environ.get(name) for name in (*values, *drop)}
    from huggingface_hub import constants

    offline = constants.HF_HUB_OFFLINE
    try:
        for name in drop:
            os.environ.pop(name, None)
        os.environ.update(values)
        constants.HF_HUB_OFFLINE = False  # read once at import; the stand-in is local
        yield
    finally:
        constants.HF_HUB_OFFLINE = offline
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextlib.contextmanager
def _hub_process(folder: Path, bytes_per_second: float):
    """The stand-in Hub in a child process (so serving does not share this process's GIL)."""
    process = subprocess.Popen(
        [
            sys.executable,
            str(REPO / "tests" / "hub_standin.py"),
            REPO_ID,
            str(folder),
            "--bytes-per-second",
            str(bytes_per_second),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline().strip()
        if not line.startswith("endpoint "):
            raise RuntimeError(f"the Hub stand-in did not start: {line!r}")
        yield line.split(" ", 1)[1]
    finally:
        process.kill()
        process.wait(timeout=30)


def run(quick: bool) -> dict:
    from llmft.staging.download_model import download_model
    from llmft.staging.hub import HubSource
    from llmft.storage import parse_location, upload_tree
    from llmft.storage.transfer import TransferSettings, delete_tree

    shard_bytes, shards, cap, repeats = (2 * MIB, 4, 64 * MIB, 2) if quick else (256 * MIB, 4, 100 * MIB, 2)
    link, network_note = network()
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-staging-"))
    stack = contextlib.ExitStack()
    try:
        total = _make_model(work / "model", shard_bytes, shards)
        server = stack.enter_context(bench_bucket(work, link=link))
        settings = TransferSettings(workers=WORKERS)
        phases: dict[str, list[float]] = {"download alone": [], "upload alone": []}
        with (
            _hub_process(work / "model", cap) as endpoint,
            _environment(
                {**server.environment(), "HF_ENDPOINT": endpoint},
                ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN"),
            ),
        ):

            def streamed():
                download_model(
                    f"hf://{REPO_ID}",
                    "bench/streamed",
                    workers=WORKERS,
                    scratch_dir=work / "scratch",
                    settings=settings,
                )

            def download_then_upload():
                source = HubSource(REPO_ID)
                files = source.list_files()
                folder = work / "downloaded"
                started = time.perf_counter()
                with ThreadPoolExecutor(WORKERS) as pool:
                    paths = list(pool.map(lambda item: (item, source.fetch(item, work / "scratch")), files))
                for item, path in paths:
                    target = folder / item.path
                    target.parent.mkdir(parents=True, exist_ok=True)
                    os.replace(path, target)
                    source.release(item, path)
                middle = time.perf_counter()
                upload_tree(folder, parse_location("bench/sequential"), settings)
                phases["download alone"].append(middle - started)
                phases["upload alone"].append(time.perf_counter() - middle)

            def setup(name: str) -> None:
                shutil.rmtree(work / "downloaded", ignore_errors=True)
                (work / "scratch").mkdir(exist_ok=True)
                delete_tree(parse_location("bench/streamed" if name == "streamed" else "bench/sequential"))

            times = interleaved({"streamed": streamed, "download-then-upload": download_then_upload}, repeats, setup)
    finally:
        stack.close()
        shutil.rmtree(work, ignore_errors=True)

    stream, sequential = median(times["streamed"]), median(times["download-then-upload"])
    alone = {name: median(values) for name, values in phases.items()}
    slower_half = max(alone.values())
    limit = stream / slower_half
    return result(
        "Model staging: streamed vs download-then-upload",
        [
            figure(
                "streamed / download-then-upload",
                stream / sequential,
                "< 1",
                stream / sequential < 1,
                "time to stage the model; lower is better",
            ),
            figure(
                "streamed / max(download alone, upload alone)",
                limit,
                "<= 1.15",
                limit <= 1.15,
                "1.0 = fetches and uploads fully overlapped",
            ),
        ],
        {
            "model_bytes": total,
            "link": link.as_dict() if link else None,
            "files": shards + 3,
            "source_cap_bytes_per_s": cap,
            "repeats": repeats,
            "streamed_s": stream,
            "download_then_upload_s": sequential,
            "download_alone_s": alone["download alone"],
            "upload_alone_s": alone["upload alone"],
            "all_runs_s": times,
            "phase_runs_s": phases,
        },
        f"{network_note}; {total / MIB:.0f} MiB in {shards} shards + 3 small files, Hub stand-in capped at "
        f"{cap / MIB:.0f} MiB/s in its own process, {WORKERS} workers, median of {repeats} alternating runs",
    )


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
