"""The real chat templates kept under tests/data/chat_templates/, installed on the tiny model's tokenizer.

Each `<family>.jinja` is a model's template as published (its `<family>.json` names the SOURCE, the
bos/eos tokens, the end-of-turn token and the special tokens the template writes). `family_tokenizer`
gives the tiny byte-level BPE tokenizer with that template and those tokens (each one token, never
split), so the masks are computed exactly as for the real model's tokenizer.
"""

from __future__ import annotations

import json
from pathlib import Path

from llmft.finetune.data import IGNORE_INDEX

TEMPLATES = Path(__file__).resolve().parent / "data" / "chat_templates"
FAMILIES = sorted(path.stem for path in TEMPLATES.glob("*.jinja"))


def family_meta(name: str) -> dict:
    return json.loads((TEMPLATES / f"{name}.json").read_text(encoding="utf-8"))


def family_tokenizer(tiny_model_dir: Path, name: str):
    """The tiny model's tokenizer with `name`'s chat template, bos/eos and special tokens."""
    from llmft.finetune.model import load_tokenizer

    meta = family_meta(name)
    tokenizer = load_tokenizer(tiny_model_dir)
    tokens = {"extra_special_tokens": list(meta["special_tokens"]), "eos_token": meta["eos_token"]}
    if meta["bos_token"]:
        tokens["bos_token"] = meta["bos_token"]
    tokenizer.add_special_tokens(tokens, replace_extra_special_tokens=False)
    tokenizer.chat_template = (TEMPLATES / f"{name}.jinja").read_text(encoding="utf-8")
    return tokenizer


def write_family_model(tiny_model_dir: Path, name: str, folder: Path) -> Path:
    """A copy of the tiny model whose tokenizer carries `name`'s template (the engine resizes the embeddings)."""
    import shutil

    shutil.copytree(tiny_model_dir, folder)
    family_tokenizer(tiny_model_dir, name).save_pretrained(folder)
    return folder


def labelled_runs(example: dict) -> list[list[int]]:
    """The token ids of each contiguous run of positions that carry loss (their label is the token)."""
    runs, current = [], []
    for token, label in zip(example["input_ids"], example["labels"], strict=False):
        if label == IGNORE_INDEX:
            if current:
                runs.append(current)
            current = []
        else:
            assert label == token
            current.append(token)
    if current:
        runs.append(current)
    return runs
