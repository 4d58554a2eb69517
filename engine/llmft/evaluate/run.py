"""`llmft evaluate SPEC`, top to bottom.

1. The spec (every problem at once, `llmft.evaluate.spec`).
2. Cheap checks of what is evaluated, before anything heavy: an endpoint answers `GET /models` (and the
   judge's too); a checkpoint is complete (manifest) and its config.json is read.
3. The data: every line checked (`llmft.evaluate.data`), classification labels checked against the classes.
4. Resume: rows already in `<output>/samples.jsonl` for the same samples and spec are kept.
5. Score the rest (model loaded only now, or requests in a thread pool), appending each row as it comes,
   with progress (rate, ETA); then the lm-eval tasks, unless an earlier attempt finished them.
6. Aggregate every row into metrics; write results.json last.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from datetime import UTC, datetime

from llmft.errors import UserError
from llmft.evaluate import metrics as metric_functions
from llmft.evaluate.data import Sample, read_samples
from llmft.evaluate.endpoint import (
    EndpointClient,
    EndpointFailed,
    RequestFailed,
    map_requests,
)
from llmft.evaluate.judge import judge_answer
from llmft.evaluate.results import SampleStore, finite
from llmft.evaluate.spec import EvalSpec, load_spec
from llmft.evaluate.target import (
    Checkpoint,
    check_checkpoint,
    class_names,
    fetched,
    reference_label,
)
from llmft.progress import Progress
from llmft.run_layout import EVAL_HARNESS, EVAL_RESULTS, EVAL_SAMPLES

log = logging.getLogger("llmft.evaluate")


def evaluate(source: str | os.PathLike | dict | EvalSpec) -> dict:
    """Run one evaluation; return what results.json holds."""
    started = time.monotonic()
    spec = load_spec(source)
    from llmft.storage import parse_location

    output = parse_location(spec.output_location())
    client = judge = checkpoint = None
    if spec.target.endpoint:
        client = EndpointClient(spec.target.endpoint, spec.requests, "target.endpoint")
        log.info("target: %s serves %r", spec.target.endpoint.url, client.check())
    else:
        checkpoint = check_checkpoint(spec)
    if spec.judge:
        judge = EndpointClient(spec.judge.endpoint, spec.requests, "judge.endpoint")
        log.info("judge: %s serves %r", spec.judge.endpoint.url, judge.check())
    samples = read_samples(spec.data) if spec.data else []
    names: list[str] = []
    if spec.data is not None and spec.data.format == "classification":
        assert checkpoint is not None, "spec checks: classification data needs a checkpoint"
        names = _check_labels(spec, samples, checkpoint.config)

    with contextlib.ExitStack() as stack:
        if spec.lm_eval:
            from llmft.evaluate import harness

            task_dir = stack.enter_context(harness.task_folder(spec.lm_eval))
            task_manager = harness.check_tasks(spec.lm_eval, task_dir)
        store = SampleStore(output, spec.fingerprint())
        stack.callback(store.close)
        rows = store.load({sample.key for sample in samples})
        pending = [sample for sample in samples if sample.key not in rows]
        if spec.data:
            log.info(
                "evaluate %s: %d samples from %s; %d already scored in %s (skipped), %d to score",
                spec.name,
                len(samples),
                spec.data.path,
                len(rows),
                output.child(EVAL_SAMPLES),
                len(pending),
            )
        harness_metrics = store.load_harness() if spec.lm_eval else {}
        if harness_metrics and spec.lm_eval:
            log.info("lm-eval: results of an earlier attempt kept (%s)", output.child(EVAL_HARNESS))
        if pending or harness_metrics is None:
            store.unfinished()
        need_model = pending or harness_metrics is None
        folder = stack.enter_context(fetched(spec, checkpoint)) if checkpoint is not None and need_model else None
        if pending:
            _score(spec, pending, rows, store, client, judge, folder, names)
        if harness_metrics is None:
            assert spec.lm_eval is not None and folder is not None, "spec checks: lm_eval needs a checkpoint"
            harness_metrics = harness.run_tasks(spec.lm_eval, task_dir, task_manager, folder)
            store.save_harness(harness_metrics)
        ordered = [rows[sample.key] for sample in samples]
        results = _results(spec, ordered, names, client, checkpoint, harness_metrics, time.monotonic() - started)
        store.write_results(results)
    shown = ", ".join(f"{key} {value:.4g}" for key, value in results["metrics"].items())
    log.info("evaluate %s: %s -> %s", spec.name, shown, output.child(EVAL_RESULTS))
    return results


def _score(
    spec: EvalSpec,
    pending: list[Sample],
    rows: dict,
    store: SampleStore,
    client: EndpointClient | None,
    judge: EndpointClient | None,
    folder,
    names: list[str],
) -> None:
    """Score `pending`, recording each row in `rows` and samples.jsonl as it comes, with progress."""
    progress = Progress(f"evaluate {spec.name}", len(pending), unit="samples")

    def record(row: dict) -> None:
        rows[row["key"]] = row
        store.append(row)
        progress.update(1)

    assert spec.data is not None, "spec checks: every metric but lm_eval needs data"
    try:
        if client:
            _score_with_endpoint(spec, pending, client, judge, record)
        elif spec.data.format == "chat":
            _score_chat_checkpoint(spec, folder, pending, judge, record)
        else:
            _score_classifier(spec, folder, pending, names, record)
    finally:
        progress.close()
        store.flush()


def evaluate_run(spec: str | os.PathLike | dict | EvalSpec) -> dict[str, float]:
    """Evaluate and return only the metrics (`{"exact_match": 0.75, "loss": 1.2, ...}`): an HPO objective."""
    return evaluate(spec)["metrics"]


def _check_labels(spec: EvalSpec, samples: list[Sample], model_config: dict) -> list[str]:
    names = class_names(spec, model_config)
    unknown = [
        f"{sample.where}: label {sample.label!r} is not one of the classes {', '.join(names)}"
        for sample in samples
        if reference_label(sample.label, names) is None
    ]
    if unknown:
        fix = (
            "fix the labels"
            if spec.data and spec.data.labels
            else "set data.labels to the class names in the order of the model's outputs"
        )
        raise UserError(f"evaluation data has labels the model does not know ({fix}):\n  " + "\n  ".join(unknown[:20]))
    return names


def _chat_row(spec: EvalSpec, sample: Sample, prediction: str) -> dict:
    text_metrics = [name for name in spec.metrics if name in metric_functions.TEXT_FUNCTIONS]
    return {
        "key": sample.key,
        "where": sample.where,
        "reference": sample.reference,
        "prediction": prediction,
        **metric_functions.text_scores(prediction, sample.reference, text_metrics),
    }


def _needs_generation(spec: EvalSpec) -> bool:
    return any(name in spec.metrics for name in (*metric_functions.TEXT_METRICS, "judge"))


def _score_with_endpoint(
    spec: EvalSpec, pending: list[Sample], client: EndpointClient, judge: EndpointClient | None, record
) -> None:
    def score(sample: Sample) -> dict:
        answer = client.chat(sample.prompt, spec.generation.max_new_tokens, spec.generation.temperature)
        row = _chat_row(spec, sample, answer.strip())
        if judge and spec.judge:
            row.update(judge_answer(judge, spec.judge, sample.question, sample.reference, row["prediction"]))
        return row

    try:
        for _, row in map_requests(score, pending, spec.requests.concurrency):
            record(row)
    except RequestFailed as error:
        raise EndpointFailed(
            f"target.endpoint: a request to {client.base} failed: {error}; the samples scored so "
            "far are kept in samples.jsonl, run the evaluation again to go on"
        ) from None


def _score_chat_checkpoint(spec: EvalSpec, folder, pending: list[Sample], judge: EndpointClient | None, record) -> None:
    from llmft.evaluate.checkpoint import CausalLM

    model = CausalLM(folder, spec)
    batch_size = spec.generation.batch_size if _needs_generation(spec) else spec.loss.batch_size
    rubric = spec.judge
    for start in range(0, len(pending), batch_size):
        batch = pending[start : start + batch_size]
        rows = [{"key": sample.key, "where": sample.where, "reference": sample.reference} for sample in batch]
        if _needs_generation(spec):
            rows = [
                _chat_row(spec, sample, answer) for sample, answer in zip(batch, model.generate(batch), strict=True)
            ]
        if "loss" in spec.metrics or "perplexity" in spec.metrics:
            for row, scored in zip(rows, model.loss(batch), strict=True):
                row.update(scored)
        if judge and rubric:
            pairs = list(zip(batch, rows, strict=True))

            def verdict(index: int, pairs=pairs) -> dict:
                sample, row = pairs[index]
                return judge_answer(judge, rubric, sample.question, sample.reference, row["prediction"])

            verdicts = dict(map_requests(verdict, range(len(pairs)), spec.requests.concurrency))
            for index, row in enumerate(rows):
                row.update(verdicts[index])
        for row in rows:
            record(row)


def _score_classifier(spec: EvalSpec, folder, pending: list[Sample], names: list[str], record) -> None:
    from llmft.evaluate.checkpoint import Classifier

    model = Classifier(folder, spec, names, _model_config(folder))
    for start in range(0, len(pending), spec.generation.batch_size):
        batch = pending[start : start + spec.generation.batch_size]
        for sample, predicted in zip(batch, model.predict(batch), strict=True):
            reference = reference_label(sample.label, names)
            record(
                {
                    "key": sample.key,
                    "where": sample.where,
                    "reference": reference,
                    "predicted": predicted,
                    "correct": predicted == reference,
                }
            )


def _model_config(folder) -> dict:
    import json
    from pathlib import Path

    return json.loads((Path(folder) / "config.json").read_text())


def _results(
    spec: EvalSpec,
    rows: list[dict],
    names: list[str],
    client: EndpointClient | None,
    checkpoint: Checkpoint | None,
    harness_metrics: dict[str, float],
    seconds: float,
) -> dict:
    values: dict[str, float] = {}
    counts: dict = {}
    if spec.data and spec.data.format == "chat":
        values, counts = metric_functions.aggregate_chat(rows, spec.metrics)
    elif spec.data:
        values, counts = metric_functions.aggregate_classification(rows, spec.metrics, names)
    values.update(harness_metrics)
    if checkpoint is None:
        assert client is not None and spec.target.endpoint is not None, "the target is a checkpoint or an endpoint"
        target = {"endpoint": spec.target.endpoint.url, "model": client.model}
    else:
        target = {"checkpoint": checkpoint.model, **({"adapter": checkpoint.adapter} if checkpoint.adapter else {})}
    return {
        "name": spec.name,
        "target": target,
        "data": spec.data.path if spec.data else None,
        "format": spec.data.format if spec.data else None,
        "metrics": finite(values),
        "counts": counts,
        "spec": spec.model_dump(mode="json"),
        "finished_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }
