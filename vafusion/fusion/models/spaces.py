"""The search ranges of the built-in models' options, shared the way their help lines are.

A model's ``option_space`` (see :mod:`vafusion.fusion.models.registry`) says what ``vafusion
tune`` searches by default: ``{"low", "high"[, "log", "step"]}`` for a range, ``{"choices": [...]}``
for a set of values. Widths are choices that every head count of the space divides; switches
that change what a model is (``causal``, ``attn_distance_bias``) are left out on purpose.
"""

from __future__ import annotations

from typing import Any

OPTION_SPACE: dict[str, dict[str, Any]] = {
    "d_model": {"choices": [32, 64, 128, 256]},
    "tcn_kernel": {"choices": [3, 5, 7]},
    "tcn_dilations": {"choices": [[1, 2, 4], [1, 2, 4, 8], [1, 2, 4, 8, 16]]},
    "dropout": {"low": 0.0, "high": 0.5},
    "heads": {"choices": [1, 2, 4, 8]},
    "head_hidden": {"choices": [32, 64, 128]},
    "layers": {"low": 1, "high": 4},
    "ff_hidden": {"choices": [128, 256, 512]},
}


def option_space(*names: str) -> dict[str, dict[str, Any]]:
    """The shared search ranges of the named options (a built-in's ``option_space``)."""
    return {n: OPTION_SPACE[n] for n in names}


__all__ = ["OPTION_SPACE", "option_space"]
