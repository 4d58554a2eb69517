"""Where the local runner keeps its state.

`$LLMFT_STATE_DIR`, else `$XDG_STATE_HOME/llmft`, else ~/.local/state/llmft.
"""

from __future__ import annotations

import os
from pathlib import Path

from llmft import settings


def state_dir() -> Path:
    explicit = settings.current().state_dir
    if explicit:
        root = explicit
    else:
        base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
        root = Path(base) / "llmft"
    root.mkdir(parents=True, exist_ok=True)
    return root
