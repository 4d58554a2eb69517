"""Where an evaluation's results live, and how a restarted evaluation picks up its scored samples.

```
<output>/   (default <run>/eval/<name>/, bucket or local)
  samples.jsonl   one JSON object per scored sample: key, file:line, prediction, reference, scores
  lm_eval.json    the lm-eval tasks' metrics, once they finished (with the spec's fingerprint)
  results.json    written last: the metrics (numbers only, what `llmft report` and `llmft tune` read),
                  the counts behind them, the spec, when it finished
```

Every sample row carries the spec's fingerprint (`EvalSpec.fingerprint`); a restart keeps the rows whose
key and fingerprint match and scores only the rest. In the bucket, samples.jsonl is uploaded every
`FLUSH_SECONDS` while the evaluation runs, so a killed pod loses at most that much work; at the end the
folder is uploaded as a tree (manifest last). A restart with work to do first removes the old results.json.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from pathlib import Path

from llmft.run_layout import EVAL, EVAL_HARNESS, EVAL_RESULTS, EVAL_SAMPLES
from llmft.storage import Location

log = logging.getLogger("llmft.evaluate")

FLUSH_SECONDS = 30.0


class SampleStore:
    """The results folder of one evaluation: the rows of an earlier attempt, appends with periodic upload.

    A bucket output is mirrored in a scratch folder and uploaded as a tree at the end (`upload_tree`: the
    folder's manifest last, so `llmft storage ls` shows it complete); a local output is written in place.
    """

    def __init__(self, output: Location, fingerprint: str):
        self.output = output
        self.fingerprint = fingerprint
        self._scratch = None
        if output.is_local:
            self.folder = output.path.expanduser()
            self.folder.mkdir(parents=True, exist_ok=True)
        else:
            self._scratch = tempfile.TemporaryDirectory(prefix="llmft-eval-")
            self.folder = Path(self._scratch.name)
        self.path = self.folder / EVAL_SAMPLES
        self._last_flush = time.monotonic()

    def load(self, keys: set[str]) -> dict[str, dict]:
        """Rows already scored for these sample keys under this spec; the file is rewritten with only them."""
        if not self.output.is_local:
            text = self._read(EVAL_SAMPLES)
            if text is not None:
                self.path.write_text(text, encoding="utf-8")
        rows: dict[str, dict] = {}
        stale = 0
        if self.path.is_file():
            for line in self.path.read_text(encoding="utf-8").splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short when the earlier attempt was killed
                if row.get("fingerprint") == self.fingerprint and row.get("key") in keys:
                    rows[row["key"]] = row
                else:
                    stale += 1
        if stale:
            log.info(
                "samples.jsonl: %d row(s) of an earlier attempt with another spec or other data are scored again", stale
            )
        self.path.write_text("".join(json.dumps(row) + "\n" for row in rows.values()), encoding="utf-8")
        return rows

    def unfinished(self) -> None:
        """Work is about to be done: an earlier results.json (and the folder's manifest) no longer holds."""
        (self.folder / EVAL_RESULTS).unlink(missing_ok=True)
        if not self.output.is_local:
            from llmft.storage import MANIFEST_NAME
            from llmft.storage.transfer import delete_object

            delete_object(self.output.child(MANIFEST_NAME))
            delete_object(self.output.child(EVAL_RESULTS))

    def append(self, row: dict) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            handle.write(json.dumps({**row, "fingerprint": self.fingerprint}) + "\n")
        if not self.output.is_local and time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        if not self.output.is_local:
            from llmft.storage import upload_file

            upload_file(self.path, self.output.child(EVAL_SAMPLES))
        self._last_flush = time.monotonic()

    def load_harness(self) -> dict[str, float] | None:
        """The lm-eval metrics an earlier attempt finished under this spec, else None."""
        text = self._read(EVAL_HARNESS)
        if not text:
            return None
        try:
            saved = json.loads(text)
        except json.JSONDecodeError:
            return None
        if saved.get("fingerprint") != self.fingerprint:
            return None
        self._write(EVAL_HARNESS, text, upload=False)  # part of this attempt's folder
        return saved.get("metrics")

    def save_harness(self, metrics: dict[str, float]) -> None:
        self._write(EVAL_HARNESS, json.dumps({"fingerprint": self.fingerprint, "metrics": metrics}, indent=2) + "\n")

    def _read(self, name: str) -> str | None:
        if self.output.is_local:
            path = self.folder / name
            return path.read_text(encoding="utf-8") if path.is_file() else None
        from llmft.storage.transfer import read_object

        data = read_object(self.output.child(name), missing_ok=True)
        return data.decode() if data is not None else None

    def _write(self, name: str, text: str, upload: bool = True) -> None:
        target = self.folder / name
        partial = target.with_name(target.name + ".part")
        partial.write_text(text, encoding="utf-8")
        partial.replace(target)
        if upload and not self.output.is_local:
            from llmft.storage.transfer import write_object

            write_object(self.output.child(name), text.encode())

    def write_results(self, results: dict) -> None:
        """results.json last: in the bucket the whole folder goes up as a tree, its manifest last."""
        self._write(EVAL_RESULTS, json.dumps(results, indent=2, default=_json_number) + "\n", upload=False)
        if not self.output.is_local:
            from llmft.storage import upload_tree

            upload_tree(self.folder, self.output)
        self._last_flush = time.monotonic()

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()


def _json_number(value):
    return str(value)


def finite(metrics: dict[str, float]) -> dict[str, float]:
    """JSON has no infinity: an infinite perplexity is written as a very large number."""
    return {key: (value if math.isfinite(value) else 1e308) for key, value in metrics.items()}


def read_evaluations(run: Location, scratch: Path) -> dict[str, dict[str, float]]:
    """Every finished evaluation of a run folder: `{name: {metric: value}}` from `<run>/eval/*/results.json`."""
    if run.bucket is None:  # a local run folder
        found = {path.parent.name: path.read_text() for path in sorted((run.path / EVAL).glob(f"*/{EVAL_RESULTS}"))}
    else:
        from llmft.storage import download_file, list_objects

        found = {}
        for relative in list_objects(run.child(EVAL)):
            name, _, rest = relative.partition("/")
            if rest == EVAL_RESULTS:
                target = scratch / run.bucket / run.key / EVAL / name / EVAL_RESULTS
                download_file(run.child(f"{EVAL}/{relative}"), target)
                found[name] = target.read_text()
    evaluations = {}
    for name, text in found.items():
        try:
            metrics = json.loads(text).get("metrics", {})
        except json.JSONDecodeError:
            continue
        evaluations[name] = {key: value for key, value in metrics.items() if isinstance(value, (int, float))}
    return evaluations


def best_run(patterns: list[str], score: str) -> tuple[str, float, list[tuple[str, float | None]]]:
    """The run with the best `<evaluation>/<metric>` among the runs `patterns` name (as `llmft report` reads them).

    Lower is better for loss, perplexity and judge_failure_rate, higher for every other metric. Returns the
    best run's location, its value, and every run's value (None where the run has no such result).
    """
    from llmft.errors import UserError
    from llmft.evaluate.metrics import LOWER_IS_BETTER
    from llmft.report import expand

    name, _, metric = score.partition("/")
    if not name or not metric:
        raise UserError(
            f"--metric: write EVALUATION/METRIC (the spec's name, a metric), e.g. heldout/rouge_l, got {score!r}"
        )
    with tempfile.TemporaryDirectory(prefix="llmft-eval-best-") as scratch:
        values = [
            (str(run), read_evaluations(run, Path(scratch)).get(name, {}).get(metric)) for run in expand(patterns)
        ]
    scored = [(run, value) for run, value in values if value is not None]
    if not scored:
        raise UserError(
            f"no run has {EVAL}/{name}/{EVAL_RESULTS} with {metric!r}: run `llmft evaluate` on them "
            f"first (runs: {', '.join(run for run, _ in values) or 'none'})"
        )
    pick = min if metric in LOWER_IS_BETTER else max
    best = pick(scored, key=lambda item: item[1])
    return best[0], best[1], values
