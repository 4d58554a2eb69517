"""A run's metrics.jsonl rows, read from the bucket (the run streams it to its checkpointsRemote)."""

from __future__ import annotations

import json

from llmft.run_layout import METRICS


def read_metrics(remote: str) -> list[dict]:
    """The rows of `<remote>/metrics.jsonl`; [] before the run uploaded it (every LLMFT_SYNC_INTERVAL and save)."""
    from llmft.storage import parse_location
    from llmft.storage.transfer import read_object

    data = read_object(parse_location(remote.rstrip("/")).child(METRICS), missing_ok=True)
    if not data:
        return []
    rows = []
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a row cut short by an upload in progress
    return rows
