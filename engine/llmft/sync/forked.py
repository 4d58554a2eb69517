"""Run one function in a forked child process and wait for its result elsewhere.

Why a process and not a thread: a relaunched run downloads its checkpoint while it imports torch,
transformers and trl. Imports hold the interpreter lock nearly all the time, so a download thread in
the same process waits for it between every chunk (measured: the restore took 1.7 s longer than the
same download alone, with a 7 s import phase beside it). A child forked before those imports has its
own interpreter lock.

Fork only from a process with a single thread (`can_fork`): a lock another thread holds at the fork
(logging's, the import lock) would stay held forever in the child.
"""

from __future__ import annotations

import multiprocessing
import pickle
import threading
from collections.abc import Callable
from multiprocessing.connection import Connection

from llmft.errors import TransientError, UserError


def can_fork() -> bool:
    return threading.active_count() == 1 and "fork" in multiprocessing.get_all_start_methods()


class ForkedCall:
    """`work()` running in a forked child; `result()` waits for its return value or raises its exception."""

    def __init__(self, work: Callable[[], object], name: str):
        context = multiprocessing.get_context("fork")
        self._receive, send = context.Pipe(duplex=False)
        # daemon: if this process ends first (an error, Ctrl-C), the child is stopped, not left downloading.
        self._child = context.Process(target=_child_main, args=(work, send), name=name, daemon=True)
        self._child.start()
        send.close()
        self.name = name

    def result(self) -> object:
        try:
            kind, payload = self._receive.recv()
        except EOFError:
            self._child.join()
            raise TransientError(
                f"{self.name}: its process ended without a result (exit status {self._child.exitcode})"
            ) from None
        finally:
            self._receive.close()
        self._child.join()
        if kind == "error":
            raise payload
        return payload


def _child_main(work: Callable[[], object], send: Connection) -> None:
    try:
        outcome: tuple[str, object] = ("ok", work())
    except BaseException as error:  # noqa: BLE001 - handed to the parent, which raises it
        outcome = ("error", _portable(error))
    send.send(outcome)
    send.close()


def _portable(error: BaseException) -> BaseException:
    """The exception itself when it survives pickling, else one of its kind's base class with its text."""
    try:
        pickle.loads(pickle.dumps(error))
        return error
    except Exception:  # noqa: BLE001 - a constructor with other arguments than the message
        for kind in (TransientError, UserError):
            if isinstance(error, kind):
                return kind(str(error))
        return RuntimeError(f"{type(error).__name__}: {error}")
