"""Logging that reads well in `kubectl logs`: one line per event, UTC timestamps."""

import logging
import sys
import time

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def setup_logging(level: int = logging.INFO) -> None:
    """Configure the root logger once for a CLI process (idempotent)."""
    root = logging.getLogger()
    if getattr(root, "_llmft_configured", False):
        return
    handler = logging.StreamHandler(sys.stderr)
    formatter = logging.Formatter(_FORMAT, datefmt="%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(level)
    # botocore and urllib3 are chatty at INFO; their warnings still show.
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3", "filelock", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    root._llmft_configured = True  # type: ignore[attr-defined]
