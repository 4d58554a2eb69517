"""Run rendered pods as local processes (see `llmft.local` for the overview)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from llmft.charts import render_chart
from llmft.errors import UserError
from llmft.local import s3
from llmft.local.pods import ContainerPlan, PodPlan, SecretSource, describe, plan_pods
from llmft.local.state import state_dir
from llmft.processes import kill_tree

log = logging.getLogger("llmft.local")

# Variables a pod only gets from its own spec, so a local run keeps the chart's least privilege.
_SCRUBBED = (
    "BUCKET_STORAGE_HOST",
    "BUCKET_STORAGE_ACCESS_KEY",
    "BUCKET_STORAGE_SECRET_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "HF_TOKEN",
)
# The caller's writable folders, which a container with a read-only root filesystem does not have: its process
# gets only what its spec sets (volumes), else the read-only stand-in for its image.
_WRITABLE_PLACES = (
    "HOME",
    "TMPDIR",
    "TMP",
    "TEMP",
    "XDG_CACHE_HOME",
    "XDG_CONFIG_HOME",
    "XDG_DATA_HOME",
    "XDG_STATE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "TRANSFORMERS_CACHE",
    "TORCH_HOME",
    "TRITON_CACHE_DIR",
    "TORCHINDUCTOR_CACHE_DIR",
    "MPLCONFIGDIR",
    "PIP_CACHE_DIR",
    "LLMFT_CACHE_DIR",
    "VLLM_CACHE_ROOT",
    "VLLM_CONFIG_ROOT",
)


def load_secrets_file(path: Path | None) -> dict[str, dict[str, str]]:
    if path is None:
        return {}
    from llmft.yamlfile import read_yaml

    data = read_yaml(Path(path), "secrets file") or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise UserError(f"secrets file {path}: expected a mapping of Secret name to {{key: value}}")
    return data


def bucket_environment() -> tuple[dict[str, str], str]:
    """The bucket the workloads use: the caller's BUCKET_STORAGE_HOST if set, else the embedded server."""
    if os.environ.get("BUCKET_STORAGE_HOST"):
        chosen = {
            name: os.environ[name]
            for name in ("BUCKET_STORAGE_HOST", "BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY")
            if os.environ.get(name)
        }
        return chosen, f"bucket storage from BUCKET_STORAGE_HOST ({os.environ['BUCKET_STORAGE_HOST']})"
    server = s3.start()
    return server.environment(), f"embedded S3 server at {server.endpoint} (stop it with `llmft local s3 stop`)"


def run_chart(
    chart: Path,
    values_files: list[Path],
    set_values: list[str],
    set_string_values: list[str],
    release: str,
    secrets_file: Path | None,
    dry_run: bool = False,
    keep_volumes: bool = False,
    serve_port: int | None = None,
    set_json_values: Sequence[str] = (),
) -> int:
    rendered = render_chart(
        chart,
        values_files=values_files,
        set_values=set_values,
        set_string_values=set_string_values,
        set_json_values=set_json_values,
        release_name=release,
    )
    bucket_env, bucket_note = _dry_run_bucket() if dry_run else bucket_environment()
    secrets = SecretSource(files=load_secrets_file(secrets_file), by_env_name=dict(bucket_env), collect_missing=dry_run)
    workdir = state_dir() / "runs" / release
    plans = plan_pods(rendered.documents, workdir, secrets)
    if not plans:
        raise UserError(f"{chart} rendered no Job, Deployment or Pod: nothing to run")
    log.info("release %s: %s", release, bucket_note)
    for plan in plans:
        _apply_bucket_host(plan, bucket_env)
    for plan in plans:
        if plan.ignored and not plan.index:
            log.info(
                "%s/%s: ignoring what a local run cannot honour: %s", plan.kind, plan.name, ", ".join(plan.ignored)
            )
        if dry_run:
            _print_plan(plan)
            continue
        if plan.index is not None:
            if plan.index > 0:
                continue  # started with index 0
            group = [p for p in plans if p.kind == "Job" and p.name == plan.name and p.index is not None]
            status = run_indexed_job(group, keep_volumes)
        elif plan.kind in ("Job", "Pod"):
            status = run_job(plan, keep_volumes)
        else:
            status = run_server(plan, serve_port)
        if status != 0:
            return status
    for need in secrets.missing:
        print(f"# a real run needs: {need}")
    return 0


def _dry_run_bucket() -> tuple[dict[str, str], str]:
    """What a real run would use for the bucket, without starting anything or reading secrets."""
    if os.environ.get("BUCKET_STORAGE_HOST"):
        return {}, f"bucket storage from BUCKET_STORAGE_HOST ({os.environ['BUCKET_STORAGE_HOST']})"
    placeholder = "<embedded S3 server's>"
    return (
        {name: placeholder for name in ("BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY")},
        "the embedded S3 server, not started (dry run)",
    )


def _apply_bucket_host(plan: PodPlan, bucket_env: dict[str, str]) -> None:
    """Point containers that talk to the bucket at the local one (only those the chart gave a host)."""
    host = bucket_env.get("BUCKET_STORAGE_HOST")
    for container in plan.init_containers + plan.containers:
        if host and "BUCKET_STORAGE_HOST" in container.env and container.env["BUCKET_STORAGE_HOST"] != host:
            container.env["BUCKET_STORAGE_HOST"] = host


def _print_plan(plan: PodPlan) -> None:
    print(
        f"# {plan.kind}/{plan.name}"
        + (f" (index {plan.index} of {plan.completions})" if plan.index is not None else "")
    )
    for mount, local in sorted(plan.mounts.items()):
        print(f"#   {mount} -> {local}")
    for container in plan.init_containers + plan.containers:
        label = "init " if container.init else ""
        print(f"{label}{container.name}: {describe(_resolve_argv(container.argv)[0], container.secret_values)}")


def _fresh_volumes(plan: PodPlan) -> None:
    for path in plan.volumes.values():
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(parents=True, exist_ok=True)
    for path in plan.subpaths:
        path.mkdir(parents=True, exist_ok=True)
    for path, content in plan.configmap_files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for container in plan.init_containers + plan.containers:
        if container.read_only_root:
            _fresh_image_root(plan.image_root(container))


def _fresh_image_root(root: Path) -> None:
    """An empty folder that nobody may write (mode 0555): the container's working directory and HOME."""
    _remove_image_roots(root)
    root.mkdir(parents=True)
    root.chmod(0o555)


def _remove_image_roots(path: Path) -> None:
    if path.exists():
        for folder, _dirs, _files in os.walk(path):
            os.chmod(folder, 0o755)
        shutil.rmtree(path)


def check_read_only_root(plan: PodPlan, container: ContainerPlan) -> None:
    """Fail when a container with readOnlyRootFilesystem wrote into the stand-in for its image.

    A process not run as root cannot write there at all (mode 0555); as root it can, so what it left is checked
    after it ends. In a cluster that write fails: the path needs a volume (and an environment variable that
    points at it) in the chart.
    """
    root = plan.image_root(container)
    if not container.read_only_root or not root.is_dir():
        return
    written = sorted(str(path.relative_to(root)) for path in root.rglob("*"))
    if written:
        shown = ", ".join(written[:5]) + (f" and {len(written) - 5} more" if len(written) > 5 else "")
        raise UserError(
            f"{plan.kind}/{plan.name}: container {container.name} has a read-only root filesystem but "
            f"wrote to its image's working directory or HOME: {shown}. Give that path a volume in the "
            "chart (and point its environment variable there), or set "
            "podSecurity.readOnlyRootFilesystem=false"
        )


def _process_env(container: ContainerPlan, image_root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED}
    if container.read_only_root:
        env = {k: v for k, v in env.items() if k not in _WRITABLE_PLACES}
        env["HOME"] = env["TMPDIR"] = str(image_root)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["PYTHONUNBUFFERED"] = "1"
    env.update(container.env)
    # Torch C++ extensions built on first use (DeepSpeed's shared-memory collective on CPU: ~30 s per pod) are
    # kept across local runs, as a node's image would carry them built; a value from the chart or the caller wins.
    env.setdefault("TORCH_EXTENSIONS_DIR", str(state_dir() / "torch_extensions"))
    return env


def _resolve_argv(argv: list[str]) -> tuple[list[str], str | None]:
    """Map the image's programs to this machine's; returns (argv, a note when substituted)."""
    program = argv[0]
    if program == "llmft":
        return [sys.executable, "-m", "llmft", *argv[1:]], None
    if program in ("python", "python3"):
        return [sys.executable, *argv[1:]], None
    if _is_vllm(argv) and not _vllm_usable():
        return _cpu_server_argv(argv), (
            "vLLM needs a GPU and is not usable on this machine: serving with "
            "`llmft serve` (OpenAI-compatible, CPU) on the same port and API"
        )
    return argv, None


def _is_vllm(argv: list[str]) -> bool:
    return argv[0] == "vllm" or "vllm.entrypoints.openai.api_server" in argv


def _vllm_usable() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


def _cpu_server_argv(argv: list[str]) -> list[str]:
    """Translate a vLLM server command into `llmft serve` with the same model, name, port and adapters."""
    args = argv[2:] if argv[0] == "vllm" else argv[argv.index("vllm.entrypoints.openai.api_server") + 1 :]
    model, options, adapters = None, {}, []
    index = 0
    if argv[0] == "vllm" and args and not args[0].startswith("-"):
        model, index = args[0], 1
    while index < len(args):
        token = args[index]
        key, _, inline = token.partition("=")
        value = (
            inline
            if inline
            else (args[index + 1] if index + 1 < len(args) and not args[index + 1].startswith("--") else None)
        )
        step = 1 if inline or value is None else 2
        if key == "--model":
            model = value
        elif key in ("--served-model-name", "--port", "--host"):
            options[key] = value
        elif key == "--lora-modules":
            adapters_values = [value] if value else []
            look = index + step
            while look < len(args) and not args[look].startswith("--"):
                adapters_values.append(args[look])
                look += 1
            adapters += adapters_values
            step = look - index
        index += step
    if not model:
        raise UserError(f"cannot find the model in the vLLM command: {' '.join(argv)}")
    command = [sys.executable, "-m", "llmft", "serve", model]
    for key, value in options.items():
        if value is not None:
            command += [key, value]
    for adapter in adapters:
        command += ["--lora-module", adapter]
    return command


def _start(plan: PodPlan, container: ContainerPlan) -> subprocess.Popen:
    argv, note = _resolve_argv(container.argv)
    if note:
        log.info("%s: %s", container.name, note)
    log.info(
        "%s%s: %s",
        "init container " if container.init else "container ",
        container.name,
        describe(container.argv, container.secret_values),
    )
    image_root = plan.image_root(container)
    cwd = container.workdir if container.workdir and container.workdir.is_dir() else None
    if cwd is None and container.read_only_root:
        cwd = image_root
    return subprocess.Popen(argv, env=_process_env(container, image_root), cwd=cwd, start_new_session=True)


def _stop(processes: list[subprocess.Popen]) -> None:
    for process in processes:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + 10
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            kill_tree(process.pid)
            process.wait()


def _wait(process: subprocess.Popen, stop: threading.Event | None) -> int:
    """The process's exit code; with `stop`, ends it (and returns -15) once `stop` is set."""
    if stop is None:
        return process.wait()
    while process.poll() is None:
        if stop.wait(0.2):
            _stop([process])
    return process.returncode


def _run_pod_once(plan: PodPlan, stop: threading.Event | None = None) -> int:
    _fresh_volumes(plan)
    sidecars: list[subprocess.Popen] = []
    running: list[subprocess.Popen] = []
    try:
        for container in plan.init_containers:
            process = _start(plan, container)
            if container.sidecar:
                sidecars.append(process)
                continue
            running = [process]
            code = _wait(process, stop)
            check_read_only_root(plan, container)
            if code != 0:
                log.error("init container %s failed with exit code %d", container.name, code)
                return code
        running = [_start(plan, container) for container in plan.containers]
        codes = [_wait(process, stop) for process in running]
        for container in plan.containers:
            check_read_only_root(plan, container)
        return next((code for code in codes if code != 0), 0)
    except KeyboardInterrupt:
        _stop(running)
        raise
    finally:
        _stop(sidecars)
        for container in plan.init_containers:
            if container.sidecar:
                check_read_only_root(plan, container)


def run_job(plan: PodPlan, keep_volumes: bool = False) -> int:
    """Run a Job's pod, restarting it (fresh volumes, like a new pod) up to backoffLimit times."""
    attempts = plan.backoff_limit + 1 if plan.kind == "Job" else 1
    code = 1
    for attempt in range(1, attempts + 1):
        code = _run_pod_once(plan)
        if code == 0:
            log.info("%s/%s succeeded", plan.kind, plan.name)
            if not keep_volumes:
                shutil.rmtree(plan.root / "volumes", ignore_errors=True)
                _remove_image_roots(plan.root / "image-root")
            return 0
        if code in plan.fail_job_exit_codes:
            log.error(
                "%s/%s failed with exit code %d, which its podFailurePolicy treats as final", plan.kind, plan.name, code
            )
            break
        if attempt < attempts:
            log.warning(
                "%s/%s pod failed with exit code %d: starting a new pod (attempt %d of %d)",
                plan.kind,
                plan.name,
                code,
                attempt + 1,
                attempts,
            )
    log.error("%s/%s failed; its volumes are kept for inspection under %s", plan.kind, plan.name, plan.root / "volumes")
    return code or 1


# The Job controller's delay before it replaces a failed pod of an index: 10 s, doubling per failure, at most 6 min.
# It also gives the other nodes' processes time to notice the failure before the new pod joins the rendezvous.
POD_BACKOFF_SECONDS = 10


def run_indexed_job(plans: list[PodPlan], keep_volumes: bool = False) -> int:
    """Run an Indexed Job's pods at once, as the Job controller does: a failed pod is replaced under the same
    index (fresh volumes, after the controller's backoff delay) while the others keep running, until
    backoffLimit failures in all (or backoffLimitPerIndex for one index); an exit code its podFailurePolicy
    makes final (FailJob), or the limit spent, stops every pod and fails the Job."""
    first = plans[0]
    lock = threading.Lock()
    stop = threading.Event()
    outcome = {"failures": 0, "code": 0}
    per_index = {plan.index: 0 for plan in plans}
    log.info("%s/%s: %d pods (Indexed Job), each with its own volumes", first.kind, first.name, len(plans))

    def run_index(plan: PodPlan) -> None:
        label = f"{plan.kind}/{plan.name} index {plan.index}"
        while not stop.is_set():
            code = _run_pod_once(plan, stop)
            if code == 0:
                log.info("%s succeeded", label)
                return
            with lock:
                if stop.is_set():
                    return
                if code in plan.fail_job_exit_codes:
                    log.error("%s failed with exit code %d, which its podFailurePolicy treats as final", label, code)
                    outcome["code"] = code
                    stop.set()
                    return
                outcome["failures"] += 1
                per_index[plan.index] += 1
                if plan.backoff_limit_per_index is not None:
                    failures, limit, name = per_index[plan.index], plan.backoff_limit_per_index, "backoffLimitPerIndex"
                else:
                    failures, limit, name = outcome["failures"], plan.backoff_limit, "backoffLimit"
                if failures > limit:
                    log.error("%s failed with exit code %d: %s %d reached", label, code, name, limit)
                    outcome["code"] = code or 1
                    stop.set()
                    return
                delay = min(POD_BACKOFF_SECONDS * 2 ** (per_index[plan.index] - 1), 360)
                log.warning(
                    "%s pod failed with exit code %d: starting a new pod for the index in %ds (failure %d of %s %d)",
                    label,
                    code,
                    delay,
                    failures,
                    name,
                    limit,
                )
            stop.wait(delay)

    threads = [threading.Thread(target=run_index, args=(plan,), name=f"pod-{plan.index}") for plan in plans]
    for thread in threads:
        thread.start()
    try:
        while any(thread.is_alive() for thread in threads):
            for thread in threads:
                thread.join(0.5)
    except KeyboardInterrupt:
        stop.set()
        for thread in threads:
            thread.join()
        raise
    if outcome["code"]:
        log.error(
            "%s/%s failed; its volumes are kept for inspection under %s",
            first.kind,
            first.name,
            first.root.parent / f"job-{first.name}-*",
        )
        return outcome["code"]
    log.info("%s/%s succeeded (%d pods)", first.kind, first.name, len(plans))
    if not keep_volumes:
        for plan in plans:
            shutil.rmtree(plan.root / "volumes", ignore_errors=True)
            _remove_image_roots(plan.root / "image-root")
    return 0


def run_server(plan: PodPlan, port: int | None) -> int:
    """Run a Deployment's pod until interrupted (Ctrl-C) or until a container exits."""
    _fresh_volumes(plan)
    for container in plan.init_containers:
        code = _start(plan, container).wait()
        check_read_only_root(plan, container)
        if code != 0:
            log.error("init container %s failed with exit code %d", container.name, code)
            return code
    if port is not None:
        for container in plan.containers:
            container.argv = _with_port(container.argv, port)
    processes = [_start(plan, container) for container in plan.containers]
    ports = sorted({p for c in plan.containers for p in c.ports} if port is None else {port})
    for container_port in ports:
        log.info("%s/%s is serving on http://127.0.0.1:%d (Ctrl-C to stop)", plan.kind, plan.name, container_port)
    try:
        while all(process.poll() is None for process in processes):
            time.sleep(0.5)
    except KeyboardInterrupt:
        log.info("stopping %s/%s", plan.kind, plan.name)
        _stop(processes)
        _check_servers(plan)
        return 0
    _stop(processes)
    _check_servers(plan)
    return next((p.returncode for p in processes if p.returncode), 0)


def _check_servers(plan: PodPlan) -> None:
    for container in plan.containers:
        check_read_only_root(plan, container)


def _with_port(argv: list[str], port: int) -> list[str]:
    out, skip = [], False
    for token in argv:
        if skip:
            skip = False
            continue
        if token == "--port":
            skip = True
            continue
        if token.startswith("--port="):
            continue
        out.append(token)
    return out + ["--port", str(port)]
