"""`llmft evaluate SPEC`: score a checkpoint, a run or an endpoint on held-out data (docs/evaluation.md)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="score a checkpoint, a run or an OpenAI-compatible endpoint on held-out data",
        description="Checks the spec (every problem at once), the target (complete checkpoint, reachable endpoint) "
        "and every line of the data before any model loads; then scores the samples not yet in "
        "<output>/samples.jsonl and writes <output>/results.json. See docs/evaluate-reference.md.",
    )
    parser.add_argument("spec", help="YAML evaluation spec (name, target, data, metrics, ...)")
    parser.add_argument("--check", action="store_true", help="validate the spec and stop")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)

    schema = subparsers.add_parser(
        "evaluate-schema", help="print the JSON Schema of an evaluation spec (embedded by the llm-evaluate chart)"
    )
    schema.set_defaults(func=_schema)
    best = subparsers.add_parser(
        "evaluate-best",
        help="print the run with the best evaluation score (e.g. to serve it)",
        description="Reads <run>/eval/<name>/results.json of every run and prints the location of the best one "
        "(lower is better for loss, perplexity and judge_failure_rate, higher for the rest); the "
        "other runs' values go to stderr.",
    )
    best.add_argument(
        "runs",
        nargs="+",
        metavar="RUN",
        help="run folders (bucket/experiments/NAME, s3://..., ./dir); a trailing * takes a whole sweep",
    )
    best.add_argument("--metric", required=True, help="EVALUATION/METRIC, e.g. heldout/rouge_l")
    best.set_defaults(func=_best)
    reference = subparsers.add_parser(
        "evaluate-reference", help="print the Markdown evaluation spec reference (docs/evaluate-reference.md)"
    )
    reference.set_defaults(func=_reference)


def _run(args: argparse.Namespace) -> int:
    import json

    from llmft.evaluate.spec import load_spec

    spec = load_spec(args.spec)
    if args.check:
        print(f"{args.spec}: valid evaluation spec; results go to {spec.output_location()}")
        return 0
    from llmft.evaluate import evaluate

    results = evaluate(spec)
    print(json.dumps({"name": results["name"], "metrics": results["metrics"]}, indent=2))
    return 0


def _best(args: argparse.Namespace) -> int:
    import sys

    from llmft.evaluate.results import best_run

    best, _, values = best_run(args.runs, args.metric)
    for run, score in values:
        print(f"{run}: {args.metric} = {'-' if score is None else f'{score:.4g}'}", file=sys.stderr)
    print(best)
    return 0


def _schema(args: argparse.Namespace) -> int:
    import json

    from llmft.evaluate.spec import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=2))
    return 0


def _reference(args: argparse.Namespace) -> int:
    from llmft.evaluate.reference import spec_reference

    print(spec_reference(), end="")
    return 0
