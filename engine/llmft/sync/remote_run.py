"""A run in the bucket: where it is (`parse_remote`) and what one listing shows (`scan`).

The names (checkpoint folders, finals, the run-complete marker) are `llmft.run_layout`'s.
A tree counts only when its manifest exists (see `llmft.storage.manifest`); the run
counts as finished only when the marker exists and every tree it lists is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from llmft.errors import UserError
from llmft.run_layout import MANIFEST_NAME, RUN_COMPLETE_MARKER, checkpoint_step
from llmft.storage import Location, parse_location
from llmft.storage.transfer import TransferSettings, list_objects, read_object


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
            f"{key_path}: {text!r} names a whole bucket; give a folder for this run, e.g. "
            f"{location.bucket}/experiments/my-run"
        )
    return location


@dataclass
class RemoteRun:
    """What one listing of `<remote>/` shows."""

    location: Location
    complete: dict[int, int] = field(default_factory=dict)  # step -> number of files
    incomplete: dict[int, int] = field(default_factory=dict)  # step -> files present (no manifest)
    marker: dict | None = None
    trees_complete: dict[str, bool] = field(default_factory=dict)  # final tree -> manifest present
    files_present: set[str] = field(default_factory=set)  # top-level files

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
