"""`make gpu-check`: what the engine does on one GPU, in at most 8 minutes, as one JSON + Markdown report.

    python -m benchmarks.gpu_check --out DIR          # one H100/H200 (bf16)
    python -m benchmarks.gpu_check --out DIR --cpu    # tiny sizes on the CPU: checks the script runs

On a bare GPU machine (torch, transformers, accelerate and peft installed) first install the
wheels `make gpu-wheels` built: `pip install --no-deps .whl/*.whl`. The checks, in order:

1. **matmul peak**: a bf16 GEMM measured on the spot (the denominator of every MFU here, instead
   of a data sheet figure the card may not reach);
2. **throughput**: bf16 SFT of a Llama-architecture model with random weights (~0.8B parameters:
   hidden 2048, 16 layers), through the engine (`run_sft`), on synthetic chats with lognormal
   lengths: packed (flash-attention varlen where flash-attn is installed, else sdpa with the
   block-diagonal mask) versus padded, full fine-tuning and LoRA. A step clock (the one of
   `bench_training`) times the steps after the warm-up; effective tokens/s counts real tokens only.
   MFU = the engine's FLOPs per token (summary.json's throughput block) x effective tokens/s /
   the measured peak; target >= 45 % for the full packed run;
3. **DeepSpeed ZeRO-3**: one single-GPU run under `llmft train` with the auto-deepspeed-stage3
   preset, where DeepSpeed imports; otherwise the report says it was skipped and why;
4. **resume equality**: with `training_args.full_determinism`, a run of 4 steps and a run resumed
   from the first one's checkpoint-2 must end with identical losses and identical weights.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
MFU_TARGET = 0.45

SIZES = {
    "gpu": dict(
        hidden=2048,
        layers=16,
        heads=16,
        intermediate=5632,
        max_len=2048,
        median_len=400,
        samples=1200,
        batch=8,
        warmup=2,
        steps=8,
        dtype="bf16",
        peak_n=8192,
        resume_hidden=512,
        resume_layers=4,
    ),
    "cpu": dict(
        hidden=64,
        layers=2,
        heads=4,
        intermediate=128,
        max_len=96,
        median_len=24,
        samples=48,
        batch=4,
        warmup=1,
        steps=2,
        dtype="fp32",
        peak_n=256,
        resume_hidden=64,
        resume_layers=2,
    ),
}


def matmul_peak(cpu: bool, n: int) -> dict:
    """FLOP/s of a square GEMM (bf16 on the GPU, fp32 on the CPU), best of a few timed rounds."""
    import torch

    device, dtype = ("cpu", torch.float32) if cpu else ("cuda", torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(5):
        if not cpu:
            torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(10):
            a @ b
        if not cpu:
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - started) / 10)
    return {"n": n, "dtype": str(dtype), "seconds_per_matmul": best, "flops_per_s": 2 * n**3 / best}


def _config(
    model_dir: Path,
    data: Path,
    output: Path,
    size: dict,
    packing: bool,
    lora: bool,
    steps: int,
    attention: str,
    **extra,
) -> dict:
    config = {
        "method": "sft",
        "data_conf": {"training_data": {"datasets": [{"path": str(data)}]}, "chat_template_name": "keep-original"},
        "training_args": {
            "output_dir": str(output),
            "learning_rate": 1e-4,
            "lr_scheduler_type": "constant",
            "max_steps": steps,
            "logging_steps": 1,
            "save_strategy": "no",
            "report_to": [],
            "seed": 42,
        },
        "batchsize_conf": {"total_train_batch_size": size["batch"], "max_per_device_train_batch_size": size["batch"]},
        "peft_conf": {"peft_type": "LORA", "peft_kwargs": {"r": 16, "lora_alpha": 32}}
        if lora
        else {"peft_type": "NO_PEFT"},
        "run_conf": {
            "model": str(model_dir),
            "resume_from_checkpoint": "none",
            "model_args": {"dtype": size["dtype"], "attn_implementation": attention},
        },
        "sft_args": {"max_seq_length": size["max_len"], "packing": packing, "train_on_completions_only": False},
    }
    for section, values in extra.items():
        config[section] = {**config.get(section, {}), **values}
    return config


def _attention(cpu: bool) -> str:
    if cpu:
        return "sdpa"
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "sdpa"
    return "flash_attention_2"


def throughput_runs(work: Path, model_dir: Path, data: Path, size: dict, peak: float, attention: str) -> dict:
    from benchmarks.bench_training import step_clock
    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft

    runs = {}
    for lora in (False, True):
        for packing in (True, False):
            name = f"{'lora' if lora else 'full'} {'packed' if packing else 'padded'}"
            output = work / name.replace(" ", "-")
            clock = step_clock(size["warmup"])
            config = _config(model_dir, data, output, size, packing, lora, size["warmup"] + size["steps"], attention)
            if run_sft(load_config(config), callbacks=[clock]) != 0:
                raise RuntimeError(f"{name}: run_sft failed")
            measured = clock.measurement()
            block = json.loads((output / "summary.json").read_text())["throughput"]
            flops_per_token = block["flops_per_token"]
            measured["flops_per_token"] = flops_per_token
            measured["mfu"] = flops_per_token * measured["tokens_per_s"] / peak if flops_per_token else None
            measured["summary_mfu_whole_run"] = block["mfu"]
            measured["summary_throughput"] = block
            runs[name] = measured
            shutil.rmtree(output, ignore_errors=True)
    return runs


def deepspeed_step(work: Path, model_dir: Path, data: Path, size: dict, cpu: bool) -> dict:
    """One ZeRO-3 step under `llmft train`, single process; skipped without a GPU or DeepSpeed."""
    if cpu:
        return {"status": "skipped", "why": "DeepSpeed ZeRO-3 needs a GPU (--cpu)"}
    probe = subprocess.run([sys.executable, "-c", "import deepspeed"], capture_output=True, text=True)
    if probe.returncode != 0:
        return {"status": "skipped", "why": "DeepSpeed does not import here: " + probe.stderr.strip()[-300:]}
    from llmft.finetune.distributed import ZERO3, write_launch_files

    launch_dir = work / "launch"
    write_launch_files(ZERO3, launch_dir, num_processes=1, mixed_precision="bf16")
    output = work / "zero3"
    config = _config(
        model_dir,
        data,
        output,
        size,
        packing=True,
        lora=False,
        steps=2,
        attention="sdpa",
        launch_conf={
            "num_processes": 1,
            "distributed_type": ZERO3,
            "accelerate_config": str(launch_dir / "accelerate_config.yaml"),
        },
    )
    path = work / "zero3.json"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "llmft", "train", str(path)], capture_output=True, text=True, cwd=work, timeout=300
    )
    result = {
        "status": "ok" if done.returncode == 0 else "failed",
        "seconds": round(time.perf_counter() - started, 1),
        "exit_status": done.returncode,
    }
    if done.returncode == 0:
        summary = json.loads((output / "summary.json").read_text())
        result.update(steps=summary["steps"], final_train_loss=summary["final_train_loss"])
    else:
        result["log_tail"] = (done.stdout + done.stderr)[-2000:]
    shutil.rmtree(output, ignore_errors=True)
    return result


def resume_equality(work: Path, data: Path, size: dict, attention: str) -> dict:
    """Deterministic mode: 4 steps straight versus 2 steps, then resumed from checkpoint-2 to 4."""
    from safetensors.torch import load_file

    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft
    from llmft.tiny_model import build_tiny_model

    model_dir = build_tiny_model(
        work / "resume-model",
        hidden_size=size["resume_hidden"],
        layers=size["resume_layers"],
        heads=4,
        kv_heads=4,
        intermediate_size=size["resume_hidden"] * 3,
        max_positions=size["max_len"],
    )
    straight, resumed = work / "straight", work / "resumed"
    determinism = {"full_determinism": True, "save_strategy": "steps", "save_steps": 2}
    run_sft(load_config(_config(model_dir, data, straight, size, True, False, 4, attention, training_args=determinism)))
    run_sft(
        load_config(
            _config(
                model_dir,
                data,
                resumed,
                size,
                True,
                False,
                4,
                attention,
                training_args=determinism,
                run_conf={"resume_from_checkpoint": str(straight / "checkpoint-2")},
            )
        )
    )

    def losses(folder: Path) -> dict:
        rows = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
        return {row["step"]: row["loss"] for row in rows if "loss" in row and row.get("step", 0) > 2}

    def weights(folder: Path) -> dict:
        found = {}
        for path in sorted((folder / "checkpoint-final").glob("*.safetensors")):
            found.update(load_file(str(path)))
        return found

    a, b = weights(straight), weights(resumed)
    same_weights = a.keys() == b.keys() and all(bool((a[k] == b[k]).all()) for k in a)
    la, lb = losses(straight), losses(resumed)
    return {
        "status": "ok" if same_weights and la == lb and la else "failed",
        "identical_weights": same_weights,
        "losses_after_resume": {"straight": la, "resumed": lb},
    }


def environment(cpu: bool) -> dict:
    import torch
    import transformers

    info = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": "cpu" if cpu else torch.cuda.get_device_name(),
        "cuda": torch.version.cuda,
    }
    for name in ("trl", "peft", "accelerate", "datasets", "flash_attn", "deepspeed"):
        try:
            info[name] = __import__(name).__version__
        except Exception as error:  # noqa: BLE001 - reported, not fatal
            info[name] = f"not available ({type(error).__name__})"
    return info


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [
        f"# GPU check ({report['mode']})",
        "",
        f"{env['device']}; torch {env['torch']}, transformers {env['transformers']}, trl {env['trl']}, "
        f"flash-attn {env['flash_attn']}, DeepSpeed {env['deepspeed']}; {report['model']}; "
        f"{report['seconds']:.0f} s in all.",
        "",
        f"Measured matmul peak: {report['peak']['flops_per_s'] / 1e12:.1f} TFLOP/s ({report['peak']['dtype']}, "
        f"n={report['peak']['n']}).",
        "",
        "| run | effective tokens/s | padding | MFU (measured peak) |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, run in report["throughput"].items():
        mfu = f"{run['mfu']:.1%}" if run["mfu"] is not None else "-"
        lines.append(f"| {name} | {run['tokens_per_s']:.0f} | {run['padding_fraction']:.1%} | {mfu} |")
    lines += ["", "| figure | value | target | met |", "| --- | ---: | --- | --- |"]
    for fig in report["figures"]:
        met = {True: "yes", False: "no", None: "-"}[fig["meets"]]
        lines.append(f"| {fig['name']} | {fig['value']:.3f} | {fig['target'] or '-'} | {met} |")
    lines += [
        "",
        f"- DeepSpeed ZeRO-3 single-GPU step: {json.dumps(report['deepspeed'])}",
        f"- Resume equality (full_determinism): {report['resume']['status']} "
        f"(identical weights: {report['resume']['identical_weights']})",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for gpu_check.json and gpu_check.md")
    parser.add_argument("--cpu", action="store_true", help="tiny sizes on the CPU (checks the script, not a GPU)")
    args = parser.parse_args(argv)
    import torch

    if not args.cpu and not torch.cuda.is_available():
        print("error: no CUDA GPU here; run with --cpu to check the script on tiny sizes", file=sys.stderr)
        return 2
    from transformers import AutoTokenizer

    from benchmarks.bench_training import make_dataset
    from llmft.log import setup_logging
    from llmft.tiny_model import build_tiny_model

    setup_logging()
    started = time.perf_counter()
    size = SIZES["cpu" if args.cpu else "gpu"]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="llmft-gpu-check-"))
    try:
        peak = matmul_peak(args.cpu, size["peak_n"])
        os.environ["LLMFT_PEAK_FLOPS"] = str(peak["flops_per_s"])  # summary.json's MFU uses the same peak
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
        make_dataset(data, tokenizer, size["samples"], size["max_len"], size["median_len"])
        attention = _attention(args.cpu)
        runs = throughput_runs(work, model_dir, data, size, peak["flops_per_s"], attention)
        deepspeed = deepspeed_step(work, model_dir, data, size, args.cpu)
        resume = resume_equality(work, data, size, attention)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    def ratio(a: str, b: str) -> float:
        return runs[a]["tokens_per_s"] / runs[b]["tokens_per_s"]

    full_mfu = runs["full packed"]["mfu"] or 0.0
    figures = [
        {
            "name": "effective tokens/s: full packed / full padded",
            "value": ratio("full packed", "full padded"),
            "target": None,
            "meets": None,
        },
        {
            "name": "effective tokens/s: LoRA packed / LoRA padded",
            "value": ratio("lora packed", "lora padded"),
            "target": None,
            "meets": None,
        },
        {
            "name": "MFU, full packed (against the measured matmul peak)",
            "value": full_mfu,
            "target": f">= {MFU_TARGET}",
            "meets": None if args.cpu else full_mfu >= MFU_TARGET,
        },
        {
            "name": "resume in deterministic mode: identical losses and weights",
            "value": 1.0 if resume["status"] == "ok" else 0.0,
            "target": "= 1",
            "meets": resume["status"] == "ok",
        },
    ]
    report = {
        "mode": "cpu (tiny sizes: numbers mean nothing)" if args.cpu else "gpu",
        "environment": environment(args.cpu),
        "attention": attention,
        "model": f"Llama, hidden {size['hidden']}, {size['layers']} layers, intermediate {size['intermediate']}, "
        f"{size['dtype']}, {attention}, batch {size['batch']} x max {size['max_len']} tokens, "
        f"{size['warmup']} warm-up + {size['steps']} timed steps",
        "peak": peak,
        "throughput": runs,
        "figures": figures,
        "deepspeed": deepspeed,
        "resume": resume,
        "seconds": time.perf_counter() - started,
    }
    (out / "gpu_check.json").write_text(json.dumps(report, indent=2, default=str) + "\n")
    (out / "gpu_check.md").write_text(markdown(report))
    print(markdown(report))
    failed = resume["status"] != "ok" or deepspeed.get("status") == "failed"
    return 1 if failed else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
