"""What is evaluated: check it before anything heavy, then fetch it.

`check_checkpoint` runs before any model loads: a bucket folder must be complete (its manifest, written
last by every upload, exists: `llmft.storage.manifest`), a local folder must hold a model (config.json and
weights), a run folder must have finished (its checkpoint-final, or for LoRA runs without a merged model its
checkpoint-final-adapter). It returns what it found with the model's config.json, which is all a
classification spec needs to check its labels.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from llmft.errors import UserError
from llmft.evaluate.spec import EvalSpec
from llmft.run_layout import FINAL, FINAL_ADAPTER, SUMMARY

log = logging.getLogger("llmft.evaluate")

WEIGHT_FILES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


@dataclass
class Checkpoint:
    """What a checkpoint target resolved to: a model folder, or a LoRA run's adapter with its base model."""

    model: str  # the location of the model (or, with `adapter`, of the base model)
    config: dict  # its config.json
    adapter: str | None = None  # a LoRA run without a merged checkpoint-final: merged before loading


def _key(spec: EvalSpec) -> str:
    return "target.run" if spec.target.run else "target.checkpoint"


def check_checkpoint(spec: EvalSpec) -> Checkpoint:
    """Refuse an incomplete or missing checkpoint with the fix, before anything heavy.

    A run whose checkpoint-final is missing but whose checkpoint-final-adapter is complete (LoRA without
    `mergeAdapter`) is evaluated as base + adapter, merged on the way in; the base is the run's
    `run_conf.model` from its summary.json.
    """
    from llmft.storage import parse_location

    given = spec.target.run or spec.target.checkpoint
    key = _key(spec)
    checkpoint = spec.checkpoint_location()
    assert checkpoint is not None, "called for a checkpoint or run target"
    location = parse_location(checkpoint)
    problem = _model_problem(location)
    if problem is None:
        return Checkpoint(checkpoint, _read_json(location.child("config.json")))
    if spec.target.run:
        run = parse_location(spec.target.run)
        adapter = run.child(FINAL_ADAPTER)
        if _tree_complete(adapter, "adapter_config.json"):
            return _adapter_checkpoint(spec, run, adapter)
        if run.is_local and not (run.path.expanduser() / SUMMARY).is_file():
            raise UserError(
                f"{key}: {given} has no {SUMMARY}: the run has not finished (or it is not a run folder "
                f"of `llmft sft`); wait for it, or evaluate one of its checkpoints with "
                f"target.checkpoint, got {given!r}"
            )
    raise UserError(f"{key}: {problem}, got {given!r}")


def _model_problem(location) -> str | None:
    from llmft.storage import is_complete

    if location.is_local:
        folder = location.path.expanduser()
        if not (folder / "config.json").is_file():
            return f"no model at {folder} (no config.json); give a model folder such as <run>/{FINAL}"
        if not any((folder / name).is_file() for name in WEIGHT_FILES):
            return (
                f"{folder} has a config.json but no weights ({', '.join(WEIGHT_FILES[::2])}): the checkpoint "
                "is not complete; evaluate a finished checkpoint"
            )
        return None
    if not is_complete(location):
        parent = location.key.rpartition("/")[0]
        return (
            f"{location} is not complete (no manifest: its upload is missing or unfinished); wait for the run "
            f"to finish or pick a complete checkpoint (`llmft storage ls {location.bucket}/{parent}` marks them)"
        )
    return None


def _tree_complete(location, marker: str) -> bool:
    from llmft.storage import is_complete

    if location.is_local:
        return (location.path.expanduser() / marker).is_file()
    return is_complete(location)


def _read_json(location) -> dict:
    from llmft.storage.transfer import read_object

    if location.is_local:
        return json.loads(location.path.expanduser().read_text())
    return json.loads(read_object(location))


def _adapter_checkpoint(spec: EvalSpec, run, adapter) -> Checkpoint:
    key = _key(spec)
    try:
        summary = _read_json(run.child(SUMMARY))
        base = summary["config"]["run_conf"]["model"]
    except (OSError, ValueError, KeyError, TypeError, UserError):
        raise UserError(
            f"{key}: {run} has a LoRA adapter ({FINAL_ADAPTER}) but no {FINAL} and no {SUMMARY} naming "
            f"its base model; merge it (`llmft merge-adapter BASE ADAPTER OUT`) and evaluate OUT with "
            f"target.checkpoint, got {spec.target.run!r}"
        ) from None
    if spec.data is not None and spec.data.format == "classification":
        raise UserError(
            f"{key}: {run} holds only a LoRA adapter; classification evaluates a merged model: "
            f"`llmft merge-adapter` it and use target.checkpoint"
        )
    from llmft.storage import parse_location

    base_location = parse_location(base)
    problem = None if base.startswith("hf://") else _model_problem(base_location)
    if problem:
        raise UserError(f"{key}: the run's base model (run_conf.model in {SUMMARY}): {problem}")
    log.info("%s has no %s: evaluating its adapter merged into %s", run, FINAL, base)
    return Checkpoint(base, {}, adapter=str(adapter))


@contextmanager
def fetched(spec: EvalSpec, checkpoint: Checkpoint) -> Iterator[Path]:
    """A local folder with the model (bucket folders downloaded and verified into the model cache; an adapter
    merged into its base in a scratch folder, removed afterwards)."""
    from llmft.finetune.model import cache_root, fetch_model

    model = fetch_model(checkpoint.model, what=_key(spec))
    if checkpoint.adapter is None:
        yield model
        return
    from llmft.finetune.merge import merge_adapter

    adapter = fetch_model(checkpoint.adapter, what=_key(spec), marker="adapter_config.json")
    cache_root().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmft-eval-merged-", dir=cache_root()) as scratch:
        yield merge_adapter(model, adapter, Path(scratch) / "merged")


def class_names(spec: EvalSpec, model_config: dict) -> list[str]:
    """The class names in output order: `data.labels`, else the model's `id2label`."""
    if spec.data is not None and spec.data.labels:
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
