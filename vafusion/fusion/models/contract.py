"""The checks vafusion applies to every model where it calls one: built-ins and plug-ins alike.

Why here: a model plug-in is code vafusion did not write. Whatever it raises (``sys.exit()``
included) while it is built, called, fitted or asked for its state, and whatever it returns that
would break training, scoring or a checkpoint (an output of another shape, one that does not
depend on the parameters, a module without parameters, a state that is not numbers, the wrong
number or length of predictions), becomes one :class:`ModelError` line naming the model and the
rule, instead of a traceback from deep inside torch (or, for ``sys.exit()``, a run that ends
with the plug-in's exit code and no message). The contract itself is documented in the README,
"Writing your own model", and in :mod:`vafusion.fusion.models.registry`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from vafusion.errors import VafusionError
from vafusion.plugins import FOREIGN, MODELS, failure, who


class ModelError(VafusionError):
    """A model broke its contract (or raised): one line naming it and the rule."""


def label(name: str) -> str:
    """How messages name a model: ``model 'pkg.mod:Cls'``."""
    return who(MODELS, name)


def guarded(name: str, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` of model ``name``; anything it raises (or a sys.exit) is one line.

    ``what`` says which call it was (``"building it"``, ``"its forward"``, ``"fit"`` ...).
    """
    try:
        return fn(*args, **kwargs)
    except VafusionError:
        raise
    except FOREIGN as e:
        raise ModelError(f"{label(name)}: {what} {failure(e)}") from e


def check_module(name: str, model: nn.Module) -> None:
    """A model trained by gradient steps needs trainable parameters (AdamW of none is torch's traceback)."""
    if not any(p.requires_grad for p in model.parameters()):
        raise ModelError(
            f"{label(name)}: has no trainable parameters; a torch.nn.Module is trained by gradient steps on "
            "its parameters (or write it as a model fitted in closed form: fit, predict, state_dict)"
        )


def forward(name: str, model: nn.Module, streams: list[Tensor], present: list[Tensor], valid: Tensor) -> Tensor:
    """``model(streams, present, valid)``, checked: a floating ``(B, W, 2)`` tensor, with grad when training."""
    out = guarded(name, "its forward", model, streams, present, valid)
    expected = (*valid.shape, 2)
    if not isinstance(out, Tensor):
        raise ModelError(f"{label(name)}: forward returned {type(out).__name__}; return a {expected} tensor")
    if tuple(out.shape) != expected or not out.is_floating_point():
        raise ModelError(
            f"{label(name)}: forward returned {out.dtype} of shape {tuple(out.shape)} for a batch of "
            f"{expected[0]} windows of {expected[1]} frames; return floats of shape (B, W, 2) = {expected} "
            "(valence, arousal per frame)"
        )
    if torch.is_grad_enabled() and model.training and not out.requires_grad:
        raise ModelError(
            f"{label(name)}: forward returned an output that does not depend on its parameters (no grad); "
            "compute it from them, without .detach(), torch.no_grad() or numpy inside forward"
        )
    return out


def state(name: str, model: Any) -> dict[str, Any]:
    """``model.state_dict()``, checked: every entry a tensor or an array of numbers (a checkpoint holds no pickle)."""
    entries = guarded(name, "state_dict()", model.state_dict)
    if not isinstance(entries, Mapping):
        raise ModelError(f"{label(name)}: state_dict() returned {type(entries).__name__}; return a dict")
    for key, value in entries.items():
        ok = isinstance(value, Tensor) or np.asarray(value).dtype.kind in "biuf"
        if not isinstance(key, str) or not ok:
            raise ModelError(
                f"{label(name)}: state_dict() entry {key!r} is a {type(value).__name__}; a checkpoint holds tensors "
                "and arrays of numbers only (keep other state in the constructor's options)"
            )
    return dict(entries)


def predictions(name: str, out: Any, lengths: Sequence[int]) -> list[np.ndarray]:
    """What a closed-form model's ``predict`` returned for videos of ``lengths`` frames, checked: one
    ``(T, 2)`` array of numbers per video, in order."""
    if not isinstance(out, Sequence) and not isinstance(out, np.ndarray):
        out = list(out) if out is not None and hasattr(out, "__iter__") else out
    if out is None or len(out) != len(lengths):
        got = "None" if out is None else f"{len(out)} prediction(s)"
        raise ModelError(
            f"{label(name)}: predict returned {got} for {len(lengths)} videos; return one (T, 2) array per video, "
            "in the order given"
        )
    checked = []
    for i, (p, t) in enumerate(zip(out, lengths)):
        arr = np.asarray(p.detach().cpu() if isinstance(p, Tensor) else p)
        if arr.shape != (t, 2) or arr.dtype.kind not in "biuf":
            raise ModelError(
                f"{label(name)}: predict returned {arr.dtype} of shape {arr.shape} for video {i + 1} of "
                f"{len(lengths)} ({t} frames); return ({t}, 2) numbers (valence, arousal per frame)"
            )
        checked.append(arr.astype(np.float32))
    return checked


__all__ = ["ModelError", "check_module", "forward", "guarded", "label", "predictions", "state"]
