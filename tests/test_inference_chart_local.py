"""The llm-inference-vllm chart end to end on this machine, through `llmft local` and the real S3 server.

The rendered pod runs as local processes: the init containers' `llmft storage cp` downloads the model and an
adapter from the bucket into the pod's volume, then the server answers the tutorial's chat request. vLLM needs
a GPU, so the local runner serves the same command with `llmft serve` (the CPU stand-in with the same API,
model name, port and LoRA modules); everything else is what the cluster runs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest
from harness import CHARTS

from llmft.storage import MANIFEST_NAME, parse_location, upload_tree
from llmft.storage.seaweed import free_ports
from llmft.storage.transfer import delete_object

CHART = CHARTS / "llm-inference-vllm"
pytestmark = pytest.mark.slow


def _post(url: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def _start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "llmft", "local", str(CHART), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _wait_healthy(process: subprocess.Popen, base: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"llmft local exited with {process.returncode}:\n{process.stdout.read()}")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the server did not become healthy")


def _stop(process: subprocess.Popen) -> str:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.stdout.read()


@pytest.fixture
def local_env(s3_env, tmp_path):
    return {**os.environ, **s3_env, "LLMFT_STATE_DIR": str(tmp_path / "state")}


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    """A LoRA adapter for the tiny model, with non-zero weights."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False),
    )
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    return path


def test_tutorial_deploy_downloads_and_answers_chat(s3_env, bucket, local_env, tiny_model_dir, adapter_dir):
    model = f"s3://{bucket}/experiments/tiny-run/checkpoint-final"
    adapter = f"{bucket}/experiments/tiny-run/checkpoint-final-adapter"
    upload_tree(tiny_model_dir, parse_location(model))
    upload_tree(adapter_dir, parse_location(adapter))
    port = free_ports(1)[0]
    process = _start(
        [
            "--set",
            f"model={model}",
            "--set",
            "vllm_engine_args.served_model_name=tiny-run",
            "--set",
            f"adapters.my-adapter={adapter}",
            "--name",
            "tiny-run",
            "--port",
            str(port),
        ],
        local_env,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(process, base)
        question = "What are the top five benefits of eating a large breakfast?"
        for name in ("tiny-run", "my-adapter"):
            status, body = _post(
                f"{base}/v1/chat/completions",
                {"model": name, "max_tokens": 8, "messages": [{"role": "user", "content": question}]},
            )
            assert status == 200, body
            assert isinstance(body["choices"][0]["message"]["content"], str)
        with urllib.request.urlopen(f"{base}/v1/models", timeout=10) as response:
            served = {m["id"] for m in json.loads(response.read())["data"]}
        assert {"tiny-run", "my-adapter"} <= served
    finally:
        output = _stop(process)
    assert "download-model" in output


def test_incomplete_upload_never_starts_the_server(s3_env, bucket, local_env, tiny_model_dir):
    model = f"{bucket}/experiments/crashed/checkpoint-final"
    upload_tree(tiny_model_dir, parse_location(model))
    delete_object(parse_location(model).child(MANIFEST_NAME))  # an upload that never finished
    process = _start(["--set", f"model={model}", "--name", "crashed", "--port", str(free_ports(1)[0])], local_env)
    try:
        code = process.wait(timeout=120)
    finally:
        output = _stop(process)
    assert code != 0
    assert "incomplete" in output and "no manifest" in output
    assert "serving on" not in output
