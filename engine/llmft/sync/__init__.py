"""Crash-safe checkpoint streaming to the bucket, and resume from it.

A pod's disk dies with the pod; the bucket is the only durable place. While training,
every checkpoint the Trainer saves is staged (hard links) and uploaded in the
background, manifest last; older remote checkpoints are deleted only after a newer one
is complete. At start, the newest complete remote checkpoint is downloaded (verified)
and training resumes from it; a run whose final outputs and run-complete marker are in
the bucket is not trained again. See ARCHITECTURE.md, "Checkpoint lifecycle".

Importing this package does not import transformers or boto3.
"""

from llmft.run_layout import RUN_COMPLETE_MARKER
from llmft.sync.checkpoint_sync import (
    CheckpointSync,
    RestoreResult,
    background_settings,
)
from llmft.sync.remote_run import RemoteRun, parse_remote, scan

__all__ = [
    "RUN_COMPLETE_MARKER",
    "CheckpointSync",
    "RemoteRun",
    "RestoreResult",
    "background_settings",
    "parse_remote",
    "scan",
]
