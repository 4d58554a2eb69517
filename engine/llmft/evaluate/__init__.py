"""Evaluation: score a checkpoint or a served model on held-out data (`llmft evaluate SPEC`).

`evaluate(spec)` writes `<output>/results.json` and `samples.jsonl` and returns the results;
`evaluate_run(spec)` returns only the metrics (`dict[str, float]`), e.g. as an HPO objective. The spec is a
path, a dict or an `EvalSpec` (`llmft.evaluate.spec`). See docs/evaluation.md.
"""

from llmft.evaluate.run import evaluate, evaluate_run
from llmft.evaluate.spec import EvalSpec, load_spec

__all__ = ["EvalSpec", "evaluate", "evaluate_run", "load_spec"]
