"""kill_tree ends a launcher with every process it started, also those in sessions of their own (as torchrun
starts its workers), where killing the launcher's process group would leave them running."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from llmft.processes import kill_tree

# The launcher starts a worker in a new session (as torchrun does), the worker a child of its own; each of the
# two writes its PID into a file named by its role, then all sleep.
PROCESS = """
import os, subprocess, sys, time
role, folder = sys.argv[1], sys.argv[2]
child = {"launcher": "worker", "worker": "grandchild"}.get(role)
if child:
    subprocess.Popen([sys.executable, __file__, child, folder], start_new_session=role == "launcher")
if role != "launcher":
    with open(os.path.join(folder, role), "w") as file:
        file.write(str(os.getpid()))
time.sleep(600)
"""


def test_kill_tree_ends_workers_in_their_own_session_and_their_children(tmp_path: Path):
    script = tmp_path / "process.py"
    script.write_text(PROCESS)
    launcher = subprocess.Popen([sys.executable, str(script), "launcher", str(tmp_path)], start_new_session=True)
    deadline = time.monotonic() + 60
    while not all(_pid(tmp_path / name) for name in ("worker", "grandchild")):
        assert time.monotonic() < deadline and launcher.poll() is None, "the launcher did not start its workers"
        time.sleep(0.05)
    pids = [_pid(tmp_path / name) for name in ("worker", "grandchild")]
    assert os.getpgid(pids[0]) != launcher.pid  # killpg would miss it

    kill_tree(launcher.pid)

    assert launcher.wait(timeout=10) < 0
    for pid in pids:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE, pid


def _pid(path: Path) -> int:
    """The PID written into `path`, 0 while it is not (completely) written."""
    try:
        return int(path.read_text())
    except (OSError, ValueError):
        return 0


def test_kill_tree_of_an_ended_process_does_nothing():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    kill_tree(process.pid)
