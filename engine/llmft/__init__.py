"""llmft: the fine-tuning suite's one Python package and its `llmft` command."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `from llmft import Client` loads the SDK only when asked, so `llmft --help` stays fast.
    if name in ("Client", "DataScript", "Resources"):
        from llmft import sdk

        return getattr(sdk, name)
    if name == "search":
        from llmft.sdk import search

        return search
    raise AttributeError(f"module 'llmft' has no attribute {name!r}")
