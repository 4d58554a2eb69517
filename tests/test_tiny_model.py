"""`llmft tiny-model`: a real, loadable, deterministic model folder built offline."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


def test_loads_generates_and_has_chat_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert tokenizer.pad_token and tokenizer.bos_token and tokenizer.eos_token
    assert len({tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id}) == 3
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|user|>\nWhat is the capital of France?</s>\n<|assistant|>\n"
    # Byte-level BPE: arbitrary text round-trips exactly.
    sample = "Ünïcødé & emoji 🚀 {json: [1, 2]}"
    assert tokenizer.decode(tokenizer(sample, add_special_tokens=False)["input_ids"]) == sample
    inputs = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert output.shape[1] == inputs["input_ids"].shape[1] + 5 or tokenizer.eos_token_id in output[0]
    for name in ("model.safetensors", "config.json", "tokenizer.json", "generation_config.json"):
        assert (tiny_model_dir / name).is_file()


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_same_seed_same_files_different_seed_different_weights(tmp_path):
    from llmft.tiny_model import build_tiny_model

    # Two separate processes with the same seed write identical files.
    for name in ("a", "b"):
        subprocess.run(
            [sys.executable, "-m", "llmft", "tiny-model", str(tmp_path / name), "--seed", "1"],
            check=True,
            capture_output=True,
        )
    build_tiny_model(tmp_path / "c", seed=2)
    a, b, c = (_digest(tmp_path / n) for n in "abc")
    assert a == b
    assert a["model.safetensors"] != c["model.safetensors"]
    assert a["tokenizer.json"] == c["tokenizer.json"]
