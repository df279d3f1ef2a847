"""Extractor plug-ins that misbehave the ways a careless or hostile plug-in does (tests/faults/test_plugin_faults.py).

Each breaks one rule of the contract: changes its input in place, ends the process, declares an
absurd number, returns a tensor that holds no values, or has a provenance that raises or changes.
"""

from __future__ import annotations

import itertools
import os
import sys

import numpy as np
import torch


class _Track:
    kind = "track"
    dim = 2
    sample_rate = 16000

    def provenance(self) -> dict:
        return {"model": self.name}

    def to(self, device: torch.device):
        return self

    def __call__(self, wave: torch.Tensor, frame_times: np.ndarray) -> torch.Tensor:
        return torch.zeros(len(frame_times), self.dim)


class _Frame(_Track):
    kind = "frame"
    image_size = 16
    sample_rate = None

    def __call__(self, crops: torch.Tensor) -> torch.Tensor:
        return torch.zeros(len(crops), self.dim)


# ---- inputs changed in place: every extractor must still see its own, unchanged input ------------


class ZeroesWave(_Track):
    name = "zeroes_wave"

    def __call__(self, wave, frame_times):
        wave.zero_()
        return super().__call__(wave, frame_times)


class ZeroesTimes(_Track):
    name = "zeroes_times"

    def __call__(self, wave, frame_times):
        frame_times[:] = 0.0
        return super().__call__(wave, frame_times)


class Track(_Track):
    """Reads what the others change: the wave's loudness and each frame's instant."""

    name = "track"

    def __call__(self, wave, frame_times):
        level = torch.full((len(frame_times),), float(wave.abs().mean()))
        return torch.stack([level, torch.from_numpy(np.array(frame_times, np.float32))], dim=1)


class ZeroesCrops(_Frame):
    name = "zeroes_crops"

    def __call__(self, crops):
        crops.zero_()
        return super().__call__(crops)


class Crops(_Frame):
    name = "crops"

    def __call__(self, crops):
        return crops.float().mean(dim=(2, 3))[:, :2]


# ---- plug-ins that end the process ----------------------------------------------------------------


class ExitsWhenCalled(_Track):
    name = "exits_called"

    def __call__(self, wave, frame_times):
        sys.exit(3)


class ExitsFrame(_Frame):
    name = "exits_frame"

    def __call__(self, crops):
        sys.exit(0)  # exit code 0 would even pass for success


class ExitsInInit(_Track):
    name = "exits_init"

    def __init__(self):
        sys.exit("cannot start")


def exits_factory():
    raise SystemExit(2)


# ---- absurd declarations (each would ask for tens of GB if believed) ------------------------------


class HugeRate(_Track):
    name = "huge_rate"
    sample_rate = 10**9


class HugeImage(_Frame):
    name = "huge_image"
    image_size = 100000


class HugeDim(_Track):
    name = "huge_dim"
    dim = 10**9


# ---- outputs that hold no values ------------------------------------------------------------------


class MetaOutput(_Track):
    name = "meta_output"

    def __call__(self, wave, frame_times):
        return torch.zeros(len(frame_times), self.dim, device="meta")


class SparseOutput(_Frame):
    name = "sparse_output"

    def __call__(self, crops):
        return torch.zeros(len(crops), self.dim).to_sparse()


# ---- provenance and to() ------------------------------------------------------------------------


class RaisingProvenance(_Track):
    name = "raising_provenance"

    def provenance(self):
        raise KeyError("weights")


class RaisingTo(_Track):
    name = "raising_to"

    def to(self, device):
        raise RuntimeError("no such device here")


class ChangingProvenance(_Track):
    """Its provenance holds a counter (as one holding a time or an id would): no two runs would agree."""

    name = "changing_provenance"
    _calls = itertools.count()

    def provenance(self):
        return {"model": self.name, "made": next(self._calls)}


# ---- an output too small for float16 ----------------------------------------------------------------


class Tiny(_Track):
    """Values like a random-weight efficientnet's embeddings (1e-10 .. 1e-15): float16 stores zeros."""

    name = "tiny"

    def __call__(self, wave, frame_times):
        return torch.full((len(frame_times), self.dim), 1e-12)


class ExitsOnRank(_Track):
    """Ends the process on the torchrun rank that ``EXIT_ON_RANK`` names (and works on the others)."""

    name = "exits_on_rank"

    def __call__(self, wave, frame_times):
        if os.environ.get("RANK") == os.environ.get("EXIT_ON_RANK"):
            sys.exit(1)
        return super().__call__(wave, frame_times)


class ExitingDetector:
    """A face detector plug-in that ends the process on its first batch."""

    kind = "detector"
    name = "exiting"

    def provenance(self) -> dict:
        return {"model": self.name}

    def to(self, device: torch.device):
        return self

    def __call__(self, images: torch.Tensor):
        sys.exit(2)
