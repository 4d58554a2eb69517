"""The names of everything a fine-tuning run writes: one owner for the output folder and the bucket.

```
<output_dir>/ and <remote>/
  checkpoint-<step>/            resumable Trainer checkpoints (+ tokenizer, generation_config.json)
  checkpoint-final/             the model to serve: the full model, or base + LoRA merged
  checkpoint-final-adapter/     LoRA runs: the adapter (+ tokenizer, generation_config.json)
  logs/                         TensorBoard event files (the bucket's copy may go to `logsRemote` instead)
  metrics.jsonl                 one JSON object per logging or evaluation step
  summary.json                  written last locally: status "complete", losses, steps, throughput, config
  eval/<name>/                  `llmft evaluate`: results.json (written last), samples.jsonl, lm_eval.json
<remote>/ only
  checkpoint-final-merged/      a merged LoRA run's checkpoint-final again, under the original tutorial's name
  .llmft-run-complete.json      written LAST by checkpoint sync: the run is done (lists its outputs)
every tree in the bucket
  .llmft-manifest.json          written last by an upload: the tree is complete (see `llmft.storage.manifest`)
<output_dir>/ only
  .llmft-sync-staging/          hard-linked checkpoints waiting for their upload
  .llmft-restore.json           what restore found, for the other processes of a node
```

`finetune/outputs.py` writes the local folder, `llmft.sync` mirrors it to the bucket and
restores from it, and `llmft storage ls` reports on both: all three import these names.
"""

from __future__ import annotations

import re

CHECKPOINT_PREFIX = "checkpoint-"
CHECKPOINT_PATTERN = re.compile(r"^checkpoint-(\d+)$")
TRAINER_STATE = "trainer_state.json"  # the Trainer writes it last into a checkpoint

FINAL = "checkpoint-final"
FINAL_ADAPTER = "checkpoint-final-adapter"
FINAL_MERGED = "checkpoint-final-merged"
LOGS = "logs"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
EVAL = "eval"
EVAL_RESULTS = "results.json"
EVAL_SAMPLES = "samples.jsonl"
EVAL_HARNESS = "lm_eval.json"

MANIFEST_NAME = ".llmft-manifest.json"
RUN_COMPLETE_MARKER = ".llmft-run-complete.json"
SYNC_STAGING_DIR = ".llmft-sync-staging"
RESTORE_RESULT_FILE = ".llmft-restore.json"

# What checkpoint sync uploads at the end (trees, then files), and what it refreshes while training runs.
FINAL_MODELS = (FINAL, FINAL_ADAPTER)  # at least one of them: the full (or merged) model, or the adapter
FINAL_TREES = (FINAL, FINAL_ADAPTER, LOGS)
FINAL_FILES = (METRICS, SUMMARY)
PROGRESS_TREES = (LOGS,)
PROGRESS_FILES = (METRICS,)


def checkpoint_name(step: int) -> str:
    return f"{CHECKPOINT_PREFIX}{step}"


def checkpoint_step(name: str) -> int | None:
    """The step of a `checkpoint-<step>` folder name, None for anything else (e.g. checkpoint-final)."""
    match = CHECKPOINT_PATTERN.match(name)
    return int(match.group(1)) if match else None
