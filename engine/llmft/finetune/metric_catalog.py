"""The metrics a finetune run writes, by method: the catalog `metric_for_best_model` and HPO objectives are
checked against.

A run writes `metrics.jsonl` (one row per logging or evaluation step, `llmft.finetune.outputs`) and
`summary.json` (final figures); `eval_*` keys exist only when the run evaluates
(`training_args.eval_strategy` steps or epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

from llmft.run_layout import METRICS, SUMMARY

# Logged at every logging step by the Trainer (and the engine's progress callback).
TRAIN_COMMON = ("loss", "grad_norm", "learning_rate", "tokens_seen", "tokens_per_second")
# Logged at every evaluation by the Trainer.
EVAL_COMMON = ("eval_loss", "eval_runtime", "eval_samples_per_second", "eval_steps_per_second")
# What TRL's trainers add to both (the evaluation rows carry them with an `eval_` prefix).
METHOD_METRICS = {
    "sft": ("mean_token_accuracy", "entropy"),
    "dpo": (
        "rewards/chosen",
        "rewards/rejected",
        "rewards/accuracies",
        "rewards/margins",
        "logps/chosen",
        "logps/rejected",
        "logits/chosen",
        "logits/rejected",
    ),
}
# What an SFT task writes instead of (or besides) the chat metrics above. A classifier's evaluation rows carry
# accuracy, macro F1 and, per class, `eval_support/<label>` (true count) and `eval_predicted/<label>`.
TASK_METRICS = {
    "text": ("mean_token_accuracy", "entropy"),
    "sequence-classification": (),
}
TASK_EVAL_METRICS = {"sequence-classification": ("accuracy", "f1")}
TASK_SUMMARY_METRICS = {
    "sequence-classification": {"final_eval_accuracy": "eval_accuracy", "final_eval_f1": "eval_f1"},
}
# summary.json keys that are numbers, and their metrics.jsonl twin (None: no intermediate values).
SUMMARY_METRICS = {
    "final_eval_loss": "eval_loss",
    "final_train_loss": "loss",
    "mean_train_loss": "loss",
    "first_train_loss": None,
    "tokens_per_second": None,
    "samples_per_second": None,
    "runtime_seconds": None,
}


@dataclass(frozen=True)
class MetricSource:
    """Where a metric comes from: `file` (metrics.jsonl or summary.json), and its per-step key."""

    name: str
    file: str
    step_key: str | None  # the metrics.jsonl key reported as intermediate values (None: none)
    needs_evaluation: bool


def catalog(method: str, task: str | None = None) -> dict[str, MetricSource]:
    """Every metric a `method` run writes, by name; `task` is an SFT config's `task` (default: chat)."""
    found: dict[str, MetricSource] = {}
    extra = METHOD_METRICS.get(method, ())
    if method == "sft" and task in TASK_METRICS:
        extra = TASK_METRICS[task]
    evaluated = tuple(f"eval_{key}" for key in extra + TASK_EVAL_METRICS.get(task or "", ()))
    for name in TRAIN_COMMON + extra:
        found[name] = MetricSource(name, METRICS, name, False)
    for name in EVAL_COMMON + evaluated:
        found[name] = MetricSource(name, METRICS, name, True)
    for name, twin in {**SUMMARY_METRICS, **TASK_SUMMARY_METRICS.get(task or "", {})}.items():
        found[name] = MetricSource(name, SUMMARY, twin, twin is not None and twin.startswith("eval_"))
    return found
