"""lm-evaluation-harness (`lm-eval`) tasks defined in YAML files of a folder: no Hub at run time.

The task folder (local, or in the bucket: downloaded first) holds lm-eval task YAMLs and their data; a task
reads local files with `dataset_path: json` and `dataset_kwargs: {data_files: {test: facts.jsonl}}`, paths
relative to the folder (lm-eval runs with the folder as its working directory). Only this folder is indexed
(`TaskManager(include_defaults=False)`), so a task name that is not defined there fails before any model
loads, with the names that are. The model is the checkpoint, loaded by lm-eval's `hf` model from the same
folder the other metrics use; with `apply_chat_template` prompts go through the model's chat template.

Results join the evaluation's metrics as `lm_eval/<task>/<metric>` (lm-eval's filter name appended when
it is not `none`; standard errors and sample counts left out). They are kept in `<output>/lm_eval.json`, so a restarted
evaluation does not run the tasks again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from llmft.errors import UserError
from llmft.evaluate.spec import LmEval

log = logging.getLogger("llmft.evaluate")


def _require():
    try:
        import lm_eval  # noqa: F401
    except ImportError:
        raise UserError(
            "lm_eval: the lm-eval package is not installed here; install it (pip install "
            "lm-eval==0.4.13, part of llmft's `train` extra) or remove lm_eval from the metrics"
        ) from None


@contextlib.contextmanager
def task_folder(settings: LmEval) -> Iterator[Path]:
    """A local copy of `task_dir` (bucket folders are downloaded and verified)."""
    from llmft.storage import download_tree, is_complete, parse_location

    location = parse_location(settings.task_dir)
    if location.is_local:
        folder = location.path.expanduser()
        if not folder.is_dir():
            raise UserError(f"lm_eval.task_dir: {folder} is not a folder, got {settings.task_dir!r}")
        yield folder
        return
    if not is_complete(location):
        raise UserError(
            f"lm_eval.task_dir: {location} is not complete (no manifest); upload the folder with "
            f"`llmft storage cp ./tasks {location}`, got {settings.task_dir!r}"
        )
    with tempfile.TemporaryDirectory(prefix="llmft-lm-eval-") as scratch:
        download_tree(location, Path(scratch))
        yield Path(scratch)


def check_tasks(settings: LmEval, folder: Path):
    """The lm-eval TaskManager over `folder` alone; refuses task names it does not define."""
    _require()
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(folder), include_defaults=False)
    known = set(manager.all_tasks)
    unknown = [task for task in settings.tasks if task not in known]
    if unknown:
        raise UserError(
            f"lm_eval.tasks: {', '.join(unknown)} not defined in {settings.task_dir} (it defines "
            f"{', '.join(sorted(known)) or 'no task: each YAML file needs a `task:` name'})"
        )
    return manager


@contextlib.contextmanager
def _working_directory(folder: Path) -> Iterator[None]:
    previous = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def run_tasks(settings: LmEval, folder: Path, manager, model_dir: Path) -> dict[str, float]:
    """Run the tasks on the model in `model_dir`; `{"lm_eval/<task>/<metric>": value}`."""
    import lm_eval
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = "bfloat16" if device == "cuda" and torch.cuda.is_bf16_supported() else "float32"
    with _working_directory(folder):
        output = lm_eval.simple_evaluate(
            model="hf",
            model_args={"pretrained": str(model_dir), "dtype": dtype},
            tasks=list(settings.tasks),
            task_manager=manager,
            device=device,
            batch_size=settings.batch_size,
            limit=settings.limit,
            num_fewshot=settings.num_fewshot,
            apply_chat_template=settings.apply_chat_template,
            log_samples=False,
        )
    metrics: dict[str, float] = {}
    for task, values in (output or {}).get("results", {}).items():
        for name, value in values.items():
            metric, _, filter_name = name.partition(",")
            if (
                metric.endswith("_stderr")
                or metric == "sample_len"
                or not isinstance(value, (int, float))
                or isinstance(value, bool)
            ):
                continue
            suffix = "" if filter_name in ("", "none") else f"_{filter_name}"
            metrics[f"lm_eval/{task}/{metric}{suffix}"] = float(value)
    log.info("lm-eval: %s", ", ".join(f"{key} {value:.4g}" for key, value in metrics.items()))
    return metrics
