"""`llmft merge-adapter`: the merged model computes what base + adapter compute, also when the
vocabulary grew, and the folder is a plain servable model (safetensors, tokenizer, template,
generation_config)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from llmft.cli import main
from llmft.finetune.merge import merge_adapter

NEW_TOKENS = ["<|im_start|>", "<|im_end|>"]


def make_adapter(base: Path, folder: Path, grow_vocab: bool) -> Path:
    """A LoRA adapter with random (non-zero) weights, as training would leave it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base)
    modules_to_save = None
    if grow_vocab:
        tokenizer.add_special_tokens({"extra_special_tokens": NEW_TOKENS})
        model.resize_token_embeddings(len(tokenizer))
        modules_to_save = ["embed_tokens", "lm_head"]
    torch.manual_seed(1)
    peft_model = get_peft_model(
        model,
        LoraConfig(
            task_type="CAUSAL_LM",
            r=4,
            lora_alpha=8,
            target_modules="all-linear",
            init_lora_weights=False,
            modules_to_save=modules_to_save,
        ),
    )
    if grow_vocab:
        with torch.no_grad():  # trained rows for the new tokens
            for name, parameter in peft_model.named_parameters():
                if "modules_to_save" in name:
                    parameter.add_(torch.randn_like(parameter) * 0.02)
    peft_model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def reference_logits(base: Path, adapter: Path, input_ids: torch.Tensor) -> torch.Tensor:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base)
    tokenizer = AutoTokenizer.from_pretrained(adapter)
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(model, adapter).eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


def merged_logits(folder: Path, input_ids: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(input_ids=input_ids).logits


@pytest.mark.parametrize("grow_vocab", [False, True], ids=["lora-only", "resized-embeddings"])
def test_merged_logits_equal_base_plus_adapter(tiny_model_dir, tmp_path, grow_vocab):
    from transformers import AutoTokenizer

    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", grow_vocab)
    out = merge_adapter(tiny_model_dir, adapter, tmp_path / "merged")
    tokenizer = AutoTokenizer.from_pretrained(out)
    text = "<|im_start|>user\nhello there<|im_end|>" if grow_vocab else "hello there, general"
    input_ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    expected = reference_logits(tiny_model_dir, adapter, input_ids)
    got = merged_logits(out, input_ids)
    assert torch.allclose(expected, got, atol=1e-5)
    # The adapter really changed the model (the comparison would be vacuous otherwise).
    plain = tokenizer("hello there", return_tensors="pt", add_special_tokens=False)["input_ids"]
    base_vocab = merged_logits(tiny_model_dir, plain).shape[-1]
    assert not torch.allclose(
        merged_logits(tiny_model_dir, plain), merged_logits(out, plain)[..., :base_vocab], atol=1e-3
    )
    # A plain model folder: no PEFT files, safetensors weights, tokenizer with its template.
    assert (out / "model.safetensors").is_file() and not (out / "adapter_config.json").exists()
    assert (out / "tokenizer_config.json").is_file() and (out / "chat_template.jinja").is_file()
    assert (out / "generation_config.json").is_file()
    if grow_vocab:
        assert json.loads((out / "config.json").read_text())["vocab_size"] == 514


def test_merge_adapter_command_with_bucket_locations(tiny_model_dir, tmp_path, bucket, monkeypatch):
    from llmft.storage import is_complete, upload_tree
    from llmft.storage.location import parse_location

    monkeypatch.setenv("LLMFT_CACHE_DIR", str(tmp_path / "cache"))
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", grow_vocab=False)
    shutil.copy(tiny_model_dir / "generation_config.json", adapter / "generation_config.json")
    upload_tree(adapter, parse_location(f"{bucket}/runs/a/checkpoint-final-adapter"))
    assert (
        main(
            [
                "merge-adapter",
                str(tiny_model_dir),
                f"{bucket}/runs/a/checkpoint-final-adapter",
                f"s3://{bucket}/runs/a/checkpoint-final",
            ]
        )
        == 0
    )
    assert is_complete(parse_location(f"{bucket}/runs/a/checkpoint-final"))
    assert main(["merge-adapter", str(tiny_model_dir), str(adapter), str(tmp_path / "local-merged")]) == 0
    assert (tmp_path / "local-merged" / "model.safetensors").is_file()


def test_merge_adapter_rejects_a_folder_that_is_not_an_adapter(tiny_model_dir, tmp_path, capsys):
    assert main(["merge-adapter", str(tiny_model_dir), str(tiny_model_dir), str(tmp_path / "x")]) == 2
    assert "expected a folder with adapter_config.json" in capsys.readouterr().err


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.mark.parametrize(
    "out, message",
    [
        ("{base}", "merge-adapter OUT: {base} is the BASE folder {base}; writing there would overwrite it"),
        ("{base}/merged", "merge-adapter OUT: {base}/merged lies inside the BASE folder {base}"),
        ("{adapter}", "merge-adapter OUT: {adapter} is the ADAPTER folder {adapter}"),
        ("{full}", "merge-adapter OUT: {full} is not empty; choose a new folder, or pass --overwrite"),
        ("{file}", "merge-adapter OUT: {file} is a file; give the path of a folder"),
    ],
)
def test_merge_adapter_refuses_an_out_that_would_destroy_files_before_loading_anything(
    tiny_model_dir, tmp_path, capsys, out, message
):
    base = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")  # never read: the refusal comes first
    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    file = tmp_path / "file.bin"
    file.write_text("mine")
    names = {"base": base, "adapter": adapter, "full": full, "file": file}
    before = {name: _tree(path) if path.is_dir() else path.read_bytes() for name, path in names.items()}
    assert main(["merge-adapter", str(base), str(adapter), out.format(**names)]) == 2
    err = capsys.readouterr().err
    assert message.format(**names) in err and "Traceback" not in err
    assert before == {name: _tree(path) if path.is_dir() else path.read_bytes() for name, path in names.items()}


def test_merge_adapter_overwrite_replaces_a_non_empty_out(tiny_model_dir, tmp_path):
    adapter = make_adapter(tiny_model_dir, tmp_path / "adapter", grow_vocab=False)
    out = tmp_path / "merged"
    out.mkdir()
    (out / "stale.safetensors").write_text("an older merge")
    assert main(["merge-adapter", str(tiny_model_dir), str(adapter), str(out), "--overwrite"]) == 0
    assert not (out / "stale.safetensors").exists() and (out / "model.safetensors").is_file()
