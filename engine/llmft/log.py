"""Logging that reads well in `kubectl logs`: one line per event, UTC timestamps."""

import logging
import sys
import time
import warnings

_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

# Third-party messages that tell the user nothing: each is about something the engine already handles.
# Every other warning still shows.
_NOISE_WARNINGS = (
    # peft, when the chat template added tokens: the engine trains and saves those layers on purpose.
    (UserWarning, r"Setting `save_embedding_layers` to `True`"),
    # transformers' deprecated alias, still read by peft and trl internally.
    (FutureWarning, r"`is_gradient_checkpointing` is deprecated"),
)
_NOISE_LOG_LINES = {
    # DeepSpeed, on every import on a machine without a GPU (most llmft commands never train).
    "DeepSpeed": ("Setting accelerator to CPU",),
}


class _DropMessages(logging.Filter):
    def __init__(self, fragments: tuple[str, ...]):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def quiet_third_party() -> None:
    """Filter the known third-party noise (see `_NOISE_WARNINGS`, `_NOISE_LOG_LINES`)."""
    for category, pattern in _NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern, category=category)
    for logger_name, fragments in _NOISE_LOG_LINES.items():
        # The same logger object the library creates later (logging.getLogger returns one per name).
        logging.getLogger(logger_name).addFilter(_DropMessages(fragments))


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
    quiet_third_party()
    root._llmft_configured = True  # type: ignore[attr-defined]
