"""`llmft.sync.forked`: the restore's child process hands back its result, its error, or says that it died.

(The children here run a few lines each, so forking from a pytest-xdist worker, which has threads, is safe.)
"""

from __future__ import annotations

import os

import pytest

from llmft.errors import TransientError
from llmft.storage.errors import CorruptObject
from llmft.sync.forked import ForkedCall


def test_the_child_returns_its_result_from_its_own_process():
    call = ForkedCall(lambda: os.getpid(), name="probe")
    child_pid = call.result()
    assert isinstance(child_pid, int) and child_pid != os.getpid()


def test_the_childs_error_is_raised_here_with_its_kind_and_message():
    def fails():
        raise CorruptObject("checkpoint-4/model.safetensors: sha256 does not match its manifest")

    with pytest.raises(CorruptObject, match="does not match its manifest") as raised:
        ForkedCall(fails, name="probe").result()
    assert raised.value.exit_code == 1  # still a TransientError: the pod is retried

    class Unpicklable(TransientError):
        def __init__(self, code: int, text: str):
            super().__init__(f"{code}: {text}")

    def fails_oddly():
        raise Unpicklable(503, "slow down")

    with pytest.raises(TransientError, match="503: slow down"):
        ForkedCall(fails_oddly, name="probe").result()


def test_a_child_that_dies_is_a_transient_error_naming_its_exit_status():
    said = r"checkpoint restore: its process ended without a result \(exit status 9\)"
    with pytest.raises(TransientError, match=said):
        ForkedCall(lambda: os._exit(9), name="checkpoint restore").result()
