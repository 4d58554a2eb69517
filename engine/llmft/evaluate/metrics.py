"""The metrics: per sample (a generated answer against its reference) and over a whole evaluation.

Text comparisons normalise both sides the way SQuAD's official script does (lowercase, punctuation and
the articles a/an/the removed, whitespace collapsed): `exact_match` is 1 when the normalised texts are
equal, `contains` when the normalised reference occurs in the normalised answer (an answer that says more
than the reference still counts), `token_f1` is the F1 of the normalised tokens (SQuAD's token F1).
`rouge_l` is ROUGE-L's F-measure from Google's `rouge-score` package (its own tokenizer and stemming off).
Loss is the token-weighted mean cross-entropy over the trained tokens of every sample (what the Trainer
logs as `eval_loss`), perplexity its exponential.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Sequence

TEXT_METRICS = ("exact_match", "contains", "token_f1", "rouge_l")
LOWER_IS_BETTER = ("loss", "perplexity", "judge_failure_rate")  # every other metric: higher is better
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    text = text.lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def contains(prediction: str, reference: str) -> float:
    expected = normalize(reference)
    return float(bool(expected) and f" {expected} " in f" {normalize(prediction)} ")


def token_f1(prediction: str, reference: str) -> float:
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


_ROUGE = None


def rouge_l(prediction: str, reference: str) -> float:
    global _ROUGE
    if _ROUGE is None:
        import logging

        from rouge_score.rouge_scorer import RougeScorer

        logging.getLogger("absl").setLevel(logging.WARNING)  # rouge-score logs "Using default tokenizer." at INFO
        _ROUGE = RougeScorer(["rougeL"], use_stemmer=False)
    return float(_ROUGE.score(reference, prediction)["rougeL"].fmeasure)


TEXT_FUNCTIONS = {"exact_match": exact_match, "contains": contains, "token_f1": token_f1, "rouge_l": rouge_l}


def text_scores(prediction: str, reference: str, metrics: Sequence[str]) -> dict[str, float]:
    """The requested text metrics of one answer."""
    return {name: TEXT_FUNCTIONS[name](prediction, reference) for name in metrics if name in TEXT_FUNCTIONS}


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def aggregate_chat(rows: list[dict], metrics: Sequence[str]) -> tuple[dict[str, float], dict]:
    """Metrics over every scored chat sample, and the counts behind them."""
    results: dict[str, float | None] = {}  # None: no sample to average (left out of the result)
    counts: dict = {"samples": len(rows)}
    for name in TEXT_METRICS:
        if name in metrics:
            results[name] = _mean([row[name] for row in rows])
    if "loss" in metrics or "perplexity" in metrics:
        scored = [row for row in rows if row.get("loss_tokens")]
        tokens = sum(row["loss_tokens"] for row in scored)
        counts["loss_tokens"] = tokens
        counts["loss_left_out"] = sum(1 for row in rows if row.get("loss_left_out"))
        if tokens:
            loss = sum(row["loss_sum"] for row in scored) / tokens
            if "loss" in metrics:
                results["loss"] = loss
            if "perplexity" in metrics:
                results["perplexity"] = math.exp(loss) if loss < 700 else math.inf
    if "judge" in metrics:
        scores = [row["judge_score"] for row in rows if row.get("judge_score") is not None]
        counts["judge_scored"] = len(scores)
        counts["judge_failures"] = len(rows) - len(scores)
        if scores:
            results["judge"] = _mean(scores)
        results["judge_failure_rate"] = counts["judge_failures"] / len(rows) if rows else 0.0
    return {k: v for k, v in results.items() if v is not None}, counts


def aggregate_classification(
    rows: list[dict], metrics: Sequence[str], labels: list[str]
) -> tuple[dict[str, float], dict]:
    """Accuracy, macro F1 (mean F1 over every class that occurs as reference or prediction) and per-class counts."""
    classes = list(dict.fromkeys(labels + [row["reference"] for row in rows] + [row["predicted"] for row in rows]))
    per_class = {}
    for name in classes:
        tp = sum(1 for row in rows if row["predicted"] == name and row["reference"] == name)
        fp = sum(1 for row in rows if row["predicted"] == name and row["reference"] != name)
        fn = sum(1 for row in rows if row["predicted"] != name and row["reference"] == name)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {
            "support": tp + fn,
            "predicted": tp + fp,
            "true_positives": tp,
            "precision": precision,
            "recall": recall,
            "f1": f1,
        }
    present = [name for name in classes if per_class[name]["support"] or per_class[name]["predicted"]]
    results: dict[str, float] = {}
    if "accuracy" in metrics and rows:
        results["accuracy"] = sum(1 for row in rows if row["predicted"] == row["reference"]) / len(rows)
    if "macro_f1" in metrics and present:
        results["macro_f1"] = sum(per_class[name]["f1"] for name in present) / len(present)
    return results, {"samples": len(rows), "per_class": per_class}
