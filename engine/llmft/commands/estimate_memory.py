"""`llmft estimate-memory`: per-GPU memory of a fine-tuning run, by component, before renting GPUs."""

from __future__ import annotations

import argparse
import json


def _count(text: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a parameter count such as 8e9, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text!r}")
    return int(value)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "estimate-memory",
        help="estimate GPU memory per process for a model, method and distributed preset",
        description="Weights, gradients, master weights, AdamW states and activations per GPU "
        "(formula in docs/distributed-training.md).",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--params", type=_count, help="parameter count, e.g. 8e9 (model states only)")
    source.add_argument("--model", help="a local model folder (config.json) or llama-1b, llama-8b, llama-70b")
    parser.add_argument("--method", choices=("full", "lora"), default="full")
    parser.add_argument("--lora-rank", type=int, default=16, help="LoRA rank r on all linear layers (default 16)")
    parser.add_argument(
        "--preset",
        help="single, ddp, zero1, zero2, zero3, fsdp (or the chart's auto-* names); default single on one GPU, "
        "else only the list of presets that fit",
    )
    parser.add_argument("--gpus", type=int, default=1, help="GPUs (processes) per node (default 1)")
    parser.add_argument(
        "--nodes",
        type=int,
        default=1,
        help="nodes, each with --gpus GPUs; sharding divides by nodes x gpus (default 1)",
    )
    parser.add_argument(
        "--gpu-memory", type=float, default=80.0, help="GiB per GPU, to say which presets fit (default 80)"
    )
    parser.add_argument("--dtype", choices=("bf16", "fp16", "fp32"), default="bf16")
    parser.add_argument("--batch-size", type=int, default=1, help="micro-batch per GPU (default 1)")
    parser.add_argument("--seq-len", type=int, default=2048, help="tokens per sequence (default 2048)")
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--json", action="store_true", help="print bytes as JSON")
    parser.add_argument(
        "--table", action="store_true", help="print the docs table (reference models x presets, --gpus GPUs) and exit"
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError
    from llmft.finetune import memory

    if args.table:
        print(
            memory.markdown_table(
                gpus=args.gpus if args.gpus > 1 else 8,
                dtype=args.dtype,
                lora_rank=args.lora_rank,
                batch_size=args.batch_size,
                seq_len=args.seq_len,
                gradient_checkpointing=True,
            )
        )
        return 0
    if not (args.params or args.model):
        raise UserError("give --params COUNT (e.g. 8e9) or --model PATH|llama-1b|llama-8b|llama-70b")
    if args.batch_size < 1 or args.seq_len < 1:
        raise UserError("--batch-size and --seq-len: must be positive integers")
    if args.nodes < 1 or args.gpus < 1:
        raise UserError("--nodes and --gpus: must be positive integers")
    shape = memory.load_shape(args.model) if args.model else memory.ModelShape(params=args.params)
    options = dict(
        method=args.method,
        lora_rank=args.lora_rank,
        dtype=args.dtype,
        batch_size=args.batch_size,
        seq_len=args.seq_len,
        gradient_checkpointing=args.gradient_checkpointing,
    )
    total = args.nodes * args.gpus
    preset = memory.normalise_preset(args.preset) if args.preset else ("single" if total == 1 else None)
    if args.nodes > 1 and preset == "single":
        raise UserError(f"--preset single runs on one node; use ddp, zero1/2/3 or fsdp for {args.nodes} nodes")
    result = memory.estimate(shape, preset=preset, gpus=total, **options) if preset else None
    fits = memory.presets_that_fit(shape, nodes=args.nodes, gpus=args.gpus, gpu_memory_gib=args.gpu_memory, **options)
    if args.json:
        data = result.as_dict() if result else {}
        data |= {"nodes": args.nodes, "gpus_per_node": args.gpus}
        data["presets_that_fit"] = [name for name, _, ok in fits if ok]
        print(json.dumps(data, indent=2))
    else:
        if result:
            print(memory.format_estimate(result, shape, args.dtype))
        print(memory.format_fits(fits, args.nodes, args.gpus, args.gpu_memory))
    return 0
