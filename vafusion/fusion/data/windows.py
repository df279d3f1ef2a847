"""Windows over the loaded videos by index arithmetic, and window predictions back to frames.

Why index arithmetic: a window is ``[video, start, length]``, so cutting a cache of any size
into windows costs a few arrays of int64, never a copy of the features; frame ``start + j`` of
the window is the absolute row ``offsets[video] + start + j`` (:func:`frame_indices`), which is
how batches gather (:mod:`.batches`) and how :func:`overlap_average` puts the window
predictions back per frame, as the ABAW challenge scores them (one row per frame). Training
draws its windows per epoch from a grid shifted at random per video (:func:`random_windows`).

A temporal stride K (``--stride``) makes a window's frames ``start, start + K, ...``: the
model sees every K-th frame, so a window of W frames spans K x W frames of video. A video is
then K *phases* (frames ``p, p + K, ...``, ``p < K``); windows are cut on a phase's own
frames (:func:`phase_windows`) and their start is stored as the absolute frame of the video,
so ``start % K`` is the phase and every helper below takes the stride to step by it.
Predicting all K phases and averaging per absolute frame interleaves them: every frame gets a
prediction from windows at the temporal scale the model was trained on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from vafusion.fusion.data.loading import LoadedCache


def make_windows(
    lengths: Sequence[int] | np.ndarray | None = None,
    window: int = 300,
    hop: int = 200,
    *,
    offsets: Sequence[int] | np.ndarray | None = None,
    videos: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """``(n_windows, 3)`` int64 rows ``[video, start, length]`` covering every frame.

    Per video of T frames (give ``lengths``, or ``offsets`` of N + 1): starts 0, hop, 2 hop,
    ... and a last window right-aligned at T - window so the end is covered (not repeated if
    already aligned); all of length ``window``. A video with T <= window gets one window
    [0, T) (the batch pads it to W and masks the padding). T = 0 gives no window.
    ``videos`` restricts the windows to those video positions (e.g. the training ids).
    """
    if not 1 <= hop <= window:
        raise ValueError(f"make_windows: need 1 <= hop <= window (else frames go uncovered), got {window}, {hop}")
    if (lengths is None) == (offsets is None):
        raise ValueError("make_windows: give exactly one of lengths or offsets")
    t = np.diff(np.asarray(offsets, dtype=np.int64)) if lengths is None else np.asarray(lengths, dtype=np.int64)
    video = np.arange(t.size, dtype=np.int64)
    if videos is not None:
        video = np.asarray(videos, dtype=np.int64).reshape(-1)
        t = t[video]
    keep = t > 0
    video, t = video[keep], t[keep]
    extra = np.maximum(t - window, 0)
    count = 1 + -(-extra // hop)  # 1 + ceil((T - window) / hop)
    first = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(int(count.sum()), dtype=np.int64) - first
    last_start = np.repeat(extra, count)
    starts = np.minimum(k * hop, last_start)
    length = np.repeat(np.minimum(t, window), count)
    return np.stack([np.repeat(video, count), starts, length], axis=1)


def random_windows(
    offsets: Sequence[int] | np.ndarray,
    window: int,
    hop: int,
    videos: Sequence[int] | np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Training windows ``[video, start, length]`` on a grid shifted by a random offset per video.

    Why: a fixed grid shows the model the same window boundaries every epoch; shifting the
    grid by ``o`` (uniform in ``0..hop - 1``, drawn per video from ``rng``) shows every frame
    at other positions of its windows, epoch after epoch. Per video of T > ``window`` frames
    the starts are ``o - hop, o, o + hop, ...`` clipped to ``[0, T - window]`` (repeats
    dropped), so the first window starts at 0, the last ends at T and consecutive starts are at
    most ``hop <= window`` apart: every frame is in a window in every epoch. A video of
    T <= ``window`` frames gets its one window ``[0, T)``, as :func:`make_windows` gives it.
    """
    if not 1 <= hop <= window:
        raise ValueError(f"random_windows: need 1 <= hop <= window (else frames go uncovered), got {window}, {hop}")
    offsets = np.asarray(offsets, dtype=np.int64)
    video = np.asarray(videos, dtype=np.int64).reshape(-1)
    t = offsets[video + 1] - offsets[video]
    keep = t > 0
    video, t = video[keep], t[keep]
    extra = np.maximum(t - window, 0)
    shift = rng.integers(0, hop, size=video.size) - hop  # the grid's first start, before clipping
    count = np.where(extra > 0, 1 + -(-(extra - shift) // hop), 1)  # starts up to the first >= extra
    first = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(int(count.sum()), dtype=np.int64) - first
    starts = np.clip(np.repeat(shift, count) + k * hop, 0, np.repeat(extra, count))
    rows = np.stack([np.repeat(video, count), starts, np.repeat(np.minimum(t, window), count)], axis=1)
    repeat = np.zeros(len(rows), dtype=bool)
    repeat[1:] = (rows[1:, 0] == rows[:-1, 0]) & (rows[1:, 1] == rows[:-1, 1])
    return rows[~repeat]


def phase_lengths(lengths: np.ndarray, phase: np.ndarray, stride: int) -> np.ndarray:
    """Frames of phase ``phase`` (frames ``phase, phase + stride, ...``) of videos of ``lengths`` frames."""
    lengths = np.asarray(lengths, dtype=np.int64)
    return np.maximum(0, -(-(lengths - np.asarray(phase, dtype=np.int64)) // stride))


def phase_windows(
    offsets: Sequence[int] | np.ndarray,
    window: int,
    hop: int,
    videos: Sequence[int] | np.ndarray,
    stride: int,
    phases: Sequence[int] | np.ndarray | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Windows ``[video, start, length]`` of stride ``stride``: ``window`` and ``hop`` count phase frames.

    Per video of ``videos`` (positions in ``offsets``), the windows of phase ``phases[i]`` (None: of
    every phase 0..stride-1, video by video): :func:`make_windows` on that phase's frames, or
    :func:`random_windows` with ``rng``; a start ``s`` on the phase is stored as the video frame
    ``phase + s * stride``. With ``stride`` 1 and no ``phases`` these are exactly the windows of
    :func:`make_windows` (or :func:`random_windows`).
    """
    offsets = np.asarray(offsets, dtype=np.int64)
    video = np.asarray(videos, dtype=np.int64).reshape(-1)
    if phases is None:
        video, phase = np.repeat(video, stride), np.tile(np.arange(stride, dtype=np.int64), video.size)
    else:
        phase = np.asarray(phases, dtype=np.int64).reshape(-1)
    lengths = phase_lengths(offsets[video + 1] - offsets[video], phase, stride)
    places = np.arange(video.size)  # each (video, phase) as a video of its own
    if rng is None:
        rows = make_windows(lengths, window, hop, videos=places)
    else:
        layout = np.concatenate([[0], np.cumsum(lengths)])
        rows = random_windows(layout, window, hop, places, rng)
    place = rows[:, 0]
    return np.stack([video[place], phase[place] + rows[:, 1] * stride, rows[:, 2]], axis=1)


def windows_with_labels(loaded: LoadedCache, windows: np.ndarray, stride: int = 1) -> np.ndarray:
    """The windows holding at least one frame with a finite label (the others train nothing)."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    labelled = np.isfinite(loaded.labels).any(axis=1)
    if stride > 1:
        idx, valid = frame_indices(loaded.offsets, windows, int(windows[:, 2].max(initial=1)), stride)
        return windows[(labelled[idx] & valid).any(axis=1)]
    cum = np.zeros(labelled.size + 1, dtype=np.int64)
    np.cumsum(labelled, out=cum[1:])
    a = loaded.offsets[windows[:, 0]] + windows[:, 1]
    return windows[cum[a + windows[:, 2]] > cum[a]]


def frame_indices(
    offsets: np.ndarray, windows: np.ndarray, width: int, stride: int = 1
) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, valid)`` both (B, W): absolute rows of each window frame, and inside-video flags.

    Frame ``j`` of a window is ``start + j * stride`` of its video.
    Padding positions point at the window's last real frame (any row of the same video would
    do: they are masked), so a gather never leaves the video or the block.
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    step = np.arange(width, dtype=np.int64)
    length = windows[:, 2:3]
    valid = step < length
    base = offsets[windows[:, 0]] + windows[:, 1]
    idx = base[:, None] + np.minimum(step, np.maximum(length - 1, 0)) * stride
    return idx, valid


def overlap_average(
    predictions: Any, windows: np.ndarray, lengths: Sequence[int] | np.ndarray, stride: int = 1
) -> list[np.ndarray]:
    """Per video, each frame's prediction = mean over the windows covering it (of ``stride``: the
    windows of its phase).

    ``predictions`` (n_windows, W, C) (C = 2: valence, arousal) in the order of ``windows``
    rows; positions past a window's length (padding) are ignored. Returns one (T_i, C)
    float32 array per video of ``lengths``; a frame no window covers is NaN. One
    ``np.bincount`` per channel over absolute frame indices: no loop over windows.
    """
    if isinstance(predictions, Tensor):
        predictions = predictions.detach().to("cpu", torch.float32).numpy()
    predictions = np.asarray(predictions)
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    if predictions.ndim != 3 or predictions.shape[0] != windows.shape[0]:
        raise ValueError(f"overlap_average: predictions {predictions.shape} do not match {windows.shape[0]} windows")
    if windows.shape[0] and int(windows[:, 2].max()) > predictions.shape[1]:
        raise ValueError(
            f"overlap_average: predictions are {predictions.shape[1]} frames wide, "
            f"a window has {int(windows[:, 2].max())}"
        )
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    idx, valid = frame_indices(offsets, windows, predictions.shape[1], stride)
    frames = idx[valid]
    counts = np.bincount(frames, minlength=total).astype(np.float64)
    channels = predictions.shape[2]
    out = np.empty((total, channels), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in range(channels):
            sums = np.bincount(frames, weights=predictions[..., c][valid].astype(np.float64), minlength=total)
            out[:, c] = sums / counts  # 0/0 = NaN for uncovered frames
    return [out[offsets[i] : offsets[i + 1]] for i in range(lengths.size)]


__all__ = [
    "frame_indices",
    "make_windows",
    "overlap_average",
    "phase_lengths",
    "phase_windows",
    "random_windows",
    "windows_with_labels",
]
