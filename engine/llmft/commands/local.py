"""`llmft local`: run a chart's workload on this machine, as `helm template ... | kubectl apply` would in a cluster.

llmft local CHART [-f VALUES]... [--set K=V]... [--name RELEASE]
llmft local s3 start|stop|status|env
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "local",
        help="render a chart with Helm and run its Job or Deployment locally (or: local s3 start|stop|status|env)",
        description="Render CHART with the real Helm engine (same -f / --set as `helm template`) and run what the "
        "rendered Job or Deployment would run, as local processes. Bucket storage: BUCKET_STORAGE_HOST "
        "if set, else the embedded S3 server (`llmft local s3 start|stop|status`; "
        '`eval "$(llmft local s3 env)"` points other llmft commands of your shell at it).',
    )
    parser.add_argument("chart", help="chart folder, or `s3` to manage the embedded S3 server")
    parser.add_argument("action", nargs="?", choices=("start", "stop", "status", "env"), help="with `s3`: what to do")
    parser.add_argument("-f", "--values", action="append", default=[], metavar="FILE", help="values file (repeatable)")
    parser.add_argument("--set", action="append", default=[], metavar="K=V", help="as helm --set (repeatable)")
    parser.add_argument("--set-string", action="append", default=[], metavar="K=V", help="as helm --set-string")
    parser.add_argument("--set-json", action="append", default=[], metavar="K=JSON", help="as helm --set-json")
    parser.add_argument("--name", "--name-template", dest="name", default="local", help="release name (default: local)")
    parser.add_argument("--secrets-file", help="YAML: {SecretName: {key: value}} for secretKeyRefs (never printed)")
    parser.add_argument("--dry-run", action="store_true", help="print what would run (secrets masked) and stop")
    parser.add_argument("--keep-volumes", action="store_true", help="keep the pod's volume folders after success")
    parser.add_argument("--port", type=int, help="for a Deployment: serve on this local port instead of the chart's")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from llmft.errors import UserError

    if args.chart == "s3":
        return _s3(args.action or "status")
    if args.action:
        raise UserError(
            f"unexpected argument {args.action!r} after the chart (did you mean `llmft local s3 {args.action}`?)"
        )
    import signal

    from llmft.local.runner import run_chart

    def terminate(*_):  # like a pod deletion: stop the pod's processes, then exit
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, terminate)
    return run_chart(
        Path(args.chart),
        [Path(v) for v in args.values],
        args.set,
        args.set_string,
        args.name,
        Path(args.secrets_file) if args.secrets_file else None,
        dry_run=args.dry_run,
        keep_volumes=args.keep_volumes,
        serve_port=args.port,
        set_json_values=args.set_json,
    )


def _s3(action: str) -> int:
    import shlex

    from llmft.local import s3

    if action == "start":
        server = s3.start()
        print(f"embedded S3 running at {server.endpoint} (pid {server.pid}); buckets: {', '.join(s3.DEFAULT_BUCKETS)}")
        return 0
    if action == "env":
        # For `eval "$(llmft local s3 env)"`: the local server's endpoint and generated credentials.
        for name, value in s3.start().environment().items():
            print(f"export {name}={shlex.quote(value)}")
        return 0
    if action == "stop":
        print("stopped the embedded S3 server" if s3.stop() else "the embedded S3 server is not running")
        return 0
    running = s3.status()
    print(
        f"embedded S3 running at {running.endpoint} (pid {running.pid})"
        if running
        else "the embedded S3 server is not running"
    )
    return 0 if running else 3
