"""Search-space helpers for `Client.tune`: `search.double`, `search.int`, `search.categorical`.

Each returns a `Distribution`; `Client.tune(search_space={key: distribution})` turns it into the experiment
spec's `tune.search_space[]` entry (`llmft.tune.spec.Parameter`), which the spec's own checks validate.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass
from typing import Any

Scalar = bool | builtins.int | float | str


@dataclass(frozen=True)
class Distribution:
    """One parameter's values: the spec's `type`, `min`, `max`, `log`, `step`, `values`."""

    type: str
    min: float | None = None
    max: float | None = None
    log: bool = False
    step: float | None = None
    values: tuple[Scalar, ...] | None = None

    def parameter(self, key: str) -> dict[str, Any]:
        """The spec entry for `key` (a `finetuning_config.` key path)."""
        entry: dict[str, Any] = {"key": key, "type": self.type}
        if self.type == "categorical":
            entry["values"] = list(self.values or ())
            return entry
        entry.update(min=self.min, max=self.max)
        if self.log:
            entry["log"] = True
        if self.step is not None:
            entry["step"] = self.step
        return entry


def double(min: float, max: float, log: bool = False, step: float | None = None) -> Distribution:  # noqa: A002
    """A real number in [min, max]; `log=True` samples on a log scale (min > 0)."""
    return Distribution("double", float(min), float(max), log, step)


def int(min: builtins.int, max: builtins.int, log: bool = False, step: builtins.int | None = None) -> Distribution:  # noqa: A002
    """An integer in [min, max] (multiples of `step` above min)."""
    return Distribution("int", min, max, log, step)


def categorical(values: list[Scalar] | tuple[Scalar, ...]) -> Distribution:
    """One of `values`."""
    return Distribution("categorical", values=tuple(values))


__all__ = ["Distribution", "categorical", "double", "int"]
