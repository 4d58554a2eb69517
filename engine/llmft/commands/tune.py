"""`llmft tune SPEC`, `llmft tune status|best EXPERIMENT`, `llmft tune schema|reference|storage-server`.

- `llmft tune SPEC [--dir DIR] [--worker-index I] [--slots N]`: run the experiment (worker 0 with
  parallel_trial_count slots locally; on the cluster one worker per pod of the llm-tune chart).
- `llmft tune status EXPERIMENT` / `llmft tune best EXPERIMENT`: the trials, or the best trial's values and
  servable model. EXPERIMENT is an experiment folder, the spec file, or the bucket folder (checkpointsRemote).
- `llmft tune schema` (the spec's JSON Schema), `llmft tune reference` (docs/tune-reference.md).
- `llmft tune storage-server --journal FILE --port P`: Optuna's gRPC storage proxy over a journal file
  (the llm-tune chart's study-storage server).
"""

from __future__ import annotations

import argparse

ACTIONS = ("status", "best", "schema", "reference", "storage-server")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "tune",
        help="hyperparameter optimisation: run an experiment spec, or show its status and best trial",
        description="`llmft tune SPEC` runs an experiment (docs/hpo.md); `llmft tune status|best EXPERIMENT` shows "
        "it (EXPERIMENT: the experiment folder, the spec file, or its checkpointsRemote in the bucket); "
        "`llmft tune schema|reference` print the spec's JSON Schema or Markdown reference; "
        "`llmft tune storage-server` serves a study storage to workers (the llm-tune chart).",
        usage="llmft tune SPEC [options] | llmft tune {status,best} EXPERIMENT | llmft tune {schema,reference} | "
        "llmft tune storage-server --journal FILE [--port P]",
    )
    parser.add_argument("words", nargs="+", metavar="SPEC | ACTION [EXPERIMENT]", help=argparse.SUPPRESS)
    parser.add_argument("--dir", help="experiment folder (default: $LLMFT_STATE_DIR/tune/<name>)")
    parser.add_argument(
        "--worker-index",
        type=int,
        default=None,
        help="this worker's index (default: $JOB_COMPLETION_INDEX, else 0; worker 0 creates the study)",
    )
    parser.add_argument(
        "--slots", type=int, default=None, help="trials this worker trains at once (default: tune.parallel_trial_count)"
    )
    parser.add_argument("--json", action="store_true", help="status/best: print experiment.json's data")
    parser.add_argument("--journal", help="storage-server: the journal file to serve")
    parser.add_argument("--host", default="0.0.0.0", help="storage-server: address to listen on")
    parser.add_argument("--port", type=int, default=13000, help="storage-server: port (default 13000)")
    parser.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from llmft.errors import UserError

    action, rest = args.words[0], args.words[1:]
    if action not in ACTIONS:
        if rest:
            raise UserError(
                f"llmft tune takes one spec file, got {' '.join(args.words)}; or an action: {', '.join(ACTIONS)}"
            )
        return _tune(args, action)
    if action in ("schema", "reference", "storage-server") and rest:
        raise UserError(f"llmft tune {action} takes no argument, got {' '.join(rest)}")
    if action == "schema":
        import json

        from llmft.tune.spec import spec_json_schema

        print(json.dumps(spec_json_schema(), indent=2))
        return 0
    if action == "reference":
        from llmft.tune.reference import tune_reference

        print(tune_reference(), end="")
        return 0
    if action == "storage-server":
        return _storage_server(args)
    if len(rest) != 1:
        raise UserError(
            f"usage: llmft tune {action} EXPERIMENT (an experiment folder, the spec file, or the bucket "
            "folder of its checkpointsRemote)"
        )
    return _show(args, action, rest[0])


def _tune(args: argparse.Namespace, spec_file: str) -> int:
    from pathlib import Path

    from llmft.errors import UserError
    from llmft.tune.worker import Worker, default_experiment_dir, worker_index

    spec = _load(spec_file, say_unused=True)
    if args.slots is not None and args.slots < 1:
        raise UserError(f"--slots must be at least 1, got {args.slots}")
    experiment_dir = (Path(args.dir) if args.dir else default_experiment_dir(spec.name)).resolve()
    environment: dict[str, str] = {}
    if _uses_bucket(spec):
        from llmft.local.runner import bucket_environment

        environment, note = bucket_environment()
        print(f"bucket: {note}", flush=True)
    worker = Worker(spec, experiment_dir, worker_index(args.worker_index), args.slots, environment)
    status = worker.run()
    from llmft.tune import results

    if (experiment_dir / results.EXPERIMENT).is_file():
        print(results.status_table(results.load(str(experiment_dir))))
    print(
        f"experiment folder: {experiment_dir}\n"
        f"see `llmft tune status {experiment_dir}`, `llmft tune best {experiment_dir}`, "
        f"`llmft report {experiment_dir}`"
    )
    return status


def _load(path, say_unused: bool = False):
    """The spec in a file; the llm-tune chart's own keys (a values file) are accepted and named as unused here."""
    from llmft.tune.chart_files import cluster_keys
    from llmft.tune.spec import load_spec, read_spec_source

    data = read_spec_source(path)
    unused = [key for key in cluster_keys() if key in data]
    if unused and say_unused:
        print(f"{path}: not used by a local run (the llm-tune chart's keys): {', '.join(unused)}", flush=True)
    return load_spec({key: value for key, value in data.items() if key not in unused})


def _uses_bucket(spec) -> bool:
    from llmft.storage import parse_location
    from llmft.tune import keypath

    config = spec.base_config()
    places = [
        spec.checkpointsRemote,
        keypath.get(config, ("run_conf", "model")),
        keypath.get(config, ("run_conf", "tokenizer")),
    ]
    data = config.get("data_conf") or {}
    for section in ("training_data", "validation_data"):
        places += [item.get("path") for item in (data.get(section) or {}).get("datasets") or []]
    return any(place and not place.startswith("hf://") and not parse_location(place).is_local for place in places)


def _show(args: argparse.Namespace, action: str, where: str) -> int:
    import json
    from pathlib import Path

    from llmft.tune import results

    data = _live_results(Path(where)) if Path(where).exists() else None
    data = data or results.load(where)
    if args.json:
        print(json.dumps(data if action == "status" else results.best_trial(data), indent=2))
        return 0
    print(results.status_table(data) if action == "status" else results.best_text(data), end="")
    return 0


def _live_results(path):
    """From the study itself when the experiment folder (or its spec) is here and its storage can be opened."""
    from llmft.tune import results
    from llmft.tune import study as studies
    from llmft.tune.spec import load_spec
    from llmft.tune.worker import default_experiment_dir

    if path.is_file() and path.suffix in (".yaml", ".yml"):
        spec = _load(path)
        folder = default_experiment_dir(spec.name)
        if not (folder / results.SPEC).is_file():
            from llmft.errors import UserError

            remote = f" ({spec.checkpointsRemote})" if spec.checkpointsRemote else ""
            raise UserError(
                f"no experiment {spec.name} in {folder} (the default folder); give the folder it ran in "
                f"(--dir) or its checkpointsRemote{remote}"
            )
    elif (path / results.SPEC).is_file():
        spec, folder = load_spec(path / results.SPEC), path
    else:
        return None
    url = spec.storage_url() or studies.journal_url(folder)
    if url.startswith("journal://") and not (folder / studies.JOURNAL).is_file():
        return None
    import optuna

    study = optuna.load_study(study_name=spec.name, storage=studies.open_storage(url))
    return results.collect(study, spec, folder)


def _storage_server(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmft.errors import UserError
    from llmft.tune.study import open_storage

    if not args.journal:
        raise UserError("llmft tune storage-server needs --journal FILE (on a persistent volume)")
    import optuna

    path = Path(args.journal)
    storage = open_storage(f"journal://{path.resolve()}")
    print(f"serving the study storage {path} on {args.host}:{args.port} (gRPC)", flush=True)
    optuna.storages.run_grpc_proxy_server(storage, host=args.host, port=args.port)
    return 0
