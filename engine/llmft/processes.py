"""Ending a process with everything it started, as the end of a pod does.

A process group is not enough: torchrun (under `accelerate launch`) starts each training worker in a session of
its own, so `killpg` on the launcher leaves the workers training, writing into the output folder and uploading
to the bucket after their launcher is gone.
"""

from __future__ import annotations

import time

import psutil


def kill_tree(pid: int, timeout: float = 60) -> None:
    """SIGKILL `pid` and all its descendants, and wait until none of them runs any more.

    Each process is stopped (SIGSTOP) before the tree is read again, so none can start a child that escapes;
    then all are killed at once. The caller still reaps `pid` if it is its child.
    """
    try:
        root = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    stopped: dict[int, psutil.Process] = {}
    frontier = [root]
    while frontier:
        for process in frontier:
            stopped[process.pid] = process
            _quietly(process.suspend)
        descendants = _quietly(lambda: root.children(recursive=True), [])
        frontier = [child for child in descendants if child.pid not in stopped]
    for process in stopped.values():
        _quietly(process.kill)
    deadline = time.monotonic() + timeout
    while live := [process.pid for process in stopped.values() if _running(process)]:
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes {live} outlived SIGKILL for {timeout:.0f} s")
        time.sleep(0.05)


def _running(process: psutil.Process) -> bool:
    """Whether `process` still runs (a zombie does not: it only waits for its parent to read its exit code)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _quietly(call, default=None):
    """`call()`, or `default` when the process ended meanwhile."""
    try:
        return call()
    except psutil.NoSuchProcess:
        return default
