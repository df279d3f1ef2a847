"""Per-feature standardisation with statistics of the training ids only, stored with the model.

Why here and why so: validation must not leak into the model, so statistics come from the
training ids' present frames; they are accumulated in float64 over bounded chunks (never a
float32 copy of the cache), the same chunks in RAM or streamed, so the statistics are the same
bit for bit either way; they are applied per batch (:func:`~vafusion.fusion.data.batches.build_batch`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vafusion.cache import schema
from vafusion.errors import VafusionError
from vafusion.fusion.data.loading import LoadedCache
from vafusion.fusion.data.sources import FeatureSource, as_tensor

_STATS_CHUNK = 1 << 21  # float32 values per step of the statistics pass (8 MiB buffer)


def _merged_ranges(offsets: np.ndarray, positions: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of the given videos, adjacent ones merged (fewer, longer chunks)."""
    ranges: list[tuple[int, int]] = []
    for i in sorted(int(p) for p in positions):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if a == b:
            continue
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return ranges


def _masked_moments(
    source: FeatureSource, mask: np.ndarray, ranges: list[tuple[int, int]]
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, mean, M2)`` (float64) of the rows of ``source`` in ``ranges`` where ``mask``.

    Chunks (~8 MB) are converted into one reused float32 buffer, centred on their own mean
    (so no catastrophic cancellation) and merged with Chan's parallel update in float64. The
    chunks are the same whether the rows are in RAM or streamed (same statistics, bit for
    bit), and only one chunk is ever held: memory stays bounded for a cache of any size.
    """
    dim = source.dim
    rows = max(1, _STATS_CHUNK // dim)
    buffer = torch.empty((rows, dim), dtype=torch.float32)
    n_total = 0
    mean = np.zeros(dim, dtype=np.float64)
    m2 = np.zeros(dim, dtype=np.float64)
    for a, b in ranges:
        for c in range(a, b, rows):
            d = min(c + rows, b)
            sel = mask[c:d]
            n = int(sel.sum())
            if n == 0:
                continue
            chunk = source.rows(c, d)
            part = chunk if n == d - c else chunk[sel]
            x = buffer[:n]
            x.copy_(as_tensor(part))
            # float32 cascade sums of float16 values are exact to ~1e-7 relative; centring on
            # the chunk mean first keeps the sum of squares free of cancellation
            centre = x.sum(dim=0) / n
            chunk_m2 = x.sub_(centre).square_().sum(dim=0).double().numpy()
            chunk_mean = centre.double().numpy()
            delta = chunk_mean - mean
            n_new = n_total + n
            mean += delta * (n / n_new)
            m2 += chunk_m2 + delta**2 * (n_total * n / n_new)
            n_total = n_new
    return n_total, mean, m2


class Standardizer:
    """Per-feature mean/std of the training frames; applied per batch, stored with the model.

    Statistics come from the training ids only (validation must not leak into the model)
    and from frames whose mask is True (absent faces/audio are not data). A dimension with
    std < ``min_std`` (e.g. a dead ReLU unit) gets std 1 instead of a huge scale; a feature
    with no present training frame gets mean 0, std 1. A feature whose provenance asks for a
    shared scale (``schema.STANDARDIZE_KEY``; ``cache derive --pca`` does) gets one std for all
    its dims, the root mean of their variances.
    """

    def __init__(self, features: Sequence[str], mean: Sequence[np.ndarray], std: Sequence[np.ndarray]) -> None:
        self.features = tuple(features)
        self.mean = [np.asarray(m, dtype=np.float32).reshape(-1) for m in mean]
        self.std = [np.asarray(s, dtype=np.float32).reshape(-1) for s in std]
        if not (len(self.features) == len(self.mean) == len(self.std)):
            raise ValueError("Standardizer: one mean and one std per feature")
        for name, m, s in zip(self.features, self.mean, self.std):
            if m.shape != s.shape:
                raise ValueError(f"Standardizer: {name} mean {m.shape} != std {s.shape}")
            if not (np.isfinite(m).all() and np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(f"Standardizer: {name} statistics must be finite with std > 0")
        # per batch: x * inv_std + shift == (x - mean) / std, one fused pass
        self._inv_std = [torch.from_numpy((1.0 / s).astype(np.float32)) for s in self.std]
        self._shift = [-(torch.from_numpy(m) * inv) for m, inv in zip(self.mean, self._inv_std)]

    @classmethod
    def fit(cls, loaded: LoadedCache, ids: Sequence[str], min_std: float = 1e-6) -> Standardizer:
        """Statistics over the present frames of ``ids`` (the training ids) of ``loaded``."""
        ranges = _merged_ranges(loaded.offsets, loaded.positions(ids))
        means, stds = [], []
        for name, source, mask in zip(loaded.features, loaded.sources, loaded.masks):
            n, mean, m2 = _masked_moments(source, mask, ranges)
            if n == 0:
                means.append(np.zeros(source.dim, np.float32))
                stds.append(np.ones(source.dim, np.float32))
                continue
            std = np.sqrt(np.maximum(m2 / n, 0.0))
            if loaded.extractors.get(name, {}).get(schema.STANDARDIZE_KEY) == schema.STANDARDIZE_SHARED:
                # principal components: one scale for all dims keeps their relative variances, where
                # unit variance per dim would blow the near-empty trailing components up to the signal's size
                std[:] = np.sqrt(np.mean(std.astype(np.float64) ** 2))
            std[std < min_std] = 1.0
            means.append(mean.astype(np.float32))
            stds.append(std.astype(np.float32))
        return cls(loaded.features, means, stds)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"<feature>.mean": (dim,), "<feature>.std": (dim,)}`` float32, in feature order.

        (For a ``torch.load(weights_only=True)`` checkpoint store them as tensors:
        ``torch.from_numpy``; :meth:`from_state_dict` accepts either.)
        """
        state: dict[str, np.ndarray] = {}
        for name, m, s in zip(self.features, self.mean, self.std):
            state[f"{name}.mean"] = m.copy()
            state[f"{name}.std"] = s.copy()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Standardizer:
        names: list[str] = []
        for key in state:
            name, _, kind = key.rpartition(".")
            if kind not in ("mean", "std") or not name:
                raise ValueError(f"Standardizer state: unexpected key {key!r}")
            if name not in names:
                names.append(name)

        def arr(key: str) -> np.ndarray:
            if key not in state:
                raise ValueError(f"Standardizer state: missing {key!r}")
            value = state[key]
            if isinstance(value, Tensor):
                value = value.detach().cpu().numpy()
            return np.asarray(value, dtype=np.float32)

        return cls(names, [arr(f"{n}.mean") for n in names], [arr(f"{n}.std") for n in names])

    def check(self, loaded: LoadedCache) -> None:
        """The loaded cache has the same feature sets, in the same order and dims."""
        dims = tuple(m.size for m in self.mean)
        if self.features != loaded.features or dims != loaded.dims:
            raise VafusionError(
                f"{loaded.cache_dir}: features {list(loaded.features)} (dims {list(loaded.dims)}) do not match "
                f"the model's {list(self.features)} (dims {list(dims)}); load the cache with the model's features"
            )


# ---------------------------------------------------------------------------------------


__all__ = ["Standardizer"]
