"""Model plug-ins that break the contract (tests/faults/test_model_faults.py): each one rule.

A model trained by gradient steps is a ``torch.nn.Module`` whose ``forward(streams, present, valid)``
returns ``(B, W, 2)`` computed from its parameters; a model fitted in closed form has ``fit``,
``predict`` (one ``(T, 2)`` array per video), ``state_dict`` and ``load_state_dict`` of plain arrays.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import torch
from torch import nn


class Small(nn.Module):
    """A linear map of the concatenated streams: the well-behaved base of the others."""

    def __init__(self, dims: list[int], *, scale: float = 1.0) -> None:
        super().__init__()
        self.proj = nn.Linear(sum(dims), 2)
        self.scale = scale

    def forward(self, streams, present, valid):
        return torch.tanh(self.scale * self.proj(torch.cat(streams, dim=-1)))


class RaisesInInit(Small):
    def __init__(self, dims: list[int], *, scale: float = 1.0) -> None:
        raise RuntimeError("needs a GPU")


class ExitsInInit(Small):
    def __init__(self, dims: list[int], *, scale: float = 1.0) -> None:
        sys.exit(0)


class TypeErrorInForward(Small):
    def forward(self, streams, present, valid):
        raise TypeError("forward() takes 2 positional arguments but 4 were given")


class ExitsInForward(Small):
    def forward(self, streams, present, valid):
        sys.exit(3)


class Wide(Small):
    def forward(self, streams, present, valid):
        out = super().forward(streams, present, valid)
        return torch.cat([out, out[..., :1]], dim=-1)  # (B, W, 3)


class Flat(Small):
    def forward(self, streams, present, valid):
        return super().forward(streams, present, valid)[..., 0]  # (B, W)


class TimeFirst(Small):
    def forward(self, streams, present, valid):
        return super().forward(streams, present, valid).transpose(0, 1)  # (W, B, 2)


class WrongWhenScoring(Small):
    """Right while it trains, (B, W, 3) when it predicts (eval mode): caught where vafusion predicts."""

    def forward(self, streams, present, valid):
        out = super().forward(streams, present, valid)
        return out if self.training else torch.cat([out, out[..., :1]], dim=-1)


class NoGrad(Small):
    def forward(self, streams, present, valid):
        return super().forward(streams, present, valid).detach()


class NoParameters(nn.Module):
    def __init__(self, dims: list[int]) -> None:
        super().__init__()

    def forward(self, streams, present, valid):
        return torch.zeros(*valid.shape, 2)


class TextInState(Small):
    def state_dict(self, *args, **kwargs):
        return {**super().state_dict(*args, **kwargs), "note": "trained on Tuesday"}


class _Closed:
    """Fitted in closed form: predicts each video's mean label."""

    def __init__(self, dims: list[int]) -> None:
        self.mean = np.zeros(2, np.float32)

    def fit(self, streams, present, labels, *, seed: int = 0) -> None:
        self.mean = np.nanmean(np.concatenate(labels), axis=0).astype(np.float32)

    def predict(self, streams, present) -> list[np.ndarray]:
        return [np.tile(self.mean, (len(p[0]), 1)) + 0.01 * s[0][:, :2] for s, p in zip(streams, present)]

    def state_dict(self) -> dict:
        return {"mean": self.mean}

    def load_state_dict(self, state) -> None:
        self.mean = np.asarray(state["mean"], np.float32)


class ClosedTooFew(_Closed):
    def predict(self, streams, present):
        return super().predict(streams, present)[:-1]


class ClosedShort(_Closed):
    def predict(self, streams, present):
        return [p[:-1] for p in super().predict(streams, present)]


class ClosedNaN(_Closed):
    def predict(self, streams, present):
        return [np.full_like(p, np.nan) for p in super().predict(streams, present)]


class Chatty(Small):
    """Prints while it is built and on every forward, as a debugging plug-in does."""

    def __init__(self, dims: list[int], *, scale: float = 1.0) -> None:
        print("Chatty: building")
        super().__init__(dims, scale=scale)

    def forward(self, streams, present, valid):
        print("Chatty: forward", tuple(valid.shape))
        return super().forward(streams, present, valid)


class ChattyClosed(_Closed):
    """Fitted in closed form, and prints whenever it predicts."""

    def predict(self, streams, present):
        print("ChattyClosed: predict")
        return super().predict(streams, present)


class ChangesTheCache(Small):
    """Changes a cache file on its 15th forward (early in epoch 2), as another process might: ``CHANGE_CACHE``
    is ``rewrite:PATH`` (the first video's features overwritten in place, same size) or ``truncate:PATH``."""

    def __init__(self, dims: list[int], *, scale: float = 1.0) -> None:
        super().__init__(dims, scale=scale)
        self.calls = 0

    def forward(self, streams, present, valid):
        self.calls += 1
        if self.calls == 15 and os.environ.get("CHANGE_CACHE"):
            how, _, path = os.environ["CHANGE_CACHE"].partition(":")
            _change(how, path)
        return super().forward(streams, present, valid)


def _change(how: str, path: str) -> None:
    import h5py

    if how == "truncate":
        os.truncate(path, os.path.getsize(path) // 2)
        return
    with h5py.File(path, "r") as f:
        dataset = f["videos"][sorted(f["videos"])[0]]["features"]
        offset, count = dataset.id.get_offset(), dataset.size
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.full(count, 0.5, np.float16).tobytes())
