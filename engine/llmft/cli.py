"""The `llmft` command line: discovers subcommands in `llmft.commands`."""

import argparse
import importlib
import logging
import pkgutil
import sys

from llmft import __version__, commands
from llmft.errors import UserError
from llmft.log import setup_logging


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llmft",
        description="LLM fine-tuning suite: stage models and data, fine-tune, merge, serve.",
    )
    parser.add_argument("--version", action="version", version=f"llmft {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module_info in sorted(pkgutil.iter_modules(commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{commands.__name__}.{module_info.name}")
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.program = argv is None  # the process's own program (a shell, a pod), not a call from Python
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    setup_logging(logging.DEBUG if getattr(args, "verbose", False) else logging.INFO)
    try:
        result = args.func(args)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
