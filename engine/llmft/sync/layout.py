"""The layout of a run in the bucket, and a scan of what is there.

```
<remote>/checkpoint-<step>/        resumable Trainer checkpoints (complete = manifest present)
<remote>/checkpoint-final/         the final model            \\
<remote>/checkpoint-final-adapter/ the LoRA adapter (LoRA runs)  } uploaded by `finish()`
<remote>/logs/  metrics.jsonl  summary.json                    /  (logs and metrics also during training)
<remote>/.llmft-run-complete.json  written LAST by `finish()`: the run is done
```

A tree counts only when its manifest exists (see `llmft.storage.manifest`); the run
counts as finished only when the marker exists and every tree it lists is complete.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from llmft.errors import UserError
from llmft.storage import MANIFEST_NAME, Location, parse_location
from llmft.storage.transfer import TransferSettings, list_objects, read_object

RUN_COMPLETE_MARKER = ".llmft-run-complete.json"
CHECKPOINT_PREFIX = "checkpoint-"
FINAL_TREES = ("checkpoint-final", "checkpoint-final-adapter", "logs")
FINAL_FILES = ("metrics.jsonl", "summary.json")
PROGRESS_TREES = ("logs",)
PROGRESS_FILES = ("metrics.jsonl",)

_STEP_DIR = re.compile(r"^checkpoint-(\d+)$")


def checkpoint_step(name: str) -> int | None:
    """The step of a `checkpoint-<step>` folder name, None for anything else (e.g. checkpoint-final)."""
    match = _STEP_DIR.match(name)
    return int(match.group(1)) if match else None


def parse_remote(text: str, key_path: str = "run_conf.checkpoints_remote") -> Location:
    """The remote run location; a local path is refused with the fix."""
    location = parse_location(str(text))
    if location.is_local:
        raise UserError(
            f"{key_path}: {text!r} is a local path; checkpoints stream to the bucket, so give "
            "s3://bucket/path or bucket/path (or leave it unset to keep checkpoints local only)"
        )
    if not location.key.strip("/"):
        raise UserError(
            f"{key_path}: {text!r} names a whole bucket; give a folder for this run, e.g. {location.bucket}/experiments/my-run"
        )
    return location


@dataclass
class RemoteRun:
    """What one listing of `<remote>/` shows."""

    location: Location
    complete: dict[int, int] = field(default_factory=dict)     # step -> number of files
    incomplete: dict[int, int] = field(default_factory=dict)   # step -> files present (no manifest)
    marker: dict | None = None
    trees_complete: dict[str, bool] = field(default_factory=dict)  # final tree -> manifest present
    files_present: set[str] = field(default_factory=set)           # top-level files

    @property
    def newest_complete(self) -> int | None:
        return max(self.complete) if self.complete else None

    def finished(self) -> tuple[bool, str]:
        """(True, "") when the marker exists and every output it lists is complete, else (False, why)."""
        if self.marker is None:
            return False, "no run-complete marker"
        missing = [name for name in self.marker.get("trees", []) if not self.trees_complete.get(name)]
        missing += [name for name in self.marker.get("files", []) if name not in self.files_present]
        if missing:
            return False, f"the run-complete marker lists outputs that are missing or incomplete: {', '.join(missing)}"
        return True, ""


def scan(location: Location, settings: TransferSettings | None = None) -> RemoteRun:
    """List `<remote>/` once and classify checkpoints (complete or not) and final outputs."""
    run = RemoteRun(location)
    objects = list_objects(location, settings)
    per_tree: dict[str, list[str]] = {}
    for relative in objects:
        top, _, rest = relative.partition("/")
        if rest:
            per_tree.setdefault(top, []).append(rest)
        else:
            run.files_present.add(top)
    for name, files in per_tree.items():
        complete = MANIFEST_NAME in files
        step = checkpoint_step(name)
        if step is not None:
            (run.complete if complete else run.incomplete)[step] = len(files)
        else:
            run.trees_complete[name] = complete
    if RUN_COMPLETE_MARKER in run.files_present:
        data = read_object(location.child(RUN_COMPLETE_MARKER), missing_ok=True, settings=settings)
        if data is not None:
            try:
                run.marker = json.loads(data)
            except ValueError:
                run.marker = None
    return run
