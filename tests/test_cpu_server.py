"""`llmft serve`: the CPU stand-in for vLLM answers the OpenAI chat API the tutorial's curl uses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from llmft.storage.seaweed import free_ports


def http(url: str, body: dict | None = None) -> tuple[int, dict | str]:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode() if body is not None else None, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read().decode()
            return response.status, json.loads(text) if text.startswith("{") else text
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read().decode())


@pytest.fixture
def adapter_dir(tiny_model_dir, tmp_path):
    """A LoRA adapter with non-zero weights, so it changes the model's output."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir),
        LoraConfig(r=4, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False),
    )
    path = tmp_path / "adapter"
    model.save_pretrained(path)
    return path


def test_chat_completions_models_and_health(tiny_model_dir, adapter_dir):
    port = free_ports(1)[0]
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llmft",
            "serve",
            str(tiny_model_dir),
            "--port",
            str(port),
            "--served-model-name",
            "tiny-run",
            "--lora-module",
            f"my-adapter={adapter_dir}",
        ],
        env={**os.environ},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if http(f"{base}/health")[0] == 200:
                    break
            except OSError:
                pass
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.5)
        status, models = http(f"{base}/v1/models")
        assert status == 200 and [m["id"] for m in models["data"]] == ["tiny-run", "my-adapter"]
        question = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "max_tokens": 8}
        status, answer = http(f"{base}/v1/chat/completions", {"model": "tiny-run", **question})
        assert status == 200
        assert answer["object"] == "chat.completion" and answer["model"] == "tiny-run"
        assert answer["choices"][0]["message"]["role"] == "assistant"
        assert isinstance(answer["choices"][0]["message"]["content"], str)
        assert answer["usage"]["completion_tokens"] <= 8
        # Greedy decoding is deterministic; the adapter's random non-zero weights change the answer.
        again = http(f"{base}/v1/chat/completions", {"model": "tiny-run", **question})[1]
        assert again["choices"][0]["message"]["content"] == answer["choices"][0]["message"]["content"]
        status, via_adapter = http(f"{base}/v1/chat/completions", {"model": "my-adapter", **question})
        assert status == 200 and via_adapter["model"] == "my-adapter"
        assert via_adapter["choices"][0]["message"]["content"] != answer["choices"][0]["message"]["content"]
        status, error = http(f"{base}/v1/chat/completions", {"model": "nope", **question})
        assert status == 404 and "available: tiny-run, my-adapter" in error["error"]["message"]
        status, error = http(f"{base}/v1/chat/completions", {"model": "tiny-run", "messages": []})
        assert status == 400
    finally:
        process.terminate()
        process.wait(timeout=30)
