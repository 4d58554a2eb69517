"""The experiment spec of `llmft tune SPEC` (and the llm-tune chart's values): pydantic models, checks, schema.

```yaml
name: lora-search                       # the experiment; its trials are <checkpointsRemote>/trial-<n>/
basemodel: default-bucket/models/tiny   # the finetune chart's keys: basemodel, checkpointsRemote, mergeAdapter
checkpointsRemote: default-bucket/experiments/lora-search
finetuning_config: {method: sft, ...}   # the base config every trial starts from (validated by the engine)
tune:
  objective: {metric: eval_loss, direction: minimize}
  search_space:
    - {key: finetuning_config.training_args.learning_rate, type: double, min: 1.0e-5, max: 1.0e-2, log: true}
    - {key: finetuning_config.peft_conf.peft_kwargs.r, type: int, min: 4, max: 32, step: 4}
  algorithm: {name: tpe, seed: 7}
  early_stopping: {name: median, settings: {min_trials_required: 2, start_step: 4}}
  max_trial_count: 12
  parallel_trial_count: 2
```

`load_spec` reports every problem at once as `<key.path>: <what is wrong>, got <value> (fix)`: unknown keys
(also unknown config keys in `search_space[].key`, checked against the engine's config model), empty spaces,
min > max, log scale with min <= 0, values the engine would reject at a range's ends, an objective the method
never writes, settings Optuna rejects. Everything is checked before any trial starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from llmft.evaluate.spec import Evaluation, target_problems
from llmft.finetune.config import (
    DEFAULT_KEY_PREFIX,
    METHODS,
    _inline_refs,
    _pydantic_problems,
    config_json_schema,
    config_model,
    read_spec_file,
    validate_spec,
)
from llmft.finetune.metric_catalog import MetricSource, catalog
from llmft.run_layout import EVAL, EVAL_RESULTS
from llmft.tune import algorithms, keypath

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,38}[a-z0-9])?$"
Scalar = bool | int | float | str
# Keys the tuner sets in every trial's config; a search over them makes no sense.
TUNER_KEYS: dict[tuple, str] = {
    ("training_args", "output_dir"): "each trial writes to its own folder, <experiment>/trial-<n>/",
    ("run_conf", "checkpoints_remote"): "each trial streams to <checkpointsRemote>/trial-<n>; set checkpointsRemote",
    ("run_conf", "model"): "set basemodel",
    ("launch_conf", "num_processes"): "one process per GPU of tune.resources_per_trial.gpus",
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Parameter(Section):
    """One dimension of the search space: the config key it sets and the values it may take."""

    key: str = Field(
        min_length=1,
        description="The config key this parameter sets, by path as in `helm --set`: "
        "`finetuning_config.training_args.learning_rate`, `finetuning_config.peft_conf.peft_kwargs.r`, "
        "`finetuning_config.data_conf.training_data.datasets[0].sampling_weight`.",
    )
    name: str | None = Field(
        None, description="Short name in tables and plots (default: the key's last part, e.g. `learning_rate`)."
    )
    type: Literal["double", "int", "categorical"] = Field(
        description="`double`: a real number in [min, max]; `int`: an integer in [min, max]; `categorical`: one "
        "of `values`."
    )
    min: float | None = Field(None, description="Smallest value (`double`, `int`).")
    max: float | None = Field(None, description="Largest value (`double`, `int`).")
    log: bool = Field(False, description="Sample on a log scale (`double`, `int`; needs min > 0).")
    step: float | None = Field(
        None,
        gt=0,
        description="Only multiples of step above min (`int`: default 1; `double`: default continuous). "
        "Not with `log`.",
    )
    values: list[Scalar] | None = Field(None, description="The choices (`categorical`).")

    @property
    def label(self) -> str:
        return self.name or str(keypath.parse(self.key)[-1])


class Objective(Section):
    """What a trial is judged by."""

    metric: str = Field(
        min_length=1,
        description="A metric the run writes to metrics.jsonl (`eval_loss`, `loss`, `eval_mean_token_accuracy`, "
        "`rewards/margins`, `eval_rewards/margins`, ...; its last value is the result, each value an "
        "intermediate report for early stopping) or to summary.json (`final_eval_loss`, "
        "`tokens_per_second`, ...).",
    )
    direction: Literal["minimize", "maximize"] = Field(description="Whether smaller or larger is better.")
    goal: float | None = Field(
        None, description="Stop the experiment once a completed trial reaches this value (Katib's objective goal)."
    )
    additional_metrics: list[str] = Field(
        default_factory=list, description="More metrics recorded with every trial (same names as `metric`)."
    )


class Algorithm(Section):
    """How the next trial's values are chosen (an Optuna sampler)."""

    name: Literal["random", "grid", "tpe", "multivariate-tpe", "cmaes", "gp", "qmc"] = Field(
        "tpe",
        description="`random`, `grid` (every combination; doubles need `step` or get `settings.grid_points` "
        "points), `tpe` (Tree-structured Parzen Estimator), `multivariate-tpe`, `cmaes` (CMA-ES; "
        "categorical keys fall back to random), `gp` (Gaussian-process Bayesian optimisation), `qmc` "
        "(quasi-Monte Carlo, Sobol by default).",
    )
    seed: int | None = Field(None, description="Seed of the sampler (reproducible choices in one worker).")
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the Optuna sampler, e.g. `{n_startup_trials: 4}` for `tpe`, "
        "`{qmc_type: halton}` for `qmc`, `{grid_points: 4}` for `grid`.",
    )


class EarlyStopping(Section):
    """Stopping trials that are clearly worse, from their intermediate values (an Optuna pruner)."""

    name: Literal["none", "median", "successive-halving", "hyperband"] = Field(
        "none",
        description="`median`: stop a trial whose best value so far is worse than the median of completed trials "
        "at the same step; `successive-halving` (asynchronous) and `hyperband`; `none`.",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict,
        description="Keyword arguments of the Optuna pruner. `median` also takes Katib's names: "
        "`min_trials_required` (completed trials before any stop, Optuna's `n_startup_trials`) and "
        "`start_step` (no stop before this training step, Optuna's `n_warmup_steps`).",
    )


class Resources(Section):
    """What one trial gets (a worker pod on the cluster)."""

    gpus: Annotated[int, Field(ge=0)] = Field(
        0, description="GPUs per trial, one training process each; 0 trains one process on the CPU."
    )
    cpu: Annotated[float, Field(gt=0)] | None = Field(None, description="CPUs per trial (cluster request).")
    memory: str | None = Field(
        None,
        pattern=r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|K|M|G|T)?$",
        description="Memory per trial (cluster request), e.g. `32Gi`.",
    )


class Tune(Section):
    """The search: objective, space, algorithm, early stopping, budget."""

    objective: Objective = Field(description="The metric to optimise.")
    search_space: list[Parameter] = Field(description="The parameters searched, at least one.")
    algorithm: Algorithm = Field(default_factory=Algorithm, description="The sampler.")
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping, description="The pruner.")
    max_trial_count: Annotated[int, Field(ge=1)] = Field(12, description="Trials in the experiment.")
    parallel_trial_count: Annotated[int, Field(ge=1)] = Field(
        1, description="Trials training at once (local processes; worker pods on the cluster)."
    )
    max_failed_trial_count: Annotated[int, Field(ge=0)] = Field(
        3, description="The experiment fails (no new trials) once more trials than this have failed."
    )
    trial_retries: Annotated[int, Field(ge=0)] = Field(
        1,
        description="Restarts of a trial whose training process crashed; each resumes from the trial's last "
        "checkpoint. A config the engine rejects is never retried.",
    )
    resources_per_trial: Resources = Field(default_factory=Resources, description="Resources of one trial.")
    evaluation: Evaluation | None = Field(
        None,
        description="An evaluation of each trial's final model once its training ends (the llm-evaluate spec "
        "without `target`: name, data, metrics, ...; docs/evaluation.md). Its metrics are objective and "
        "additional-metric names with the prefix `evaluation/`: `evaluation/rouge_l`, `evaluation/accuracy`.",
    )
    storage: str | None = Field(
        None,
        description="Optuna study storage: empty keeps a journal file in the experiment folder; "
        "`grpc://HOST:PORT` (the llm-tune chart's study-storage server), `sqlite:///PATH`, "
        "`postgresql://...`, `mysql://...`. The environment variable `LLMFT_TUNE_STORAGE` "
        "overrides it (the chart sets it, from a Secret for database URLs).",
    )


class TuneSpec(Section):
    """An experiment: the finetune chart's base values plus the search."""

    name: str = Field(
        description="The experiment's name: lower-case letters, digits and `-`, at most 40 "
        "(the study's name, and the llm-tune chart's resource names)."
    )
    basemodel: str | None = Field(
        None, description="Base model location, as in the finetune chart (fills finetuning_config.run_conf.model)."
    )
    checkpointsRemote: str = Field(
        "",
        description="The experiment's bucket folder: trial n streams to `<checkpointsRemote>/trial-<n>/` and the "
        "results go to `<checkpointsRemote>/experiment.json`. Empty: everything stays local.",
    )
    mergeAdapter: bool = Field(False, description="LoRA: merge each trial's adapter (checkpoint-final is servable).")
    finetuning_config: dict[str, Any] = Field(
        description="The base fine-tuning config every trial starts from (docs/config-reference.md)."
    )
    tune: Tune = Field(description="The search.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.match(NAME_PATTERN, value):
            raise ValueError(
                "must be lower-case letters, digits and '-' (start and end with a letter or digit), "
                "at most 40 characters, e.g. lora-search"
            )
        return value

    # ---------------------------------------------------------------------------------------- derived

    @property
    def method(self) -> str:
        return self.finetuning_config.get("method", "sft")

    def base_config(self) -> dict:
        """finetuning_config with the chart-level keys applied (as the finetune chart does)."""
        config = dict(self.finetuning_config)
        run = dict(config.get("run_conf") or {})
        if self.basemodel:
            run["model"] = self.basemodel
        if self.mergeAdapter:
            run["merge_adapter"] = True
        config["run_conf"] = run
        return config

    def parameter_paths(self) -> list[tuple]:
        """Each parameter's path inside finetuning_config."""
        return [keypath.parse(parameter.key)[1:] for parameter in self.tune.search_space]

    def fingerprint(self) -> str:
        """What must not change while a study runs: base config, space, objective, algorithm, early stopping."""
        fixed = self.model_dump(
            mode="json", include={"basemodel", "checkpointsRemote", "mergeAdapter", "finetuning_config"}
        )
        fixed["tune"] = self.tune.model_dump(
            mode="json", include={"objective", "search_space", "algorithm", "early_stopping"}
        )
        return hashlib.sha256(json.dumps(fixed, sort_keys=True).encode()).hexdigest()[:16]

    def objective_source(self) -> MetricSource:
        return self.metric_source(self.tune.objective.metric)

    def metric_source(self, name: str) -> MetricSource:
        """Where a trial's metric `name` is read: the run's files, or the trial's evaluation results."""
        if name.startswith(EVALUATION_PREFIX):
            assert self.tune.evaluation is not None, "spec checks: evaluation/ metrics need tune.evaluation"
            return MetricSource(name, evaluation_results(self.tune.evaluation.name), None, False)
        return catalog(self.method, self.finetuning_config.get("task"))[name]

    def storage_url(self) -> str | None:
        return os.environ.get(STORAGE_ENV) or self.tune.storage


STORAGE_ENV = "LLMFT_TUNE_STORAGE"
EVALUATION_PREFIX = "evaluation/"


def evaluation_results(name: str) -> str:
    """A trial's evaluation results file, relative to its output folder (as `llmft evaluate` writes it)."""
    return f"{EVAL}/{name}/{EVAL_RESULTS}"


def evaluation_metrics(evaluation: Evaluation) -> set[str] | None:
    """The `evaluation/` metric names an evaluation writes (None: any, lm-eval tasks name their own)."""
    if "lm_eval" in evaluation.metrics:
        return None
    names = set(evaluation.metrics) | ({"judge_failure_rate"} if "judge" in evaluation.metrics else set())
    return {EVALUATION_PREFIX + name for name in names}


# -------------------------------------------------------------------------------------------- checks


def _problems(spec: TuneSpec) -> list[tuple]:
    """Every problem beyond types: (path, message, value[, fix])."""
    found: list[tuple] = []
    method = spec.method
    if method not in METHODS:
        return [(("finetuning_config", "method"), f"must be one of {', '.join(METHODS)}", method)]
    base = spec.base_config()
    base_problems = _config_problems(base)
    found += [(("finetuning_config",) + tuple(problem[0]),) + tuple(problem[1:]) for problem in base_problems]
    for parts, why in TUNER_KEYS.items():
        if parts == ("run_conf", "model"):
            continue
        if keypath.get(spec.finetuning_config, parts) is not None:
            found.append(
                (
                    ("finetuning_config",) + parts,
                    f"is set by the tuner: {why}; remove it",
                    keypath.get(spec.finetuning_config, parts),
                )
            )
    gpus = spec.tune.resources_per_trial.gpus
    if gpus > 1 and not keypath.get(spec.finetuning_config, ("launch_conf", "accelerate_config")):
        found.append(
            (
                ("tune", "resources_per_trial", "gpus"),
                "more than one GPU per trial runs one process per GPU "
                "under accelerate, which needs finetuning_config.launch_conf.accelerate_config",
                gpus,
                "write one with `llmft accelerate-config auto-ddp --out DIR` and give its path in the image, "
                "or use gpus: 1",
            )
        )
    found += _space_problems(spec, base, clean_base=not base_problems)
    found += _objective_problems(spec, base)
    if spec.tune.evaluation is not None:
        found += [(("tune", "evaluation", *where), *rest) for where, *rest in target_problems(spec.tune.evaluation)]
    found += _algorithm_problems(spec)
    return found


def _config_problems(config: dict) -> list[tuple]:
    """The engine's own checks of one finetune config, as (path inside finetuning_config, message, value...)."""
    model = config_model(config.get("method", "sft"))
    schema = _inline_refs(model.model_json_schema())
    try:
        validated = model.model_validate(config)
    except ValidationError as error:
        return _pydantic_problems(error, schema)
    return validated.problems()


def _space_problems(spec: TuneSpec, base: dict, clean_base: bool) -> list[tuple]:
    found: list[tuple] = []
    space = spec.tune.search_space
    if not space:
        return [
            (
                ("tune", "search_space"),
                "is empty; add at least one parameter "
                "({key: finetuning_config.training_args.learning_rate, type: double, min: 1.0e-5, max: 1.0e-3})",
                [],
            )
        ]
    schema = config_json_schema(spec.method)
    seen_keys: dict[str, int] = {}
    seen_labels: dict[str, int] = {}
    for index, parameter in enumerate(space):
        where = ("tune", "search_space", index)
        try:
            parts = keypath.parse(parameter.key)
        except ValueError as error:
            found.append((where + ("key",), str(error), parameter.key))
            continue
        if parts[0] != DEFAULT_KEY_PREFIX or len(parts) < 2:
            found.append(
                (
                    where + ("key",),
                    "must start with finetuning_config. (the engine's config keys are searched)",
                    parameter.key,
                    f"e.g. finetuning_config.{parameter.key}",
                )
            )
            continue
        why = keypath.unknown_part(schema, parts[1:])
        if why:
            found.append((where + ("key",), f"unknown key path: {why}", parameter.key))
            continue
        if parts[1:] in TUNER_KEYS:
            found.append((where + ("key",), f"is set by the tuner: {TUNER_KEYS[parts[1:]]}", parameter.key))
            continue
        missing = [
            parts[: depth + 1]
            for depth, part in enumerate(parts)
            if isinstance(part, int) and keypath.get(base, parts[1 : depth + 1]) is None
        ]
        if missing:
            found.append(
                (
                    where + ("key",),
                    f"the base config has no such list item ({'.'.join(map(str, missing[0]))})",
                    parameter.key,
                )
            )
            continue
        for label, table in ((parameter.key, seen_keys), (parameter.label, seen_labels)):
            if label in table:
                found.append(
                    (
                        where + ("key" if table is seen_keys else "name",),
                        f"is also used by search_space[{table[label]}]; each parameter needs its own key and name",
                        label,
                    )
                )
            table[label] = index
        range_problems = _range_problems(parameter, where)
        found += range_problems
        if not range_problems and clean_base:
            found += _value_problems(spec, base, parameter, parts[1:], where)
    return found


def _range_problems(parameter: Parameter, where: tuple) -> list[tuple]:
    found: list[tuple] = []
    kind = parameter.type
    if kind == "categorical":
        if not parameter.values:
            found.append((where + ("values",), "categorical needs a non-empty list of values", parameter.values))
        elif len({json.dumps(value) for value in parameter.values}) != len(parameter.values):
            found.append((where + ("values",), "has duplicates", parameter.values))
        for key in ("min", "max", "step"):
            if getattr(parameter, key) is not None:
                found.append(
                    (where + (key,), "only for double and int; categorical takes values", getattr(parameter, key))
                )
        if parameter.log:
            found.append((where + ("log",), "only for double and int", True))
        return found
    if parameter.values is not None:
        found.append((where + ("values",), f"only for categorical; {kind} takes min and max", parameter.values))
    for key in ("min", "max"):
        if getattr(parameter, key) is None:
            found.append((where + (key,), f"required for type {kind}", None))
    if found:
        return found
    low, high = float(parameter.min or 0), float(parameter.max or 0)  # both set: checked above
    if low > high:
        found.append((where + ("min",), f"is larger than max ({high:g}); swap them", low))
    if parameter.log and low <= 0:
        found.append((where + ("min",), "must be above 0 on a log scale (log: true); raise min or set log: false", low))
    if parameter.log and parameter.step is not None:
        found.append(
            (
                where + ("step",),
                "cannot be combined with log: true (Optuna samples either on a log scale or in steps)",
                parameter.step,
            )
        )
    if kind == "int":
        for key in ("min", "max", "step"):
            value = getattr(parameter, key)
            if value is not None and not float(value).is_integer():
                found.append((where + (key,), "must be a whole number for type int", value))
    return found


def _value_problems(spec: TuneSpec, base: dict, parameter: Parameter, parts: tuple, where: tuple) -> list[tuple]:
    """Would the engine accept the range's ends (and each categorical value)? Checked one parameter at a time."""
    probes: list[tuple[tuple, Any]]
    if parameter.type == "categorical":
        probes = [(("values", position), value) for position, value in enumerate(parameter.values or [])]
    else:
        cast = int if parameter.type == "int" else float
        probes = [(("min",), cast(parameter.min or 0)), (("max",), cast(parameter.max or 0))]
    found = []
    for position, value in probes:
        problems = _config_problems(keypath.with_values(base, {parts: value}))
        for path, message, *_ in problems:
            shown = ".".join([DEFAULT_KEY_PREFIX] + [f"[{p}]" if isinstance(p, int) else str(p) for p in path])
            found.append(
                (
                    where + position,
                    f"the engine rejects {shown.replace('.[', '[')} = {json.dumps(value)}: {message}",
                    value,
                )
            )
            break
    return found


def _objective_problems(spec: TuneSpec, base: dict) -> list[tuple]:
    found: list[tuple] = []
    available = catalog(spec.method, spec.finetuning_config.get("task"))
    objective = spec.tune.objective
    evaluates = (keypath.get(base, ("training_args", "eval_strategy")) or "no") != "no" or any(
        keypath.parse(p.key)[1:] == ("training_args", "eval_strategy") for p in spec.tune.search_space
    )
    names = [(("tune", "objective", "metric"), objective.metric)] + [
        (("tune", "objective", "additional_metrics", index), name)
        for index, name in enumerate(objective.additional_metrics)
    ]
    for where, name in names:
        if name.startswith(EVALUATION_PREFIX):
            found += _evaluation_metric_problems(spec, where, name)
            continue
        source = available.get(name)
        if source is None:
            import difflib

            close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
            found.append(
                (
                    where,
                    f"a run with method: {spec.method} never writes this metric",
                    name,
                    (f"did you mean {close[0]}? " if close else "") + f"it writes: {', '.join(available)}",
                )
            )
        elif source.needs_evaluation and not evaluates:
            found.append(
                (
                    where,
                    "is written only when the run evaluates",
                    name,
                    "set finetuning_config.training_args.eval_strategy: steps (with eval_steps) and "
                    "data_conf.validation_data",
                )
            )
    source = available.get(objective.metric)
    if objective.metric.startswith(EVALUATION_PREFIX) and spec.tune.evaluation is not None:
        source = spec.metric_source(objective.metric)
    if source is not None and source.step_key is None and spec.tune.early_stopping.name != "none":
        found.append(
            (
                ("tune", "early_stopping", "name"),
                f"needs intermediate values, but {objective.metric} is written once at the end",
                spec.tune.early_stopping.name,
                "use a metrics.jsonl metric such as eval_loss, or early_stopping: {name: none}",
            )
        )
    return found


def _evaluation_metric_problems(spec: TuneSpec, where: tuple, name: str) -> list[tuple]:
    if spec.tune.evaluation is None:
        return [
            (
                where,
                "is an evaluation metric, but the experiment has no evaluation",
                name,
                "add tune.evaluation (name, data, metrics) to evaluate each trial's final model",
            )
        ]
    written = evaluation_metrics(spec.tune.evaluation)
    if written is None or name in written:
        return []
    return [(where, "is not among the evaluation's metrics", name, f"use one of {', '.join(sorted(written))}")]


def _algorithm_problems(spec: TuneSpec) -> list[tuple]:
    found: list[tuple] = []
    tune = spec.tune
    if tune.algorithm.name == "grid":
        points = tune.algorithm.settings.get("grid_points")
        for index, parameter in enumerate(tune.search_space):
            if parameter.type == "double" and parameter.step is None and points is None:
                found.append(
                    (
                        ("tune", "search_space", index, "step"),
                        "grid search needs a step for a double (or tune.algorithm.settings.grid_points)",
                        None,
                    )
                )
    ranges_ok = all(_range_problems(p, ()) == [] for p in tune.search_space)
    if tune.algorithm.name != "grid" or (ranges_ok and not found):  # the grid is built from the ranges
        try:
            algorithms.make_sampler(tune.algorithm, [_labelled(p) for p in tune.search_space])
        except algorithms.SettingsError as error:
            path = ("tune", "algorithm", "settings") + ((error.key,) if error.key else ())
            found.append(
                (path, str(error), tune.algorithm.settings.get(error.key) if error.key else tune.algorithm.settings)
            )
    try:
        algorithms.make_pruner(tune.early_stopping)
    except algorithms.SettingsError as error:
        path = ("tune", "early_stopping", "settings") + ((error.key,) if error.key else ())
        found.append(
            (
                path,
                str(error),
                tune.early_stopping.settings.get(error.key) if error.key else tune.early_stopping.settings,
            )
        )
    return found


class _labelled:
    """A parameter as the sampler factory sees it (its display name is its Optuna name)."""

    def __init__(self, parameter: Parameter):
        self.__dict__.update(parameter.__dict__)
        self.name = parameter.label


def optuna_parameters(spec: TuneSpec) -> list:
    return [_labelled(parameter) for parameter in spec.tune.search_space]


# -------------------------------------------------------------------------------------------- loading


def read_spec_source(source: str | os.PathLike | dict) -> dict:
    if isinstance(source, dict):
        return json.loads(json.dumps(source))
    return read_spec_file(
        Path(source), "an experiment spec is a mapping (name, basemodel, finetuning_config, tune, ...)"
    )


def load_spec(source: str | os.PathLike | dict) -> TuneSpec:
    """Validate a spec file or dict; one UserError listing every problem with its key path and fix."""
    return validate_spec(TuneSpec, read_spec_source(source), "experiment spec", _problems)


def spec_json_schema() -> dict:
    """The spec's self-contained JSON Schema; finetuning_config is the engine's, as the finetune chart embeds it."""
    from llmft.chart_files import (
        _finetuning_config_schema,  # the finetune chart's: run_conf.model from basemodel
    )

    schema = _inline_refs(TuneSpec.model_json_schema())
    description = schema["properties"]["finetuning_config"].get("description")
    schema["properties"]["finetuning_config"] = dict(_finetuning_config_schema(), description=description)
    schema["$schema"] = "http://json-schema.org/draft-07/schema#"
    return schema
