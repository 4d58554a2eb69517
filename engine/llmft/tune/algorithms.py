"""The spec's algorithm and early stopping as Optuna samplers and pruners.

Settings are passed to Optuna's own classes unchanged, so every option Optuna documents works and an
unknown one is rejected by Optuna's signature, not by a list kept here. Two things are ours: Katib's
median-stop knobs (`min_trials_required`, `start_step`) are accepted as names for Optuna's
`n_startup_trials` and `n_warmup_steps`, and grid search turns the search space into Optuna's grid.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

ALGORITHMS = {
    "random": "RandomSampler",
    "grid": "GridSampler",
    "tpe": "TPESampler",
    "multivariate-tpe": "TPESampler",
    "cmaes": "CmaEsSampler",
    "gp": "GPSampler",
    "qmc": "QMCSampler",
}
PRUNERS = {
    "none": "NopPruner",
    "median": "MedianPruner",
    "successive-halving": "SuccessiveHalvingPruner",
    "hyperband": "HyperbandPruner",
}
# Katib's median-stop settings and Optuna's names for them.
KATIB_MEDIAN_NAMES = {"min_trials_required": "n_startup_trials", "start_step": "n_warmup_steps"}
# Settings the spec sets itself (the seed has its own key; grid's search space is the spec's).
OWNED_SETTINGS = {"seed", "search_space", "multivariate"}
DEFAULT_GRID_POINTS = 5


class SettingsError(ValueError):
    """A setting Optuna does not accept: `key` (None for the whole block) and why."""

    def __init__(self, key: str | None, message: str):
        super().__init__(message)
        self.key = key


def _check_names(cls, settings: dict, renamed: dict[str, str] | None = None) -> dict:
    allowed = [name for name in inspect.signature(cls).parameters if name not in OWNED_SETTINGS]
    renamed = renamed or {}
    result = {}
    for key, value in settings.items():
        target = renamed.get(key, key)
        if target not in allowed or key in OWNED_SETTINGS:
            names = sorted(set(allowed) | set(renamed))
            raise SettingsError(key, f"unknown setting for Optuna's {cls.__name__} (allowed: {', '.join(names)})")
        if target in result:
            raise SettingsError(key, f"set either {key} or {target}, not both")
        result[target] = value
    return result


def grid_values(parameter, grid_points: int) -> list:
    """The grid of one parameter: categorical values, every int step, or `grid_points` doubles."""
    if parameter.type == "categorical":
        return list(parameter.values)
    if parameter.type == "int":
        step = int(parameter.step or 1)
        return list(range(int(parameter.min), int(parameter.max) + 1, step))
    if parameter.step:
        count = math.floor((parameter.max - parameter.min) / parameter.step + 1e-9) + 1
        return [round(parameter.min + index * parameter.step, 12) for index in range(count)]
    if grid_points == 1:
        return [parameter.min]
    if parameter.log:
        low, high = math.log(parameter.min), math.log(parameter.max)
        points = [math.exp(low + (high - low) * index / (grid_points - 1)) for index in range(grid_points)]
        return [min(max(value, parameter.min), parameter.max) for value in points]  # exp(log(x)) may overshoot
    return [parameter.min + (parameter.max - parameter.min) * index / (grid_points - 1) for index in range(grid_points)]


def make_sampler(algorithm, parameters: list) -> Any:
    """The Optuna sampler for the spec's `tune.algorithm` (raises SettingsError)."""
    import optuna

    name = algorithm.name
    cls = getattr(optuna.samplers, ALGORITHMS[name])
    settings = dict(algorithm.settings)
    if name == "grid":
        points = settings.pop("grid_points", DEFAULT_GRID_POINTS)
        if not isinstance(points, int) or points < 1:
            raise SettingsError("grid_points", f"must be a positive integer, got {points!r}")
        kwargs = _check_names(cls, settings)
        grid = {parameter.name: grid_values(parameter, points) for parameter in parameters}
        return _construct(cls, dict(search_space=grid, seed=algorithm.seed, **kwargs))
    kwargs = _check_names(cls, settings)
    if name == "multivariate-tpe":
        kwargs["multivariate"] = True
    return _construct(cls, dict(seed=algorithm.seed, **kwargs))


def make_pruner(early_stopping) -> Any:
    """The Optuna pruner for the spec's `tune.early_stopping` (raises SettingsError)."""
    import optuna

    cls = getattr(optuna.pruners, PRUNERS[early_stopping.name])
    renamed = KATIB_MEDIAN_NAMES if early_stopping.name == "median" else None
    return _construct(cls, _check_names(cls, dict(early_stopping.settings), renamed))


def _construct(cls, kwargs: dict):
    import warnings

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "experimental" notes for GP and QMC
            return cls(**kwargs)
    except (TypeError, ValueError, ImportError, ModuleNotFoundError) as error:
        raise SettingsError(None, f"Optuna's {cls.__name__} rejects these settings: {error}") from None
