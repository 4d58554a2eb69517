"""The Python SDK: `from llmft import Client` (or `from llmft.sdk import Client, search`).

Modules: `client` (the Client), `plan` (arguments -> checked, rendered chart steps), `local_backend` and
`supervisor` (jobs as local processes), `kubernetes_backend` (server-side apply through the official client),
`jobs` (Job, Step, Progress, BestResult), `search` (search-space helpers), `errors`. docs/sdk.md is the guide.
"""

from __future__ import annotations

from typing import Any

_EXPORTS = {
    "Client": "llmft.sdk.client",
    "DataScript": "llmft.sdk.plan",
    "Resources": "llmft.sdk.plan",
    "Job": "llmft.sdk.jobs",
    "Step": "llmft.sdk.jobs",
    "Progress": "llmft.sdk.jobs",
    "BestResult": "llmft.sdk.jobs",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in ("search", "errors"):
        import importlib

        return importlib.import_module(f"llmft.sdk.{name}")
    raise AttributeError(f"module 'llmft.sdk' has no attribute {name!r}")


__all__ = ["BestResult", "Client", "DataScript", "Job", "Progress", "Resources", "Step", "errors", "search"]
