"""What a run leaves in its output folder, and the progress lines it logs.

The folder's names (`checkpoint-<step>/`, `checkpoint-final/`, `metrics.jsonl`, `summary.json`, ...)
are `llmft.run_layout`'s. Locally, a run is finished exactly when summary.json says
`"status": "complete"`.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

from llmft.progress import human_duration
from llmft.run_layout import (  # noqa: F401 - FINAL, FINAL_ADAPTER: recipe.py reads them as outputs.*
    FINAL,
    FINAL_ADAPTER,
    METRICS,
    SUMMARY,
    TRAINER_STATE,
    checkpoint_name,
    checkpoint_step,
)

log = logging.getLogger("llmft.finetune")

# Trainer log keys that metrics.jsonl carries under its own names (or not at all: per-session totals).
# trl's `num_tokens` sums the attention mask, which is meaningless for packing's block-diagonal mask;
# `tokens_seen` is the count that holds in every mode.
SKIPPED_LOG_KEYS = {"epoch", "step", "num_input_tokens_seen", "train_runtime", "train_tokens_per_second", "num_tokens"}


def complete_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """`checkpoint-<step>/` folders that a resume can trust (their trainer state exists), oldest first."""
    found = []
    if output_dir.is_dir():
        for child in output_dir.iterdir():
            step = checkpoint_step(child.name)
            if step is not None and child.is_dir() and (child / TRAINER_STATE).is_file():
                found.append((step, child))
    return sorted(found)


def run_is_complete(output_dir: Path) -> bool:
    try:
        return json.loads((output_dir / SUMMARY).read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def write_json(path: Path, data: dict) -> None:
    """Write via a temporary file and rename, so a reader never sees half a file."""
    partial = path.with_name(path.name + ".part")
    partial.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(partial, path)


def _number(value):
    return round(value, 6) if isinstance(value, float) else value


def make_callbacks(output_dir: Path, is_main: bool, tokenizer, generation_config):
    """Trainer callbacks: progress lines + metrics.jsonl, and model-folder extras on every save."""
    from transformers import TrainerCallback

    class ProgressAndMetrics(TrainerCallback):
        """One log line and one metrics.jsonl row per logging or evaluation step."""

        def __init__(self):
            self.path = output_dir / METRICS
            self.started = None
            self.start_step = 0
            self.last_time = None
            self.last_tokens = 0

        def on_train_begin(self, args, state, control, **kwargs):
            now = time.monotonic()
            self.started, self.last_time = now, now
            self.start_step = state.global_step
            self.last_tokens = state.num_input_tokens_seen
            if is_main:
                self._keep_rows_up_to(state.global_step)

        def _keep_rows_up_to(self, step: int) -> None:
            """On a fresh start drop old rows; on resume drop rows logged after the checkpoint."""
            if not self.path.exists():
                return
            rows = [line for line in self.path.read_text().splitlines() if line.strip()]
            kept = [line for line in rows if step and json.loads(line).get("step", 0) <= step]
            self.path.write_text("".join(line + "\n" for line in kept))

        def on_log(self, args, state, control, logs=None, **kwargs):
            logs = dict(logs or {})
            if "train_loss" in logs:
                return  # the end-of-training summary goes to summary.json
            now = time.monotonic()
            row = {"step": state.global_step, "epoch": _number(state.epoch)}
            tokens = state.num_input_tokens_seen
            is_train = "loss" in logs
            if is_train:
                elapsed = max(now - self.last_time, 1e-9)
                row["tokens_seen"] = tokens
                row["tokens_per_second"] = round((tokens - self.last_tokens) / elapsed, 1)
                self.last_time, self.last_tokens = now, tokens
            for key, value in logs.items():
                if key in SKIPPED_LOG_KEYS or not isinstance(value, (int, float)):
                    continue
                row[key] = _number(value)
            if not is_main:
                return
            with self.path.open("a") as handle:
                handle.write(json.dumps(row) + "\n")
            if is_train:
                log.info(self._line(state, row, now))
            elif "eval_loss" in logs:
                log.info("eval at step %d/%d: eval_loss %.4f", state.global_step, state.max_steps, logs["eval_loss"])

        def _line(self, state, row, now) -> str:
            done = state.global_step - self.start_step
            remaining = max(state.max_steps - state.global_step, 0)
            eta = (now - self.started) / done * remaining if done else float("nan")
            percent = 100 * state.global_step / max(state.max_steps, 1)
            parts = [
                f"step {state.global_step}/{state.max_steps} ({percent:.0f}%)",
                f"loss {row['loss']:.4f}",
            ]
            if "learning_rate" in row:
                parts.append(f"lr {row['learning_rate']:.3g}")
            if "grad_norm" in row:
                parts.append(f"grad_norm {row['grad_norm']:.3g}")
            parts.append(f"tokens/s {row['tokens_per_second']:.0f}")
            parts.append(f"ETA {human_duration(eta) if eta == eta else '?'}")
            return ", ".join(parts)

    class ModelFolderExtras(TrainerCallback):
        """Every saved checkpoint gets the tokenizer (with chat template) and generation_config.json."""

        def on_save(self, args, state, control, **kwargs):
            if not is_main:
                return
            folder = output_dir / checkpoint_name(state.global_step)
            if folder.is_dir():
                save_model_extras(folder, tokenizer, generation_config)

    return [ProgressAndMetrics(), ModelFolderExtras()]


def save_model_extras(folder: Path, tokenizer, generation_config) -> None:
    """Tokenizer with its chat template and a generation_config whose eos ids end each turn (a classifier
    has none: `generation_config` None)."""
    tokenizer.save_pretrained(str(folder))
    if generation_config is not None:
        generation_config.save_pretrained(str(folder))


LABEL_MAP = "labels.json"


def save_label_map(folder: Path, model) -> None:
    """A classifier's adapter gets its label set (`labels.json`: id2label, label2id), which
    `llmft merge-adapter` puts in the merged model's config.json; other models get nothing."""
    config = getattr(model, "config", None)
    if config is None or getattr(config, "problem_type", None) != "single_label_classification":
        return
    id2label = {int(key): value for key, value in config.id2label.items()}
    write_json(folder / LABEL_MAP, {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}})


def adapter_tensor_names(adapter_dir: Path) -> list[str]:
    from safetensors import safe_open

    path = adapter_dir / "adapter_model.safetensors"
    if not path.exists():
        return []
    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


def adapter_is_lora_only(adapter_dir: Path) -> bool:
    """True when the adapter holds only LoRA tensors (what vLLM loads as a LoRA adapter)."""
    names = adapter_tensor_names(adapter_dir)
    return bool(names) and all("lora_" in name for name in names)
