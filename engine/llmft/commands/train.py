"""`llmft train CONFIG`: the finetune chart's entrypoint.

Validates the config once (a mistake fails here, before any process or model is
started), then runs `llmft sft|dpo CONFIG` (per `method`) in this process, or
under `accelerate launch` when `launch_conf` asks for several processes or
DeepSpeed / FSDP. Everything it needs is in the config file: the finetune chart
renders `launch_conf` from its values (finetuningGpus, distributedType). On a
laptop, `--num-processes` and `--accelerate-config` replace those two settings.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train", help="validate a fine-tuning config and run it (multi-process via accelerate)"
    )
    parser.add_argument("config", help="fine-tuning config YAML (method: sft or dpo; launch_conf: processes)")
    parser.add_argument(
        "--num-processes", type=int, help="processes (GPUs) on this node, instead of launch_conf.num_processes"
    )
    parser.add_argument("--accelerate-config", help="accelerate config YAML, instead of launch_conf.accelerate_config")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import os
    import sys
    from pathlib import Path

    from llmft.errors import UserError
    from llmft.finetune.config import load_config

    config = load_config(args.config)
    launch = config.launch_conf
    if args.num_processes is not None:
        if args.num_processes < 1:
            raise UserError(f"--num-processes must be at least 1, got {args.num_processes}")
        launch.num_processes = args.num_processes
    accelerate_path = None
    if args.accelerate_config:
        accelerate_path = Path(args.accelerate_config)
    elif launch.accelerate_config:
        accelerate_path = Path(launch.accelerate_config).expanduser()
        if not accelerate_path.is_absolute():
            accelerate_path = Path(args.config).parent / accelerate_path
    accelerate = _read_accelerate_config(accelerate_path) if accelerate_path else None
    distributed = (accelerate or {}).get("distributed_type", "NO")
    node = _node(launch) if launch.num_nodes > 1 else None
    if node is None and launch.num_processes == 1 and distributed in ("NO", "MULTI_GPU", "MULTI_CPU"):
        from llmft.commands.finetune import run_config

        # In this process: the pod's own program, so its restore and time line start here.
        return run_config(config, program=getattr(args, "program", False))
    if accelerate_path is None:
        raise UserError(
            f"finetuning_config.launch_conf.accelerate_config: required with num_processes "
            f"{launch.num_processes}; generate one with `llmft accelerate-config auto-ddp --out DIR` "
            "(or pass --accelerate-config)"
        )
    if node is not None and distributed == "NO":
        raise UserError(
            f"finetuning_config.launch_conf.num_nodes: {launch.num_nodes} nodes need an accelerate config that "
            f"spans nodes, but {accelerate_path} has distributed_type NO (one process); use auto-ddp or a DeepSpeed "
            "preset (distributedType in the chart)"
        )
    total = launch.num_processes * launch.num_nodes
    resolved = _resolved_accelerate_file(accelerate or {}, accelerate_path, total, node)
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(resolved)]
    command += ["--num_processes", str(total)]
    if node is not None:
        command += node.launch_arguments()
    command += ["-m", "llmft", config.method, args.config]
    if node is not None:
        from llmft.finetune.multinode import RendezvousUnreachable, wait_for_peers, wait_for_rendezvous

        try:
            wait_for_peers(node)
            wait_for_rendezvous(node)
        except RendezvousUnreachable as error:
            print(f"error: {error}", file=sys.stderr, flush=True)
            return 1
    print("launching: " + " ".join(command), file=sys.stderr, flush=True)
    if node is not None:
        return _launch_node(command)
    os.execv(sys.executable, command)
    return 0  # not reached


def _launch_node(command: list[str]) -> int:
    """Run this node's launcher as a child, passing its output and signals through, and exit 2 when every
    process that failed exited 2 (a configuration or data error: torchrun's summary says `exitcode : 2`), so the
    Job's podFailurePolicy fails the whole Job at once instead of retrying what cannot succeed."""
    import re
    import signal
    import subprocess
    import sys

    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True, errors="replace")

    def forward(signum, _frame):
        process.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    codes = set()
    assert process.stderr is not None
    for line in process.stderr:
        sys.stderr.write(line)
        sys.stderr.flush()
        found = re.search(r"\bexitcode\s*:\s*(-?\d+)", line)
        if found:
            codes.add(int(found.group(1)))
    code = process.wait()
    if code != 0 and codes == {2}:
        print(
            "error: every failed training process exited with status 2 (a configuration or data error, reported "
            "above); not retrying",
            file=sys.stderr,
            flush=True,
        )
        return 2
    return code


def _read_accelerate_config(path):
    """The accelerate config, checked the way `accelerate launch` will read it (a custom one may be wrong)."""
    from llmft.finetune.distributed import validate_accelerate_config

    # Paths inside it are resolved relative to the file later, so they are not checked here.
    return validate_accelerate_config(path, check_files=False)


def _node(launch):
    """This pod's place in a multi-node run (rank from JOB_COMPLETION_INDEX), checked before launching."""
    from llmft.finetune.multinode import node_from_environment

    return node_from_environment(launch)


def _resolved_accelerate_file(accelerate: dict, path, num_processes: int, node=None):
    """A copy of the accelerate config with paths made absolute and the process count set.

    The chart's presets refer to `deepspeed_config.json` next to the YAML. On a machine without
    CUDA a MULTI_GPU preset stays MULTI_GPU: accelerate then starts one process per rank (torchrun)
    and each joins a gloo group (`PartialState(cpu=True)` in the recipe). MULTI_CPU or `use_cpu`
    would make `accelerate launch` start a single process and silently train alone.
    """
    import tempfile
    from pathlib import Path

    import yaml

    config = dict(accelerate)
    deepspeed = dict(config.get("deepspeed_config") or {})
    file = deepspeed.get("deepspeed_config_file")
    if file and not Path(file).is_absolute():
        deepspeed["deepspeed_config_file"] = str((path.parent / file).resolve())
        config["deepspeed_config"] = deepspeed
    config["num_processes"] = num_processes
    if node is not None:
        config.update(node.accelerate_settings())
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", prefix="llmft-accelerate-", delete=False) as handle:
        yaml.safe_dump(config, handle)
    return Path(handle.name)
