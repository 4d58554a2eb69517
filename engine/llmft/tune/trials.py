"""One trial: its folder, its finetune config, and the training process that runs it.

```
<experiment>/
  spec.yaml            the spec the experiment was started with
  study.journal        the Optuna study (the default local storage)
  experiment.json      the trials as a table (also <checkpointsRemote>/experiment.json)
  trial-<n>/
    config.yaml        the base config with this trial's values, output_dir and checkpoints_remote set
    tune-trial.json    what the training process needs to report to the study (no secrets)
    train.log          the training process's output (appended on every attempt)
    evaluate.yaml      with tune.evaluation: the evaluation spec of this trial's final model
    evaluate.log       the evaluation process's output
    output/            training_args.output_dir: checkpoint-<step>/, checkpoint-final/, metrics.jsonl, summary.json,
                       eval/<name>/results.json (the evaluation's metrics)
```

A trial is an ordinary finetune run: `llmft train config.yaml` resumes from its newest checkpoint
(locally or in `<checkpointsRemote>/trial-<n>/`) when started again, like any run.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from llmft.finetune.config import load_config
from llmft.finetune.outputs import write_json
from llmft.run_layout import EVAL, FINAL_MODELS
from llmft.tune import keypath
from llmft.tune.spec import STORAGE_ENV, TuneSpec

CONFIG = "config.yaml"
TRIAL_FILE = "tune-trial.json"
LOG = "train.log"
EVALUATION_SPEC = "evaluate.yaml"
EVALUATION_LOG = "evaluate.log"
OUTPUT = "output"
TRIAL_ENV = "LLMFT_TUNE_TRIAL"  # the training process reads its trial file from here
PRUNED_MARKER = "tune-pruned.json"  # written into output/ by the pruning callback
PRUNED_ATTR = "llmft:pruned_at"  # the same, as a user attribute of the trial in the study


def trial_dir(experiment_dir: Path, number: int) -> Path:
    return experiment_dir / f"trial-{number}"


def remote_dir(spec: TuneSpec, number: int) -> str | None:
    return f"{spec.checkpointsRemote.rstrip('/')}/trial-{number}" if spec.checkpointsRemote else None


def trial_config(spec: TuneSpec, number: int, values: dict[str, Any], experiment_dir: Path) -> dict:
    """The base config with the trial's values at their keys, and the trial's own output folders."""
    paths = dict(zip([p.label for p in spec.tune.search_space], spec.parameter_paths(), strict=True))
    config = keypath.with_values(spec.base_config(), {paths[name]: value for name, value in values.items()})
    config.setdefault("training_args", {})["output_dir"] = str(trial_dir(experiment_dir, number) / OUTPUT)
    run = config.setdefault("run_conf", {})
    run.setdefault("resume_from_checkpoint", "auto")
    remote = remote_dir(spec, number)
    if remote:
        run["checkpoints_remote"] = remote
    return config


@dataclass
class Prepared:
    folder: Path
    config_path: Path
    command: list[str]


def prepare(spec: TuneSpec, number: int, values: dict[str, Any], experiment_dir: Path) -> Prepared:
    """Write the trial's config and trial file; the engine validates the config (UserError if it rejects it)."""
    folder = trial_dir(experiment_dir, number)
    folder.mkdir(parents=True, exist_ok=True)
    config = trial_config(spec, number, values, experiment_dir)
    # One training process per GPU of the trial (launch_conf, as the finetune chart sets it); on a machine
    # without GPUs one process on the CPU.
    gpus = spec.tune.resources_per_trial.gpus
    processes = gpus if gpus > 1 and _has_gpus() else 1
    config["launch_conf"] = {**(config.get("launch_conf") or {}), "num_processes": processes}
    load_config(config)  # every problem of this combination of values, before a process starts
    config_path = folder / CONFIG
    config_path.write_text(
        f"# trial {number} of experiment {spec.name}: {json.dumps(values)}\n" + yaml.safe_dump(config, sort_keys=False)
    )
    source = spec.objective_source()
    write_json(
        folder / TRIAL_FILE,
        {
            "study": spec.name,
            "trial_number": number,
            "report": source.step_key or source.name,
            "early_stopping": spec.tune.early_stopping.model_dump(mode="json"),
        },
    )
    command = [sys.executable, "-m", "llmft", "train", str(config_path)]
    return Prepared(folder, config_path, command)


def _has_gpus() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def evaluation_command(spec: TuneSpec, number: int, experiment_dir: Path) -> list[str]:
    """Write the trial's evaluation spec (tune.evaluation on its final model); the command that runs it.

    The final model is read from the trial's local output when training left it there, else from the
    trial's bucket folder (a worker restarted after the training ended); the results go to the local
    output either way, where the tuner reads them.
    """
    assert spec.tune.evaluation is not None, "only for experiments with tune.evaluation"
    folder = trial_dir(experiment_dir, number)
    output = folder / OUTPUT
    remote = remote_dir(spec, number)
    local_final = any((output / name).is_dir() for name in FINAL_MODELS)
    evaluation = spec.tune.evaluation.model_dump(mode="json", exclude_none=True)
    evaluation["target"] = {"run": str(output) if local_final or not remote else remote}
    evaluation["output"] = str(output / EVAL / spec.tune.evaluation.name)
    spec_path = folder / EVALUATION_SPEC
    spec_path.write_text(f"# trial {number} of experiment {spec.name}\n" + yaml.safe_dump(evaluation, sort_keys=False))
    return [sys.executable, "-m", "llmft", "evaluate", str(spec_path)]


def start(
    prepared: Prepared, storage_url: str, environment: dict[str, str], evaluation: list[str] | None = None
) -> subprocess.Popen:
    """Start the training process (or, given its command, the evaluation): its own session (Ctrl-C reaches
    only the tuner), gone with the tuner."""
    env = dict(os.environ, **environment)
    env[TRIAL_ENV] = str(prepared.folder / TRIAL_FILE)
    env[STORAGE_ENV] = storage_url
    log_file = open(prepared.folder / (EVALUATION_LOG if evaluation else LOG), "ab")  # noqa: SIM115 - the child's
    try:
        return subprocess.Popen(
            evaluation or prepared.command,
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - no thread of the tuner runs here
        )
    finally:
        log_file.close()


def _die_with_parent() -> None:
    """Linux: the trial gets SIGTERM when the tuner dies, so a relaunched tuner never races an orphan."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def was_pruned(folder: Path) -> dict | None:
    try:
        return json.loads((folder / OUTPUT / PRUNED_MARKER).read_text())
    except (OSError, ValueError):
        return None
