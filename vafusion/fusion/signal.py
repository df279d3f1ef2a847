"""Centred filters over time of per-frame values: moving mean (presence-aware), moving median, delay.

Why one module: the ridge baseline averages its features over a centred window and
post-processing smooths predictions over one, and both must mean the same window (a leaf any
room may import: it imports no room). A window of ``n`` frames takes ``(n - 1) // 2`` frames
before and ``n - 1 - (n - 1) // 2`` after, and shrinks at a video's ends (no value is invented
there).
"""

from __future__ import annotations

import numpy as np

_COLUMN_BLOCK = 256  # columns per cumulative-sum block: bounds the float64 temporary to T x 256
_EDGE_BLOCK = 256  # end frames sorted at a time by moving_median: bounds its temporary to 256 x d x n


def centred_window(n: int) -> tuple[int, int]:
    """(frames before, frames after) of a centred window of ``n`` frames."""
    before = (n - 1) // 2
    return before, n - 1 - before


def context_average(
    features: np.ndarray, present: np.ndarray, context: int, rows: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Presence-aware centred moving average of one stream of one video.

    Returns ``(mean, fraction)``: ``mean[r]`` (float32, width d) is the average of
    ``features`` over the present frames of the window around frame ``rows[r]`` (0 where the
    window has none), ``fraction[r]`` the share of the window's frames that are present.
    ``rows`` (sorted or not, default all frames) selects the frames to evaluate, so a
    subsampled fit never materialises the full video.
    """
    features = np.asarray(features)
    present = np.asarray(present, dtype=bool)
    T, d = features.shape
    rows = np.arange(T) if rows is None else np.asarray(rows, dtype=np.int64)
    if context <= 1:
        mean = features[rows].astype(np.float32, copy=False)
        p = present[rows]
        mean[~p] = 0.0
        return mean, p.astype(np.float32)
    before, after = centred_window(context)
    lo = np.clip(rows - before, 0, T)  # window = frames [lo, hi)
    hi = np.clip(rows + after + 1, 0, T)
    count_cs = np.concatenate([[0], np.cumsum(present, dtype=np.int64)])
    n_present = count_cs[hi] - count_cs[lo]
    fraction = (n_present / (hi - lo)).astype(np.float32)
    denom = np.maximum(n_present, 1).astype(np.float64)[:, None]
    mean = np.empty((len(rows), d), dtype=np.float32)
    for c0 in range(0, d, _COLUMN_BLOCK):
        block = features[:, c0 : c0 + _COLUMN_BLOCK].astype(np.float64)
        block[~present] = 0.0
        cs = np.zeros((T + 1, block.shape[1]), dtype=np.float64)
        np.cumsum(block, axis=0, out=cs[1:])
        mean[:, c0 : c0 + _COLUMN_BLOCK] = (cs[hi] - cs[lo]) / denom
    return mean, fraction


def moving_mean(x: np.ndarray, n: int) -> np.ndarray:
    """Centred mean over ``n`` frames along axis 0 of ``(T, d)`` values, every frame present."""
    return context_average(x, np.ones(len(x), dtype=bool), n)[0]


def moving_median(x: np.ndarray, n: int) -> np.ndarray:
    """Centred median over ``n`` (odd) frames along axis 0 of ``(T, d)`` values (window shrinking at the ends).

    scipy's running median inside (O(log n) per frame); the ``(n - 1) / 2`` frames at each end,
    whose windows shrink, from their sorted NaN-padded windows, a block of frames at a time. A
    window wider than ``2T - 1`` frames is taken as ``2T - 1`` (every frame's window is then the
    whole video either way), so memory and time grow with the video, never with the window.
    """
    from scipy.ndimage import median_filter

    t = len(x)
    n = min(n, 2 * t - 1) if t else n  # a wider window covers the whole video from every frame: the same medians
    half = (n - 1) // 2
    x = x.astype(np.float32, copy=False)
    out = np.stack([median_filter(column, size=n, mode="nearest") for column in x.T], axis=1)  # 1-D: the fast path
    pad = np.full((half, x.shape[1]), np.nan, dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, x, pad]), n, axis=0)  # (T, d, n) view
    ends = np.unique(np.concatenate([np.arange(min(half, t)), np.arange(max(t - half, 0), t)]))
    for rows in np.array_split(ends, max(1, -(-len(ends) // _EDGE_BLOCK))):  # memory: a block of windows at a time
        edge = np.sort(windows[rows], axis=-1)  # the padding NaNs sort last
        valid = (n - np.isnan(edge).sum(axis=-1))[..., None]
        low, high = np.take_along_axis(edge, (valid - 1) // 2, -1), np.take_along_axis(edge, valid // 2, -1)
        out[rows] = (low + high)[..., 0] / 2
    return out


def delay(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k`` frames along axis 0 (``y[t] = x[t - k]``), edges repeated; ``k < 0`` advances."""
    x = np.asarray(x)
    if k == 0 or len(x) == 0:
        return x
    return x[np.clip(np.arange(len(x)) - k, 0, len(x) - 1)]


__all__ = ["centred_window", "context_average", "delay", "moving_mean", "moving_median"]
