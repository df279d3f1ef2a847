"""Plug-ins that break the extractor contract, one way each (used by test_plugins.py by import path)."""

from __future__ import annotations

import torch


class _Frame:
    kind = "frame"
    dim = 4
    image_size = 16

    def provenance(self) -> dict:
        return {"model": self.name}

    def to(self, device):
        return self


class WrongShape(_Frame):
    name = "bad_shape"

    def __call__(self, crops):
        return torch.zeros(len(crops))


class WrongDtype(_Frame):
    name = "bad_dtype"

    def __call__(self, crops):
        return torch.zeros(len(crops), 4, dtype=torch.int64)


class NaNs(_Frame):
    name = "bad_nan"

    def __call__(self, crops):
        return torch.full((len(crops), 4), float("nan"))


class WrongDim(_Frame):
    name = "bad_dim"

    def __call__(self, crops):
        return torch.zeros(len(crops), 5)


class Raises(_Frame):
    name = "bad_raise"

    def __call__(self, crops):
        raise RuntimeError("boom\nsecond line")


class MissingRows:
    kind = "track"
    name = "bad_rows"
    dim = 3
    sample_rate = 8000

    def provenance(self) -> dict:
        return {"model": "bad_rows"}

    def to(self, device):
        return self

    def __call__(self, wave, frame_times):
        return torch.zeros(len(frame_times) - 1, 3)


def no_kind():
    """A factory returning something that is not an extractor."""
    return object()
