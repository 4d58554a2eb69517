"""`llmft serve MODEL_DIR`: an OpenAI-compatible chat server on the CPU (the local stand-in for vLLM)."""

from __future__ import annotations

import argparse
import signal
import sys


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("serve", help="serve a model folder with an OpenAI-compatible API on the CPU")
    parser.add_argument("model", help="local model folder")
    parser.add_argument("--served-model-name", help="the name clients pass as `model` (default: folder name)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--lora-module",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="serve a LoRA adapter under NAME on top of the model (repeatable)",
    )
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmft.errors import UserError
    from llmft.serving.cpu_server import serve

    adapters = {}
    for item in args.lora_module:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise UserError(f"--lora-module {item!r}: write NAME=PATH")
        adapters[name] = Path(path)
    # Kubernetes stops pods with SIGTERM: exit cleanly.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    serve(Path(args.model), args.served_model_name or Path(args.model).name, args.host, args.port, adapters)
    return 0
