"""Shared pieces of the benchmarks: interleaved repeated timing and the result format.

Machines here are shared and noisy, so a benchmark never reports a lone absolute
time as a claim: it measures the candidate and its baseline alternately, several
times, and reports the ratio of medians. Each `bench_<name>.py` module has
`run(quick: bool) -> dict` returning `result(...)`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.netshape import Link, shaped_server, unavailable


def interleaved(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    setup: Callable[[str], object] | None = None,
    budget_s: float | None = None,
    max_repeats: int | None = None,
) -> dict[str, list[float]]:
    """Time each candidate `repeats` times, alternating A B A B ..., returning seconds per run.

    `setup(name)` runs untimed before each measurement (clearing a bucket, say). With
    `budget_s`, more rounds follow (up to `max_repeats`) while the rounds so far took less than
    the budget: a quiet machine gets more samples, a busy one still finishes in time.
    """
    times: dict[str, list[float]] = {name: [] for name in candidates}
    started_all = time.perf_counter()

    def another_round(done: int) -> bool:
        if done < repeats:
            return True
        return budget_s is not None and done < (max_repeats or repeats) and time.perf_counter() - started_all < budget_s

    round_index = 0
    while another_round(round_index):
        order = list(candidates) if round_index % 2 == 0 else list(reversed(candidates))
        for name in order:
            if setup is not None:
                setup(name)
            started = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - started)
        round_index += 1
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def figure(name: str, value: float, target: str | None = None, meets: bool | None = None, explain: str = "") -> dict:
    """One reported ratio, with its target (e.g. '>= 0.9') and whether this run meets it."""
    return {"name": name, "value": round(float(value), 4), "target": target, "meets": meets, "explain": explain}


def result(title: str, figures: list[dict], measurements: dict, setup: str) -> dict:
    """What `run()` returns: the ratios, the raw medians they come from, and how it was measured."""
    return {"title": title, "figures": figures, "measurements": measurements, "setup": setup}


# The node-to-S3 path the storage benchmarks run over (see benchmarks/netshape.py).
LINK = Link()
SERVER_CPUS = "1"  # the S3 server (and its relay) run here; what is measured runs on the others


def network() -> tuple[Link | None, str]:
    """The shaped link when this machine allows one, else None; and a sentence for the results."""
    why = unavailable()
    if why is None:
        return LINK, f"S3 server in its own network namespace behind a shaped link: {LINK.describe()}"
    return None, f"S3 server on loopback (no shaped link: {why}); ratios against link capacity are left out"


@contextlib.contextmanager
def bench_bucket(work: Path, bucket: str = "bench", link: Link | None = None):
    """A SeaweedFS server for one benchmark: `bucket` created, BUCKET_STORAGE_* pointing at it, all undone after.

    With `link`, the server sits in its own network namespace behind it (`netshape.shaped_server`),
    pinned to SERVER_CPUS; without, on loopback.
    """
    from llmft.storage.seaweed import SeaweedServer

    saved = {name: os.environ.get(name) for name in server_variables()}
    with contextlib.ExitStack() as stack:
        if link is not None:
            server = stack.enter_context(shaped_server(work, link, SERVER_CPUS))
        else:
            server = SeaweedServer(
                work / "s3",
                access_key="bench-" + secrets.token_hex(4),
                secret_key=secrets.token_hex(16),
                log_path=work / "weed.log",
            )
            stack.callback(server.stop)
            server.start()
        try:
            server.create_bucket(bucket)
            os.environ.update(server.environment())
            yield server
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def server_variables() -> tuple[str, ...]:
    return ("BUCKET_STORAGE_HOST", "BUCKET_STORAGE_ACCESS_KEY", "BUCKET_STORAGE_SECRET_KEY")
