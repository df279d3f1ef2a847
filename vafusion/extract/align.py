"""The one aligner: a feature's own time steps -> one row per video frame.

Every track feature (log-mel, VGGish patches, speech models, imported features) has
values at its own instants ("steps", e.g. a log-mel frame every 10 ms centred at
0.0125 + 0.010 j s). The cache wants row k of a video at the instant t = (k - 1) / fps
(for a variable-frame-rate video: frame k's timestamp, see ``VideoEntry.instants``).
This module is the only place that maps one onto the other, so every feature lands on
the same grid by the same rules:

* :func:`span_mean`: row k = mean of the steps whose centres lie in frame k's span
  [t - 0.5/fps, t + 0.5/fps); a span holding no centre (steps sparser than frames)
  takes the nearest step. Spans are cut from one boundary array, so every step belongs
  to exactly one frame.
* :func:`nearest_step`: the step nearest each instant (selection, e.g. VGGish's patch
  centre).

Edge padding: beyond either end of the track the steps continue at the track's hop with
the first (last) value repeated, so a span reaching past an end averages repeated edge
rows, exactly as a padded signal would. Exact ties (an instant half-way between two
centres, a centre exactly on a span boundary, which happen at e.g. 40 or 240 fps) are
decided by the rule, not by rounding noise: ties go to the later step, and a centre on
a boundary belongs to the span that starts there (a nudge of 1e-9 hop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from vafusion.cache.corpus_index import grid_instants

GRID_TIMING = "frame k <-> instant (k - 1) / fps"
"""How every feature file's rows map to time (recorded in built-in provenance)."""

SPAN_MEAN = "mean over [t - 0.5/fps, t + 0.5/fps)"
"""Provenance wording of :func:`span_mean`."""

_TIE_EPS = 1e-9  # in units of the step hop: far below any real distance, far above float64 noise


def frame_instants(fps: float, n_frames: int) -> np.ndarray:
    """Instants t = (k - 1) / fps of video frames k = 1..n_frames, float64 seconds (a constant-rate
    video; an id's own instants, its timestamps where the rate varies, are ``VideoEntry.instants()``)."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    return grid_instants(fps, n_frames)


def covered(frame_times: np.ndarray, duration_s: float) -> np.ndarray:
    """``(T,)`` bool: True where the instant lies within a track of ``duration_s`` seconds.

    Rows after the end of the audio get edge-padded values that must be masked, not trusted.
    """
    return np.asarray(frame_times, dtype=np.float64) < float(duration_s)


@dataclass(frozen=True)
class Steps:
    """The centre instants (s) of a feature's steps, increasing, and the hop that extends them.

    ``times`` may be irregular (imported timestamps); ``hop`` is the spacing of the virtual
    steps that continue the grid past both ends (edge padding).
    """

    times: np.ndarray
    hop: float

    @classmethod
    def regular(cls, first_centre_s: float, hop_s: float, n: int) -> Steps:
        """``n`` steps centred at ``first_centre_s + j * hop_s``."""
        return cls(first_centre_s + hop_s * np.arange(n, dtype=np.float64), float(hop_s))

    @classmethod
    def at(cls, times: np.ndarray) -> Steps:
        """Steps at explicit instants; the hop past the ends is their median spacing."""
        t = np.asarray(times, dtype=np.float64)
        if t.ndim != 1 or not len(t):
            raise ValueError("steps need at least one instant")
        if len(t) > 1 and not (np.diff(t) > 0).all():
            raise ValueError("step instants must increase strictly")
        hop = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
        return cls(t, hop)

    def __len__(self) -> int:
        return len(self.times)

    @property
    def _eps(self) -> float:
        return _TIE_EPS * self.hop

    def first_at_or_after(self, x: np.ndarray) -> np.ndarray:
        """Index of the first (possibly virtual) step whose centre is >= each ``x`` (int64).

        A centre within 1e-9 hop of ``x`` counts as >= ``x``. Indices < 0 or >= len are
        virtual steps of the padded grid.
        """
        x = np.asarray(x, dtype=np.float64)
        t, n = self.times, len(self.times)
        j = np.searchsorted(t, x - self._eps, side="left").astype(np.int64)
        before = x < t[0] - self._eps
        j[before] = np.ceil((x[before] - t[0]) / self.hop - _TIE_EPS).astype(np.int64)
        after = x > t[-1] + self._eps
        j[after] = n - 1 + np.ceil((x[after] - t[-1]) / self.hop - _TIE_EPS).astype(np.int64)
        return j

    def nearest(self, x: np.ndarray) -> np.ndarray:
        """Index of the (possibly virtual) step nearest each ``x``; exact ties go to the later step."""
        x = np.asarray(x, dtype=np.float64)
        t, n = self.times, len(self.times)
        i = np.clip(np.searchsorted(t, x, side="left"), 1, max(n - 1, 1))
        later = i.astype(np.int64)
        earlier = later - 1
        if n == 1:
            j = np.zeros(len(x), np.int64)
        else:
            j = np.where(t[later] - x <= x - t[earlier] + self._eps, later, earlier)
        outside = (x < t[0]) | (x > t[-1])
        ref = np.where(x[outside] < t[0], t[0], t[-1])
        base = np.where(x[outside] < t[0], 0, n - 1)
        j[outside] = base + np.floor((x[outside] - ref) / self.hop + 0.5 + _TIE_EPS).astype(np.int64)
        return j


def _padded_prefix(csum: Tensor, first: Tensor, last: Tensor, x: np.ndarray) -> Tensor:
    """Sum of the edge-padded rows with index < ``x`` (relative to row 0: a negative ``x``
    gives minus the virtual rows before it), so differences of two are span sums."""
    n = csum.shape[0] - 1
    xt = torch.from_numpy(x)
    inside = csum[xt.clamp(0, n)]
    before = xt.clamp(max=0).to(torch.float64)[:, None] * first
    after = (xt - n).clamp(min=0).to(torch.float64)[:, None] * last
    return inside + before + after


def frame_bounds(frame_times: np.ndarray) -> np.ndarray:
    """``(T + 1,)`` span boundaries of the frames: midpoints between consecutive instants,
    the outer two mirrored (so span k = [t - 0.5/fps, t + 0.5/fps) on a regular grid)."""
    t = np.asarray(frame_times, dtype=np.float64)
    if len(t) < 2:
        return np.concatenate([t, t])
    mid = 0.5 * (t[:-1] + t[1:])
    return np.concatenate([[t[0] - (mid[0] - t[0])], mid, [t[-1] + (t[-1] - mid[-1])]])


def span_mean(values: Tensor, steps: Steps, frame_times: np.ndarray) -> Tensor:
    """``(S, d)`` step values -> ``(T, d)`` float32: the mean over each frame's span.

    Frame k's span is [t - 0.5/fps, t + 0.5/fps) (:func:`frame_bounds`); consecutive spans
    share their boundary, so every step belongs to exactly one frame. A span without a
    centre takes the nearest step (as does a video of a single frame, whose span is
    unknown); spans past the ends average edge-padded rows. Sums use a float64 cumsum.
    """
    v = torch.as_tensor(values).detach().to("cpu", torch.float64)
    if v.dim() != 2 or v.shape[0] != len(steps):
        raise ValueError(f"expected ({len(steps)}, d) step values, got {tuple(v.shape)}")
    t = np.asarray(frame_times, dtype=np.float64)
    j = steps.first_at_or_after(frame_bounds(t))
    lo, hi = j[:-1], j[1:]
    csum = torch.zeros(v.shape[0] + 1, v.shape[1], dtype=torch.float64)
    torch.cumsum(v, dim=0, out=csum[1:])
    count = hi - lo
    sums = _padded_prefix(csum, v[0], v[-1], hi) - _padded_prefix(csum, v[0], v[-1], lo)
    pooled = sums / torch.from_numpy(np.maximum(count, 1)).to(torch.float64)[:, None]
    empty = count <= 0
    if empty.any():
        nearest = np.clip(steps.nearest(t[empty]), 0, len(steps) - 1)
        pooled[torch.from_numpy(empty)] = v[torch.from_numpy(nearest)]
    return pooled.float()


def nearest_step(steps: Steps, frame_times: np.ndarray) -> np.ndarray:
    """``(T,)`` int64: the (virtual, unclipped) step nearest each instant; ties to the later step."""
    return steps.nearest(np.asarray(frame_times, dtype=np.float64))
