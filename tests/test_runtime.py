"""Runtime settings (precision, --threads given, cache loading): scoped to a block and its thread, handed over whole."""

from __future__ import annotations

import dataclasses
import pickle
import threading

from vafusion import runtime
from vafusion.device import compute, precision, threads_given
from vafusion.fusion.data.sources import loading, loading_choice
from vafusion.runtime import RuntimeOptions


def test_one_context_variable_per_setting() -> None:
    assert set(runtime._VARIABLES) == {f.name for f in dataclasses.fields(RuntimeOptions)}


def test_current_takes_every_setting_and_applied_restores_them() -> None:
    assert RuntimeOptions.current() == RuntimeOptions()
    with compute(1, "bf16", allow_emulated=True), loading(True):
        here = RuntimeOptions.current()
        assert here == RuntimeOptions(precision="bf16", precision_asked="bf16", threads_given=1, stream=True)
    assert RuntimeOptions.current() == RuntimeOptions()
    with here.applied():
        assert (precision(), threads_given(), loading_choice()) == ("bf16", 1, True)
    assert (precision(), threads_given(), loading_choice()) == ("fp32", None, None)
    assert pickle.loads(pickle.dumps(here)) == here  # what a spawned worker receives


def test_a_setting_made_in_one_thread_is_not_seen_in_another() -> None:
    inside, done = threading.Event(), threading.Event()
    seen: list[tuple[str, bool | None]] = []

    def other() -> None:
        with compute(1, "bf16", allow_emulated=True), loading(False):
            inside.set()
            done.wait(10)
            seen.append((precision(), loading_choice()))

    thread = threading.Thread(target=other)
    thread.start()
    assert inside.wait(10)
    here = (precision(), loading_choice())  # while the other thread is inside its block
    done.set()
    thread.join(10)
    assert here == ("fp32", None) and seen == [("bf16", False)]
