"""Resume latency: process start to the first training step, resuming from a ~1 GiB remote checkpoint.

Setup (untimed): a Llama of ~92M parameters (random weights, built offline) trains one
step with `run_conf.checkpoints_remote` pointing at a SeaweedFS bucket behind the shaped
link of `benchmarks/netshape.py` (loopback where namespaces are not allowed), so the
engine uploads `checkpoint-1` (weights + AdamW state, ~1 GiB) and its final outputs.
The run-complete marker is then deleted: the bucket now looks like a run whose pod died
after its last checkpoint. Then, alternately:

- **resume**: a fresh Python process (`python -m benchmarks.bench_resume CONFIG STAMP`,
  which runs `llmft sft CONFIG`'s own entry, `run_config`, plus a callback) with an empty local output
  folder; timed from just before the process is started to the moment the Trainer is
  about to run its first step after the restored one (`on_step_begin`), where the child
  exits. Everything a restarted pod does is inside: interpreter start, imports, config
  and data checks, the verified parallel download of the checkpoint, model load, the
  Trainer loading the checkpoint's weights, optimizer, scheduler and RNG state;
- **download + load alone** (the baseline), in the benchmark's own process (imports
  already done): `download_tree` of the same checkpoint (the engine's downloader), then
  `AutoModelForCausalLM.from_pretrained` of the downloaded folder.

Figure: resume / (download alone + model load alone), target <= 1.15. The child also
hands back the engine's start-up time line (`llmft.timeline`: interpreter, imports, the
restore's span, data, model, optimizer, first step), so the gap can be split into phases.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import bench_bucket, figure, interleaved, median, network, result

REPO = Path(__file__).resolve().parent.parent
GIB = 1024**3
REMOTE = "bench/experiments/resume-run"

# full: 92M parameters -> 368 MB of fp32 weights + 736 MB of AdamW moments, ~1.03 GiB per checkpoint.
SIZES = {
    True: dict(hidden=64, layers=2, heads=4, intermediate=128, repeats=1),
    False: dict(hidden=768, layers=12, heads=12, intermediate=2304, repeats=3),
}


def write_chat(path: Path) -> Path:
    """Eight short arithmetic chats: enough to train and resume, nothing to measure."""
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} + {i}?"},
                {"role": "assistant", "content": f"{2 * i}."},
            ]
        }
        for i in range(8)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def resume_config(model_dir: Path, data: Path, output: Path, max_steps: int, remote: str = REMOTE) -> dict:
    """The resumed run's SFT config (also what tests/test_resume_startup.py relaunches)."""
    return {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(data)}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(output),
            "learning_rate": 1e-4,
            "max_steps": max_steps,
            "save_steps": 1,
            "logging_steps": 1,
            "report_to": [],
        },
        "batchsize_conf": {"total_train_batch_size": 2, "max_per_device_train_batch_size": 2},
        "peft_conf": {"peft_type": "NO_PEFT"},
        "run_conf": {
            "model": str(model_dir),
            "checkpoints_remote": remote,
            "model_args": {"dtype": "fp32", "attn_implementation": "sdpa"},
        },
        "sft_args": {"max_seq_length": 64},
    }


class _FirstStep:
    """Stops the resumed process at its first training step and writes what it saw.

    Duck-typed rather than a `TrainerCallback` subclass so that this module does not import
    transformers before the engine's entry starts the restore (any event it lacks is a no-op).
    """

    def __init__(self, stamp_path: str):
        self.stamp_path = stamp_path
        self.stamps: dict = {}

    def __getattr__(self, name: str):
        if name.startswith("on_"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_train_begin(self, args, state, control, **kwargs):
        self.stamps["train_begin"] = time.time()
        self.stamps["resumed_step"] = state.global_step

    def on_step_begin(self, args, state, control, **kwargs):
        from llmft import timeline

        self.stamps["first_step"] = time.time()
        self.stamps["global_step"] = state.global_step
        timeline.mark("first_step")
        self.stamps["timeline"] = timeline.as_dict()
        Path(self.stamp_path).write_text(json.dumps(self.stamps))
        os._exit(0)  # measured what we came for; nothing after this step matters here


def _child(config_path: str, stamp_path: str) -> None:
    """The resumed process: `llmft sft CONFIG`'s entry with a callback that stops at the first step."""
    from llmft.commands.finetune import run_config
    from llmft.finetune.config import load_config
    from llmft.log import setup_logging

    setup_logging()
    run_config(load_config(config_path), program=True, callbacks=[_FirstStep(stamp_path)])
    raise SystemExit("the run ended without reaching a training step")


def run(quick: bool) -> dict:
    import boto3  # noqa: F401 - imported here so that its import is not in the first baseline timing
    import torch
    from transformers import AutoModelForCausalLM

    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft
    from llmft.storage import download_tree, parse_location
    from llmft.storage.transfer import delete_object
    from llmft.sync import RUN_COMPLETE_MARKER, background_settings
    from llmft.tiny_model import build_tiny_model

    size = SIZES[quick]
    link, network_note = network()
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-resume-"))
    try:
        with bench_bucket(work, link=link):
            model_dir = build_tiny_model(
                work / "model",
                hidden_size=size["hidden"],
                layers=size["layers"],
                heads=size["heads"],
                kv_heads=size["heads"],
                intermediate_size=size["intermediate"],
                max_positions=256,
            )
            data = write_chat(work / "chat.jsonl")
            # One step, checkpoint-1 streamed to the bucket; then the marker goes: a pod that died after its save.
            if run_sft(load_config(resume_config(model_dir, data, work / "first", max_steps=1))) != 0:
                raise RuntimeError("the run that writes the checkpoint failed")
            shutil.rmtree(work / "first")
            delete_object(parse_location(f"{REMOTE}/{RUN_COMPLETE_MARKER}"))
            checkpoint = parse_location(f"{REMOTE}/checkpoint-1")
            config_path = work / "resume.json"
            config_path.write_text(json.dumps(resume_config(model_dir, data, work / "resumed", max_steps=2)))
            checkpoint_bytes = [0]

            child_stamps: list[dict] = []
            alone_runs: dict[str, list[float]] = {"download alone": [], "model load alone": []}

            def resume():
                stamp = work / "stamp.json"
                started = time.time()
                subprocess.run(
                    [sys.executable, "-m", "benchmarks.bench_resume", str(config_path), str(stamp)],
                    cwd=REPO,
                    check=True,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                stamps = json.loads(stamp.read_text())
                if stamps["resumed_step"] != 1:
                    raise RuntimeError(f"the child did not resume from checkpoint-1: {stamps}")
                child_stamps.append(
                    {key: (value - started if isinstance(value, float) else value) for key, value in stamps.items()}
                )

            def download_and_load():
                target = work / "baseline" / "checkpoint-1"
                started = time.perf_counter()
                download_tree(checkpoint, target, background_settings(), label="download checkpoint-1")
                middle = time.perf_counter()
                AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, attn_implementation="sdpa")
                alone_runs["download alone"].append(middle - started)
                alone_runs["model load alone"].append(time.perf_counter() - middle)
                checkpoint_bytes[0] = sum(p.stat().st_size for p in target.rglob("*") if p.is_file())

            def setup(name: str) -> None:  # nothing local survives between attempts: like a new pod
                shutil.rmtree(work / "resumed", ignore_errors=True)
                shutil.rmtree(work / "baseline", ignore_errors=True)

            times = interleaved({"resume": resume, "download + load": download_and_load}, size["repeats"], setup)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    resume_s = median([stamps["first_step"] for stamps in child_stamps])
    alone = {name: median(values) for name, values in alone_runs.items()}
    baseline_s = alone["download alone"] + alone["model load alone"]
    ratio = resume_s / baseline_s
    child = {
        name: median([s["timeline"]["seconds"][name] for s in child_stamps if name in s["timeline"]["seconds"]])
        for name in child_stamps[0]["timeline"]["seconds"]
    }
    shown = ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in child.items())
    return result(
        "Resume latency from a remote checkpoint",
        [
            figure(
                "process start to first step / (download alone + model load alone)",
                ratio,
                "<= 1.15",
                ratio <= 1.15,
                "1.0 = a restarted run reaches its first step as fast as fetching and loading the checkpoint alone",
            )
        ],
        {
            "checkpoint_bytes": checkpoint_bytes[0],
            "resume_to_first_step_s": resume_s,
            "link": link.as_dict() if link else None,
            "download_alone_s": alone["download alone"],
            "model_load_alone_s": alone["model load alone"],
            "child_timeline_s_from_process_start": child,
            "child_runs": child_stamps,
            "baseline_runs": alone_runs,
            "wall_s": times,
            "repeats": size["repeats"],
        },
        f"{network_note}; {checkpoint_bytes[0] / GIB:.2f} GiB checkpoint (Llama hidden {size['hidden']}, "
        f"{size['layers']} layers: fp32 weights + AdamW state); resume = new process to the Trainer's first step "
        f"(median {resume_s:.1f} s; the engine's time line from process start: {shown}); baseline = "
        f"download_tree {alone['download alone']:.1f} s + from_pretrained {alone['model load alone']:.1f} s in a "
        f"warm process; median of {size['repeats']} alternating runs",
    )


if __name__ == "__main__":
    _child(sys.argv[1], sys.argv[2])
