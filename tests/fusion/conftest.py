"""Shared by the stage-2 tests: one torch thread, and tiny options for every built-in model."""

from __future__ import annotations

import pytest

from vafusion.fusion.models import BUILTINS, resolve_model
from vafusion.fusion.runs import checkpoint as ckpt_mod


@pytest.fixture(autouse=True)
def _every_test_on_one_thread(one_thread):
    """Tiny models run fastest on one thread (the fixture of tests/conftest.py)."""


@pytest.fixture
def kill_after_last_save(monkeypatch):
    """``kill_after_last_save(n)``: the n-th write of a last.pt raises KeyboardInterrupt right after it is
    on disk, as a kill between two epochs would stop a run (later writes behave normally again)."""

    def arm(n: int) -> None:
        real, count = ckpt_mod.save_atomic, {"n": 0}

        def dying_save(obj, path):
            real(obj, path)
            if path.name == ckpt_mod.LAST:
                count["n"] += 1
                if count["n"] == n:
                    monkeypatch.setattr(ckpt_mod, "save_atomic", real)
                    raise KeyboardInterrupt

        monkeypatch.setattr(ckpt_mod, "save_atomic", dying_save)

    return arm


_TINY = dict(d_model=16, heads=2, tcn_kernel=3, tcn_dilations=(1, 2), head_hidden=16, layers=1, ff_hidden=32)


def tiny_options(model: str, **changes) -> dict:
    """Small-model options for ``model``: the entries of a common tiny set that it declares."""
    declared = resolve_model(model).options
    return {k: v for k, v in {**_TINY, **changes}.items() if k in declared}


BUILTIN_MODELS = list(BUILTINS)
