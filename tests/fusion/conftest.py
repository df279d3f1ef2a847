"""Shared by the stage-2 tests: one torch thread, and tiny options for every built-in model."""

from __future__ import annotations

import pytest
import torch

from vafusion.fusion.models import BUILTINS, resolve_model


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run fastest on one thread; OpenMP spinning on a busy machine can cost 40x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


_TINY = dict(d_model=16, heads=2, tcn_kernel=3, tcn_dilations=(1, 2), head_hidden=16, layers=1, ff_hidden=32)


def tiny_options(model: str, **changes) -> dict:
    """Small-model options for ``model``: the entries of a common tiny set that it declares."""
    declared = resolve_model(model).options
    return {k: v for k, v in {**_TINY, **changes}.items() if k in declared}


BUILTIN_MODELS = list(BUILTINS)
