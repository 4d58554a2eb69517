"""What is evaluated: check it before anything heavy, then fetch it.

`check_checkpoint` runs before any model loads: a bucket folder must be complete (its manifest, written
last by every upload, exists: `llmft.storage.manifest`), a local folder must hold a model (config.json and
weights), a run folder must have finished (its checkpoint-final). It returns the model's config.json, which
is all a classification spec needs to check its labels.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from llmft.errors import UserError
from llmft.evaluate.spec import EvalSpec
from llmft.run_layout import FINAL, SUMMARY

log = logging.getLogger("llmft.evaluate")

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json")


def _key(spec: EvalSpec) -> str:
    return "target.run" if spec.target.run else "target.checkpoint"


def check_checkpoint(spec: EvalSpec) -> dict:
    """Refuse an incomplete or missing checkpoint with the fix; return its config.json."""
    from llmft.storage import is_complete, parse_location
    from llmft.storage.transfer import read_object

    given = spec.target.run or spec.target.checkpoint
    location = parse_location(spec.checkpoint_location())
    key = _key(spec)
    if location.is_local:
        folder = location.path.expanduser()
        if spec.target.run and not (Path(given).expanduser() / SUMMARY).is_file():
            raise UserError(f"{key}: {given} has no {SUMMARY}: the run has not finished (or it is not a run folder "
                            f"of `llmft sft`); wait for it, or evaluate one of its checkpoints with "
                            f"target.checkpoint, got {given!r}")
        if not (folder / "config.json").is_file():
            raise UserError(f"{key}: no model at {folder} (no config.json); give a model folder such as "
                            f"<run>/{FINAL}, got {given!r}")
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            raise UserError(f"{key}: {folder} has a config.json but no weights ({', '.join(WEIGHT_FILES[::2])}): "
                            f"the checkpoint is not complete; evaluate a finished checkpoint, got {given!r}")
        return json.loads((folder / "config.json").read_text())
    if not is_complete(location):
        raise UserError(f"{key}: {location} is not complete (no manifest: its upload is missing or unfinished); "
                        f"wait for the run to finish or pick a complete checkpoint (`llmft storage ls "
                        f"{location.bucket}/{location.key.rpartition('/')[0]}` marks them), got {given!r}")
    return json.loads(read_object(location.child("config.json")))


def fetch_checkpoint(spec: EvalSpec) -> Path:
    """A local folder with the checkpoint (bucket folders are downloaded, verified, into the model cache)."""
    from llmft.finetune.model import fetch_model

    return fetch_model(spec.checkpoint_location(), what=_key(spec))


def class_names(spec: EvalSpec, model_config: dict) -> list[str]:
    """The class names in output order: `data.labels`, else the model's `id2label`."""
    if spec.data.labels:
        return list(spec.data.labels)
    id2label = model_config.get("id2label") or {}
    if not id2label:
        count = int(model_config.get("num_labels", 2))
        return [f"LABEL_{i}" for i in range(count)]
    return [id2label[key] for key in sorted(id2label, key=int)]


def reference_label(label, names: list[str]) -> str | None:
    """A data label as a class name: a name as it is, an index mapped to its name; None when unknown."""
    if isinstance(label, int):
        return names[label] if 0 <= label < len(names) else None
    return label if label in names else None
