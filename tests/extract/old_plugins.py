"""Extractors whose options are declared in the ways plug-ins were written before options were typed
(used by test_plugins.py by import path); each records what it received."""

from __future__ import annotations

from typing import Any


class _Recorder:
    kind = "frame"
    name = "recorder"
    dim = 1
    image_size = 16

    def __init__(self, **received: Any) -> None:
        self.received = received

    def provenance(self) -> dict:
        return {"model": self.name}

    def to(self, device):
        return self

    def __call__(self, crops):
        return crops.float().mean(dim=(1, 2, 3))[:, None]


class IntOrText(_Recorder):
    def __init__(self, bins: int | str = 8, weights: str | None = None) -> None:
        super().__init__(bins=bins, weights=weights)


class Unannotated(_Recorder):
    def __init__(self, bins=8, name="y", weights=None) -> None:
        super().__init__(bins=bins, name=name, weights=weights)


class Anything(_Recorder):
    pass


class Required(_Recorder):
    def __init__(self, size: int) -> None:
        super().__init__(size=size)


def factory(scale: float = 1.0, flip: bool = False, **rest: Any) -> _Recorder:
    return _Recorder(scale=scale, flip=flip, **rest)
