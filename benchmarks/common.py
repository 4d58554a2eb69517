"""Shared pieces of the benchmarks: interleaved repeated timing and the result format.

Machines here are shared and noisy, so a benchmark never reports a lone absolute
time as a claim: it measures the candidate and its baseline alternately, several
times, and reports the ratio of medians. Each `bench_<name>.py` module has
`run(quick: bool) -> dict` returning `result(...)`.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved(candidates: dict[str, Callable[[], object]], repeats: int,
                setup: Callable[[str], object] | None = None) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, alternating A B A B ..., returning seconds per run.

    `setup(name)` runs untimed before each measurement (clearing a bucket, say).
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    for round_index in range(repeats):
        order = list(candidates) if round_index % 2 == 0 else list(reversed(candidates))
        for name in order:
            if setup is not None:
                setup(name)
            started = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - started)
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: float, target: str | None = None, meets: bool | None = None,
           explain: str = "") -> dict:
    """One reported ratio, with its target (e.g. '>= 0.9') and whether this run meets it."""
    return {"name": name, "value": round(float(value), 4), "target": target, "meets": meets, "explain": explain}


def result(title: str, figures: list[dict], measurements: dict, setup: str) -> dict:
    """What `run()` returns: the ratios, the raw medians they come from, and how it was measured."""
    return {"title": title, "figures": figures, "measurements": measurements, "setup": setup}
