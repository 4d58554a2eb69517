"""Hyperparameter search: TPE with median early stopping against random search and grid, per trained step.

Setup: the tiny Llama (`llmft tiny-model`) learns short arithmetic chats with LoRA; the search space
is the learning rate (log scale, 1e-6 to 3e-2) and the LoRA rank (2 to 16); the objective is the
final `eval_loss` (evaluated every `eval` steps). Every trial is a real training run of the engine
(`run_sft` with the tuner's own pieces: the spec, the study with its fixed trial set, each trial's
config and the pruning callback), in this process so that interpreter start-up is not counted.

Each method gets the same budget of training steps (`budget` full trials):

- **random**: Optuna's RandomSampler, every trial trains all steps;
- **grid**: every combination of 1/2/4... learning rates x ranks {2, 16} up to the budget, all steps;
- **tpe + pruning**: TPESampler (`n_startup_trials` 2) with the median pruner (`min_trials_required`
  1, `start_step` = first evaluation); pruned trials stop early, so more trials fit in the budget.

Figures (medians over the seeds; grid does not depend on the seed):

- best eval_loss, tpe+pruning / random and / grid, at the end of the budget (target <= 1: at least
  as good);
- trained steps tpe+pruning needed to reach the best value random (or grid) reached with the whole
  budget / that budget (target < 1: fewer steps). A seed where it never got there counts as 1 +
  (its gap to that value / that value), so a miss never looks like a win.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

from benchmarks.common import figure, median, result

SIZES = {
    True: dict(steps=4, eval=2, budget=2, seeds=(1,), grid_lrs=2),
    False: dict(steps=12, eval=4, budget=6, seeds=(1, 2, 3), grid_lrs=3),
}


def _data(path: Path) -> Path:
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"What is {i} plus {i}?"},
                {"role": "assistant", "content": f"{2 * i}."},
            ]
        }
        for i in range(24)
    ]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _spec(
    name: str, model: Path, data: Path, size: dict, algorithm: dict, early_stopping: dict, max_trials: int
) -> dict:
    return {
        "name": name,
        "basemodel": str(model),
        "finetuning_config": {
            "method": "sft",
            "data_conf": {
                "training_data": {"datasets": [{"path": str(data)}]},
                "validation_data": {"type": "AUTO_SPLIT", "ratio": 0.25},
            },
            "training_args": {
                "learning_rate": 1e-3,
                "lr_scheduler_type": "constant",
                "max_steps": size["steps"],
                "logging_steps": size["eval"],
                "eval_strategy": "steps",
                "eval_steps": size["eval"],
                "save_strategy": "no",
                "report_to": [],
            },
            "batchsize_conf": {"total_train_batch_size": 4, "max_per_device_train_batch_size": 4},
            "peft_conf": {"peft_type": "LORA", "peft_kwargs": {"r": 8, "lora_alpha": 16, "lora_dropout": 0.0}},
            "sft_args": {"max_seq_length": 64},
        },
        "tune": {
            "objective": {"metric": "eval_loss", "direction": "minimize"},
            "search_space": [
                {
                    "key": "finetuning_config.training_args.learning_rate",
                    "type": "double",
                    "min": 1e-6,
                    "max": 3e-2,
                    "log": True,
                },
                {
                    "key": "finetuning_config.peft_conf.peft_kwargs.r",
                    "type": "int",
                    "min": 2,
                    "max": 16,
                    **({"step": 14} if algorithm["name"] == "grid" else {}),
                },
            ],
            "algorithm": algorithm,
            "early_stopping": early_stopping,
            "max_trial_count": max_trials,
        },
    }


def search(work: Path, spec_data: dict, budget_steps: int) -> list[tuple[int, float | None]]:
    """Run trials while a full one fits in the step budget: (trained steps so far, objective or None if pruned)."""
    from llmft.finetune.config import load_config
    from llmft.finetune.sft import run_sft
    from llmft.tune import metrics, trials
    from llmft.tune import study as studies
    from llmft.tune.pruning import callbacks_from_environment
    from llmft.tune.spec import STORAGE_ENV, load_spec

    spec = load_spec(spec_data)
    folder = work / spec.name
    url = studies.journal_url(folder)
    study = studies.prepare(spec, studies.open_storage(url), index=0)
    full = spec.finetuning_config["training_args"]["max_steps"]
    used, history = 0, []
    while used + full <= budget_steps:  # only trials that fit whole: no method trains past the budget
        number = studies.claim(study, "0")
        if number is None:
            break
        prepared = trials.prepare(spec, number, studies.suggest(study, number, spec), folder)
        os.environ[trials.TRIAL_ENV] = str(prepared.folder / trials.TRIAL_FILE)
        os.environ[STORAGE_ENV] = url
        if run_sft(load_config(prepared.config_path), callbacks=callbacks_from_environment()) != 0:
            raise RuntimeError(f"trial {number} of {spec.name} failed")
        output = prepared.folder / trials.OUTPUT
        used += metrics.read_summary(output)["steps"]
        if trials.was_pruned(prepared.folder):
            studies.finish(study, number, "pruned")
            history.append((used, None))
        else:
            value = metrics.final_value(spec.objective_source(), output)
            studies.finish(study, number, "complete", value)
            history.append((used, value))
        shutil.rmtree(output)  # the models are not needed; keep the scratch disk small
    for name in (trials.TRIAL_ENV, STORAGE_ENV):
        os.environ.pop(name, None)
    return history


def best(history: list[tuple[int, float | None]]) -> float:
    return min(value for _, value in history if value is not None)


def steps_to_reach(history: list[tuple[int, float | None]], target: float, budget: int) -> float:
    """Trained steps until the best value is <= target, as a fraction of the budget (see the module doc)."""
    for used, value in history:
        if value is not None and value <= target:
            return used / budget
    return 1 + (best(history) - target) / abs(target)


def run(quick: bool) -> dict:
    from llmft.tiny_model import build_tiny_model

    size = SIZES[quick]
    budget = size["budget"] * size["steps"]
    median_stop = {"name": "median", "settings": {"min_trials_required": 1, "start_step": size["eval"]}}
    work = Path(tempfile.mkdtemp(prefix="llmft-bench-tune-"))
    logging.getLogger("llmft").setLevel(logging.WARNING)
    try:
        model = build_tiny_model(work / "model", seed=0)
        data = _data(work / "chat.jsonl")
        grid = search(
            work,
            _spec(
                "grid",
                model,
                data,
                size,
                {"name": "grid", "settings": {"grid_points": size["grid_lrs"]}},
                {"name": "none"},
                size["budget"],
            ),
            budget,
        )
        runs = {"random": [], "tpe": []}
        for seed in size["seeds"]:
            runs["random"].append(
                search(
                    work,
                    _spec(
                        f"random-{seed}",
                        model,
                        data,
                        size,
                        {"name": "random", "seed": seed},
                        {"name": "none"},
                        size["budget"],
                    ),
                    budget,
                )
            )
            runs["tpe"].append(
                search(
                    work,
                    _spec(
                        f"tpe-{seed}",
                        model,
                        data,
                        size,
                        {"name": "tpe", "seed": seed, "settings": {"n_startup_trials": 2}},
                        median_stop,
                        4 * size["budget"],
                    ),
                    budget,
                )
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)

    tpe_best = [best(history) for history in runs["tpe"]]
    random_best = [best(history) for history in runs["random"]]
    vs_random = median([t / r for t, r in zip(tpe_best, random_best, strict=True)])
    vs_grid = median([t / best(grid) for t in tpe_best])
    steps_random = median(
        [steps_to_reach(tpe, best(rand), budget) for tpe, rand in zip(runs["tpe"], runs["random"], strict=True)]
    )
    steps_grid = median([steps_to_reach(tpe, best(grid), budget) for tpe in runs["tpe"]])
    figures = [
        figure(
            "best eval_loss: tpe+pruning / random",
            vs_random,
            "<= 1",
            vs_random <= 1,
            f"same budget of {budget} trained steps; median over seeds {list(size['seeds'])}",
        ),
        figure("best eval_loss: tpe+pruning / grid", vs_grid, "<= 1", vs_grid <= 1),
        figure("trained steps to reach random's best: tpe+pruning / random", steps_random, "< 1", steps_random < 1),
        figure("trained steps to reach grid's best: tpe+pruning / grid", steps_grid, "< 1", steps_grid < 1),
    ]
    measurements = {
        "budget_steps": budget,
        "grid": grid,
        "random": runs["random"],
        "tpe_pruning": runs["tpe"],
        "tpe_trials": [len(history) for history in runs["tpe"]],
        "tpe_pruned": [sum(value is None for _, value in history) for history in runs["tpe"]],
    }
    setup = (
        f"tiny Llama + LoRA on 24 arithmetic chats, {size['steps']} steps per full trial, eval every "
        f"{size['eval']}; budget {budget} steps ({size['budget']} full trials) per method; learning rate "
        "1e-6..3e-2 "
        f"(log) x LoRA rank 2..16; seeds {list(size['seeds'])}; trials run in-process with the tuner's "
        "study, trial configs and pruning callback"
    )
    return result("Hyperparameter search: TPE + median stopping vs random and grid", figures, measurements, setup)
