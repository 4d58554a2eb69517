"""`llmft local` on a fixture chart: the rendered pod runs as local processes against the real S3 server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from llmft.storage import parse_location
from llmft.storage.transfer import read_object

CHART = Path(__file__).parent / "fixtures" / "charts" / "local-check"


def local(*args: str, env: dict, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "llmft", "local", str(CHART), *args],
        env=env,
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )


@pytest.fixture
def runner_env(s3_env, tmp_path):
    return {**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state")}


def test_runs_init_then_main_with_volumes_paths_and_secrets(bucket, runner_env):
    result = local(
        "--name", "first", "--set", f"destination={bucket}/out/result.txt", "--set", "message=hi there", env=runner_env
    )
    assert result.returncode == 0, result.stderr
    # The init container wrote into the emptyDir the main container uploaded from.
    assert read_object(parse_location(f"{bucket}/out/result.txt")) == b"hi there via work"
    # Said once what it ignores; never printed the secret.
    assert "ignoring what a local run cannot honour" in result.stderr
    assert "GPU request nvidia.com/gpu" in result.stderr and "pod nodeSelector" in result.stderr
    assert runner_env["BUCKET_STORAGE_SECRET_KEY"] not in result.stderr + result.stdout


def test_failed_pod_is_restarted_up_to_backoff_limit(bucket, runner_env, tmp_path):
    marker = tmp_path / "failed-once"
    result = local(
        "--name",
        "retry",
        "--set",
        f"destination={bucket}/retry.txt",
        "--set",
        f"failOnceMarker={marker}",
        env=runner_env,
    )
    assert result.returncode == 0, result.stderr
    assert "pod failed with exit code 7: starting a new pod (attempt 2 of 3)" in result.stderr
    assert read_object(parse_location(f"{bucket}/retry.txt")).startswith(b"hello from the pod")


def test_pod_failure_policy_exit_code_is_final(bucket, runner_env):
    result = local("--name", "final", "--set", "exitCode=2", env=runner_env)
    assert result.returncode == 2
    assert "podFailurePolicy treats as final" in result.stderr
    assert "starting a new pod" not in result.stderr


def test_missing_secret_names_the_fix(runner_env):
    env = {k: v for k, v in runner_env.items() if not k.startswith("BUCKET_STORAGE")}
    env["BUCKET_STORAGE_HOST"] = "http://127.0.0.1:9"  # set, so the embedded server is not started
    result = local("--name", "nosecret", env=env)
    assert result.returncode == 2
    assert "needs key 'access-key' of Secret 'bucket-credentials'" in result.stderr
    assert "--secrets-file" in result.stderr
    # A dry run needs no credentials: it shows the plan and lists what a real run would need.
    result = local("--name", "nosecret", "--dry-run", env=env)
    assert result.returncode == 0, result.stderr
    assert "init script: " in result.stdout
    assert (
        "# a real run needs: env BUCKET_STORAGE_ACCESS_KEY needs key 'access-key' of Secret 'bucket-credentials'"
    ) in result.stdout


def test_dry_run_masks_secrets_from_a_secrets_file(runner_env, tmp_path):
    secrets = tmp_path / "secrets.yaml"
    secrets.write_text("bucket-credentials: {access-key: AKIAEXAMPLE, secret-key: s3cr3t-value}\n")
    env = {k: v for k, v in runner_env.items() if not k.startswith("BUCKET_STORAGE")}
    env["BUCKET_STORAGE_HOST"] = "http://127.0.0.1:9"
    result = local("--name", "dry", "--dry-run", "--secrets-file", str(secrets), env=env)
    assert result.returncode == 0, result.stderr
    assert "init script: " in result.stdout and "/volumes/work/out.txt" in result.stdout
    assert "s3cr3t-value" not in result.stdout + result.stderr


@pytest.mark.parametrize(
    "argv",
    [
        [
            "vllm",
            "serve",
            "/models/m",
            "--served-model-name",
            "run-a",
            "--port",
            "8080",
            "--enable-lora",
            "--lora-modules",
            "a=/adapters/a",
            "b=/adapters/b",
            "--max-model-len",
            "2048",
        ],
        [
            "python3",
            "-m",
            "vllm.entrypoints.openai.api_server",
            "--model=/models/m",
            "--served-model-name=run-a",
            "--port",
            "8080",
            "--lora-modules",
            "a=/adapters/a",
            "--lora-modules",
            "b=/adapters/b",
        ],
    ],
)
def test_vllm_command_becomes_the_cpu_server(argv):
    """Without vLLM and a GPU, the same model, name, port and adapters go to `llmft serve`."""
    from llmft.local.runner import _cpu_server_argv

    command = _cpu_server_argv(argv)
    assert command[1:5] == ["-m", "llmft", "serve", "/models/m"]
    rest = command[5:]
    assert rest[rest.index("--served-model-name") + 1] == "run-a"
    assert rest[rest.index("--port") + 1] == "8080"
    assert [rest[i + 1] for i, t in enumerate(rest) if t == "--lora-module"] == ["a=/adapters/a", "b=/adapters/b"]


def test_sigterm_stops_the_pod_processes(runner_env, tmp_path):
    """`kill` on `llmft local` ends the pod's processes too (as deleting a pod would), leaving no orphans."""
    import signal
    import time

    marker = tmp_path / "pid"
    sleeper = tmp_path / "sleeper.py"
    sleeper.write_text(f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    chart = tmp_path / "sleepy"
    (chart / "templates").mkdir(parents=True)
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: sleepy\nversion: 0.1.0\n")
    (chart / "templates" / "job.yaml").write_text(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: sleepy}\nspec:\n  template:\n    spec:\n"
        "      restartPolicy: Never\n      containers:\n"
        f"        - {{name: main, image: x, command: [python, {str(sleeper)!r}]}}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "llmft", "local", str(chart), "--name", "sleepy"],
        env=runner_env,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not marker.exists() or not marker.read_text():
        assert time.monotonic() < deadline and process.poll() is None
        time.sleep(0.2)
    child = int(marker.read_text())
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=30) == 130
    time.sleep(0.5)
    assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text().lower()


def test_s3_env_points_other_commands_at_the_embedded_server(tmp_path):
    """`eval "$(llmft local s3 env)"` makes `llmft storage` use the local runner's bucket."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BUCKET_STORAGE", "AWS_"))}
    env["LLMFT_STATE_DIR"] = str(tmp_path / "state")
    script = (
        f"set -e; PATH={Path(sys.executable).parent}:$PATH; "
        + 'eval "$(python -m llmft local s3 env)"; echo hi > f.txt; '
        "python -m llmft storage cp ./f.txt default-bucket/x/f.txt; python -m llmft storage ls default-bucket/x; "
        "python -m llmft local s3 stop"
    )
    try:
        result = subprocess.run(
            ["bash", "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120
        )
    finally:  # never leave the server running, whatever failed
        subprocess.run([sys.executable, "-m", "llmft", "local", "s3", "stop"], env=env, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert "f.txt" in result.stdout and "stopped the embedded S3 server" in result.stdout


def test_read_only_root_filesystem_fails_a_write_outside_the_volumes(bucket, runner_env):
    """A cache written below HOME fails the pod when HOME is the image's (read-only), naming the path and fix."""
    result = local(
        "--name", "readonly", "--set", f"destination={bucket}/ro.txt", "--set", "cacheInHome=true", env=runner_env
    )
    assert result.returncode == 2, result.stderr
    assert "container script has a read-only root filesystem but wrote" in result.stderr
    assert ".cache/some-library/index" in result.stderr and "podSecurity.readOnlyRootFilesystem" in result.stderr


def test_read_only_root_filesystem_allows_writes_to_volumes(bucket, runner_env, tmp_path):
    """The same write succeeds with HOME on the emptyDir, and with the read-only rule loosened (the caller's HOME)."""
    env = {**runner_env, "HOME": str(tmp_path / "caller-home")}
    for sets in (["--set", "home=/work/home"], ["--set", "readOnlyRootFilesystem=false"]):
        result = local(
            "--name",
            "readonly-ok",
            "--set",
            f"destination={bucket}/ro.txt",
            "--set",
            "cacheInHome=true",
            *sets,
            env=env,
        )
        assert result.returncode == 0, result.stderr
    assert (tmp_path / "caller-home" / ".cache" / "some-library" / "index").exists()
    assert read_object(parse_location(f"{bucket}/ro.txt")) == b"hello from the pod via work"


def test_built_torch_extensions_outlive_the_pod_unless_the_chart_places_them(tmp_path, monkeypatch):
    """DeepSpeed compiles its CPU collective into TORCH_EXTENSIONS_DIR: a fresh HOME per pod would rebuild it."""
    from llmft.local.pods import ContainerPlan
    from llmft.local.runner import _process_env

    monkeypatch.setenv("LLMFT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR", raising=False)

    def env_of(container_env: dict) -> dict:
        container = ContainerPlan("train", ["llmft"], container_env, set(), None, read_only_root=True)
        return _process_env(container, tmp_path / "image")

    assert env_of({})["TORCH_EXTENSIONS_DIR"] == str(tmp_path / "state" / "torch_extensions")
    assert env_of({"TORCH_EXTENSIONS_DIR": "/cache/ext"})["TORCH_EXTENSIONS_DIR"] == "/cache/ext"


def test_a_relative_local_path_means_the_callers_folder(bucket, runner_env, tiny_model_dir, tmp_path, monkeypatch):
    """`llmft local ... --set modelID=./model` from the folder that holds ./model (as the demo does): the container
    runs in its image-root stand-in, so the runner gives it the path from the caller's folder, made absolute."""
    import shutil

    from llmft.local.pods import PathMapper

    shutil.copytree(tiny_model_dir, tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    mapper = PathMapper({"/downloads": tmp_path / "volumes" / "downloads"})
    assert (
        mapper("./model ./missing /downloads/x")
        == f"{tmp_path / 'model'} ./missing {tmp_path / 'volumes' / 'downloads'}/x"
    )

    chart = Path(__file__).resolve().parent.parent / "charts" / "download-model-to-bucket"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llmft",
            "local",
            str(chart),
            "--set",
            "modelID=./model",
            "--set",
            f"bucketModelPath={bucket}/models/tiny",
            "--name",
            "relative",
        ],
        env=runner_env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert read_object(parse_location(f"{bucket}/models/tiny/config.json"))
