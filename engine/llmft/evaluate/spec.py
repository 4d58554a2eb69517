"""The evaluation spec of `llmft evaluate SPEC` (and the llm-evaluate chart's `evaluation` values).

```yaml
name: facts                                   # results go to <run>/eval/facts/
target:                                       # exactly one of checkpoint, run, endpoint
  run: default-bucket/experiments/sweep-alpha-16      # its checkpoint-final
data:
  path: default-bucket/datasets/facts-test.jsonl      # SFT `messages` JSONL; the last assistant turn is the reference
metrics: [loss, perplexity, exact_match, contains, token_f1, rouge_l]
```

`load_spec` reports every problem at once as `<key.path>: <what is wrong>, got <value> (fix)`, with the
fine-tuning config's messages (`llmft.finetune.config`): unknown keys with "did you mean", metrics the data format
or the target cannot give (loss needs weights, an endpoint returns text), a judge metric without a judge, a rubric
with unknown placeholders, results without a place to go. Light on purpose: no torch, no network.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import string
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from llmft.finetune.config import _inline_refs, location_problem, read_spec_file, validate_spec
from llmft.run_layout import CHECKPOINT_PREFIX, EVAL, FINAL

PositiveInt = Annotated[int, Field(gt=0)]
NAME_PATTERN = r"^[a-z0-9]([-a-z0-9_.]{0,61}[a-z0-9])?$"

CHAT_METRICS = ("loss", "perplexity", "exact_match", "contains", "token_f1", "rouge_l", "judge")
CLASSIFICATION_METRICS = ("accuracy", "macro_f1")
# need the model's weights, not just its text
WEIGHT_METRICS = ("loss", "perplexity", "accuracy", "macro_f1", "lm_eval")
Metric = Literal[
    "loss", "perplexity", "exact_match", "contains", "token_f1", "rouge_l", "judge", "accuracy", "macro_f1", "lm_eval"
]

RUBRIC_FIELDS = ("question", "reference", "answer")
DEFAULT_RUBRIC = """\
You are grading an answer to a question against a reference answer.

Question:
{question}

Reference answer:
{reference}

Answer to grade:
{answer}

Score the answer from 1 to 5:
5 = correct and complete: it states everything the reference states, nothing contradicts it;
4 = correct, with a minor omission or harmless extra detail;
3 = partly correct: some of the reference's facts are present, some are missing or wrong;
2 = mostly wrong, with one correct element;
1 = wrong, off-topic, empty or a refusal.
Judge only the facts, not the style or length. Reply with one line of reasoning, then a last line of the
form "Score: N" where N is 1, 2, 3, 4 or 5."""


def _location(value: str | None) -> str | None:
    if value is not None:
        problem = location_problem(value)
        if problem:
            raise ValueError(problem)
    return value


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Endpoint(Section):
    """An OpenAI-compatible server: the inference chart's Service, `llmft serve`, vLLM, or a hosted API."""

    url: str = Field(
        pattern=r"^https?://[^\s/]+",
        description="Base URL of the OpenAI API, up to and including `/v1`: "
        "`http://llm-inference-vllm-<release>/v1` in the cluster, `http://127.0.0.1:8080/v1` for "
        "`llmft serve`.",
    )
    model: str | None = Field(
        None,
        description="The served model name (`vllm_engine_args.served_model_name`, `--served-model-name`); "
        "default: the first model the server lists at `/v1/models`.",
    )
    api_key_env: str | None = Field(
        None,
        pattern=r"^[A-Za-z_][A-Za-z0-9_]*$",
        description="Name of the environment variable holding the API key (sent as a Bearer token); the key "
        "itself never goes into the spec. The chart fills the variable from a Secret.",
    )


class Target(Section):
    """What to evaluate: exactly one of `checkpoint`, `run` or `endpoint`."""

    checkpoint: str | None = Field(
        None,
        description="A model folder: `bucket/experiments/<run>/checkpoint-final` (complete: it has its "
        "manifest), any complete model folder in the bucket, or a local folder (`./out/"
        "checkpoint-final`). Causal LMs for chat data, sequence classifiers for classification "
        "data.",
    )
    run: str | None = Field(
        None,
        description="A finetune run folder (`checkpointsRemote`, or a local `output_dir`): its "
        "`checkpoint-final` is evaluated and the results go to `<run>/eval/<name>/`.",
    )
    endpoint: Endpoint | None = Field(
        None,
        description="An OpenAI-compatible chat endpoint; generation metrics and the judge only (a server "
        "returns text, not the token probabilities loss needs).",
    )

    _locations = field_validator("checkpoint", "run")(_location)

    @property
    def kind(self) -> str:
        return "endpoint" if self.endpoint else "run" if self.run else "checkpoint"


class Data(Section):
    """The evaluation samples: one JSONL file, local or in the bucket."""

    path: str = Field(
        min_length=1,
        description="A JSONL file: `bucket/datasets/test.jsonl`, `s3://bucket/...` or a local `./test.jsonl`.",
    )
    format: Literal["chat", "classification"] = Field(
        "chat",
        description="`chat`: SFT records (`messages`, as in training); the prompt is every message before the last "
        "assistant turn, the reference is that turn. `classification`: one text and its label per line "
        '(`{"text": ..., "label": ...}`, names set by `text_field` and `label_field`).',
    )
    text_field: str = Field("text", min_length=1, description="Classification: the field holding the text.")
    label_field: str = Field(
        "label",
        min_length=1,
        description="Classification: the field holding the reference label (a class name or a class index).",
    )
    labels: list[str] | None = Field(
        None,
        min_length=2,
        description="Classification: the class names in the order of the model's outputs. Default: the model's "
        "`id2label`. With a model whose head has another size, a fresh head of this size is made (its "
        "scores then mean nothing until it is trained).",
    )
    max_samples: PositiveInt | None = Field(None, description="Evaluate only the first N samples.")
    system_message_handling: Literal["keep", "fold-into-first-user"] = Field(
        "keep",
        description="As `finetuning_config.data_conf.system_message_handling` in training: use the value "
        "the model was trained with.",
    )

    _path = field_validator("path")(_location)


class Generation(Section):
    """How answers are generated: the model's chat template and generation_config, with these overrides."""

    max_new_tokens: PositiveInt = Field(128, description="Longest answer, in tokens.")
    temperature: Annotated[float, Field(ge=0)] = Field(
        0.0, description="0: greedy decoding (deterministic); above 0: sampling."
    )
    batch_size: PositiveInt = Field(
        8, description="Checkpoints: prompts generated together (classifiers: texts classified together)."
    )


class Loss(Section):
    """Held-out loss: the same tokenisation and loss mask as training (`llmft.finetune.data.encode`)."""

    max_seq_length: PositiveInt = Field(
        2048,
        description="Samples longer than this many tokens are left out of the loss and counted "
        "(classifiers: longer texts are truncated to it).",
    )
    completions_only: bool = Field(
        True,
        description="As `sft_args.train_on_completions_only`: loss on assistant turns only (with their "
        "end-of-turn token). Use the value the model was trained with.",
    )
    batch_size: PositiveInt = Field(8, description="Samples per forward pass.")


class Requests(Section):
    """How endpoints (the target's and the judge's) are called."""

    concurrency: PositiveInt = Field(4, description="Requests in flight at once.")
    retries: Annotated[int, Field(ge=0)] = Field(
        4,
        description="Retries of a request that failed on the connection, a timeout, 429 or a 5xx status "
        "(exponential backoff from 1 s, at most 30 s).",
    )
    timeout_seconds: Annotated[float, Field(gt=0)] = Field(120.0, description="Time limit of one request.")


class Judge(Section):
    """LLM-as-judge: a second endpoint scores each answer against its reference from 1 to 5."""

    endpoint: Endpoint = Field(description="The judge model's endpoint.")
    rubric: str | None = Field(
        None,
        description="The prompt sent to the judge, with the placeholders `{question}`, `{reference}` and "
        "`{answer}`; it must ask for a last line `Score: N` (N from 1 to 5). Default: the "
        "rubric in docs/evaluation.md.",
    )
    max_tokens: PositiveInt = Field(256, description="Longest judge reply, in tokens.")

    @property
    def prompt(self) -> str:
        return self.rubric or DEFAULT_RUBRIC


class LmEval(Section):
    """lm-evaluation-harness tasks from YAML files in one folder (lm-eval 0.4; nothing from the Hub)."""

    tasks: list[str] = Field(min_length=1, description="Task names, as the `task:` keys of the YAML files.")
    task_dir: str = Field(
        min_length=1,
        description="The folder with the task YAMLs and their data (local, or in the bucket); `data_files` in the "
        "YAMLs are relative to it (`dataset_path: json`, `dataset_kwargs: {data_files: {test: "
        "facts.jsonl}}`).",
    )
    batch_size: PositiveInt = Field(8, description="lm-eval's batch size.")
    limit: PositiveInt | None = Field(None, description="At most this many documents per task.")
    num_fewshot: Annotated[int, Field(ge=0)] | None = Field(None, description="Few-shot examples (task default).")
    apply_chat_template: bool = Field(
        True, description="Render prompts with the model's chat template (as the model was trained)."
    )

    _task_dir = field_validator("task_dir")(_location)


class Evaluation(Section):
    """What to measure and on which data: an evaluation without its target (an HPO experiment's
    `tune.evaluation` runs one on every trial's final model)."""

    name: str = Field(
        pattern=NAME_PATTERN,
        description="Name of this evaluation; results go to `<output>/` = `<run>/eval/<name>/` by default.",
    )
    data: Data | None = Field(
        None,
        description="What to evaluate it on; required for every metric but `lm_eval` (its tasks bring their data).",
    )
    metrics: list[Metric] = Field(
        min_length=1,
        description="Chat data: `loss`, `perplexity` (checkpoints), `exact_match`, `contains`, `token_f1`, "
        "`rouge_l`, `judge`. Classification data: `accuracy`, `macro_f1` (per-class counts always "
        "come with them). Checkpoints, any data: `lm_eval` (the tasks in `lm_eval`).",
    )
    generation: Generation = Field(default_factory=Generation, description="Answer generation settings.")
    loss: Loss = Field(default_factory=Loss, description="Held-out loss settings.")
    requests: Requests = Field(default_factory=Requests, description="Endpoint request settings.")
    judge: Judge | None = Field(None, description="The judge, for the `judge` metric.")
    lm_eval: LmEval | None = Field(None, description="lm-evaluation-harness tasks, for the `lm_eval` metric.")


class EvalSpec(Evaluation):
    """One evaluation: a target, its data and the metrics to compute."""

    target: Target = Field(description="What to evaluate.")
    output: str | None = Field(
        None,
        description="Where results.json and samples.jsonl go (a bucket folder or a local folder). Default: "
        "`<run>/eval/<name>` for a run, or for a checkpoint named `checkpoint-*` in a run folder; "
        "required for an endpoint and other checkpoints.",
    )

    _output = field_validator("output")(_location)

    def output_location(self) -> str:
        """The results folder (spec checks guarantee one exists)."""
        if self.output:
            return self.output.rstrip("/")
        run = self.target.run or _run_of_checkpoint(self.target.checkpoint or "")
        assert run is not None, "spec checks: `output` is required unless the target is in a run folder"
        return f"{run.rstrip('/')}/{EVAL}/{self.name}"

    def checkpoint_location(self) -> str | None:
        if self.target.run:
            return f"{self.target.run.rstrip('/')}/{FINAL}"
        return self.target.checkpoint

    def fingerprint(self) -> str:
        """What a scored sample depends on; samples scored under another fingerprint are scored again."""
        relevant = self.model_dump(include={"target", "data", "metrics", "generation", "loss", "judge", "lm_eval"})
        (relevant["data"] or {}).pop("max_samples", None)
        for part in (relevant["target"], (relevant.get("judge") or {})):
            if part.get("endpoint"):
                part["endpoint"].pop("api_key_env", None)
        return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def target_problems(evaluation: Evaluation) -> list[tuple]:
    """The problems an `Evaluation` would have as a spec evaluating a finetune run's final model."""
    return _problems(EvalSpec.model_validate({**evaluation.model_dump(), "target": {"run": "./run"}}))


def _run_of_checkpoint(checkpoint: str) -> str | None:
    """The run folder holding `checkpoint` when its name is checkpoint-final, checkpoint-<step>, ..."""
    parent, _, name = checkpoint.rstrip("/").rpartition("/")
    return parent if parent and name.startswith(CHECKPOINT_PREFIX) else None


def _problems(spec: EvalSpec) -> list[tuple]:
    problems: list[tuple] = []
    target = spec.target
    chosen = [key for key in ("checkpoint", "run", "endpoint") if getattr(target, key) is not None]
    if len(chosen) != 1:
        problems.append(
            (
                ("target",),
                "set exactly one of checkpoint, run, endpoint",
                {key: getattr(target, key) for key in chosen} if chosen else {},
            )
        )
    data_format = spec.data.format if spec.data else "chat"
    wanted = set(CHAT_METRICS if data_format == "chat" else CLASSIFICATION_METRICS) | {"lm_eval"}
    needing_data = [metric for metric in spec.metrics if metric != "lm_eval"]
    if spec.data is None and needing_data:
        problems.append((("data",), f"required for {', '.join(needing_data)}: set data.path to a JSONL file", None))
    for index, metric in enumerate(spec.metrics):
        where = ("metrics", index)
        if metric not in wanted:
            problems.append(
                (
                    where,
                    f"not a metric of {data_format} data; use {', '.join(sorted(wanted))} or set data.format",
                    metric,
                )
            )
        elif target.endpoint and metric in WEIGHT_METRICS:
            problems.append(
                (
                    where,
                    "needs the model's weights, an endpoint returns only text; evaluate the "
                    "checkpoint it serves (target.run or target.checkpoint)",
                    metric,
                )
            )
    if data_format == "classification" and target.endpoint:
        problems.append(
            (
                ("target", "endpoint"),
                "classification data needs a checkpoint (a sequence classifier), not a chat endpoint",
                target.endpoint.url,
            )
        )
    if "judge" in spec.metrics and spec.judge is None:
        problems.append((("judge",), "the judge metric needs a judge: set judge.endpoint.url (and model)", None))
    if spec.judge is not None and "judge" not in spec.metrics:
        problems.append(
            (
                ("metrics",),
                "a judge is configured but `judge` is not among the metrics; add it or remove the judge section",
                spec.metrics,
            )
        )
    if "lm_eval" in spec.metrics and spec.lm_eval is None:
        problems.append(
            (("lm_eval",), "the lm_eval metric needs its tasks: set lm_eval.tasks and lm_eval.task_dir", None)
        )
    if spec.lm_eval is not None and "lm_eval" not in spec.metrics:
        problems.append(
            (
                ("metrics",),
                "an lm_eval section is configured but `lm_eval` is not among the metrics; add it or remove the section",
                spec.metrics,
            )
        )
    if spec.judge is not None and spec.judge.rubric is not None:
        problems += _rubric_problems(spec.judge.rubric)
    if spec.data and spec.data.format == "chat" and spec.data.labels is not None:
        problems.append((("data", "labels"), "only for data.format: classification", spec.data.labels))
    if (
        spec.output is None
        and len(chosen) == 1
        and target.kind != "run"
        and _run_of_checkpoint(target.checkpoint or "") is None
    ):
        what = "an endpoint" if target.endpoint else "a checkpoint outside a run folder"
        problems.append(
            (
                ("output",),
                f"required for {what}: a bucket folder (bucket/experiments/<run>/eval/"
                f"{spec.name}) or a local folder (./eval/{spec.name})",
                None,
            )
        )
    if len(set(spec.metrics)) != len(spec.metrics):
        problems.append((("metrics",), "lists a metric twice", spec.metrics))
    return problems


def _rubric_problems(rubric: str) -> list[tuple]:
    where = ("judge", "rubric")
    try:
        fields = {field for _, field, _, _ in string.Formatter().parse(rubric) if field is not None}
    except ValueError as error:
        return [(where, f"is not a format string ({error}); write literal braces as {{{{ and }}}}", rubric)]
    problems = []
    unknown = sorted(fields - set(RUBRIC_FIELDS))
    if unknown:
        problems.append(
            (
                where,
                f"unknown placeholder(s) {', '.join('{' + f + '}' for f in unknown)}; the rubric "
                f"may use {', '.join('{' + f + '}' for f in RUBRIC_FIELDS)}",
                rubric,
            )
        )
    if "answer" not in fields:
        problems.append((where, "must contain {answer}, the answer the judge scores", rubric))
    if not re.search(r"score", rubric, re.IGNORECASE):
        problems.append(
            (where, "must ask for a last line `Score: N` (N from 1 to 5); that line is how the score is read", rubric)
        )
    return problems


def read_spec_source(source: str | os.PathLike | dict) -> dict:
    """A spec file (YAML) or dict; a values-style file with the spec under `evaluation` is unwrapped."""
    if isinstance(source, dict):
        data = json.loads(json.dumps(source))
    else:
        data = read_spec_file(Path(source), "an evaluation spec is a mapping (name, target, data, metrics, ...)")
    if set(data) == {"evaluation"} and isinstance(data["evaluation"], dict):
        data = data["evaluation"]
    return data


def load_spec(source: str | os.PathLike | dict | EvalSpec) -> EvalSpec:
    """Validate a spec file or dict; one UserError listing every problem with its key path and fix."""
    if isinstance(source, EvalSpec):
        return source
    return validate_spec(EvalSpec, read_spec_source(source), "evaluation spec", _problems)


def spec_json_schema() -> dict:
    """The spec's self-contained JSON Schema (embedded by the llm-evaluate chart under `evaluation`)."""
    schema = _inline_refs(EvalSpec.model_json_schema())
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema
