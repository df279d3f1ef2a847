"""Post-processing of per-frame predictions: a centred smoothing and a time shift, per dimension.

Why: a model's frame-level predictions jitter where the labels are smooth (annotators move a
joystick), and the labels lag the stimulus (an annotator reacts a fraction of a second late).
ABAW entries therefore smooth their predictions and delay them; the best window and delay
differ between valence and arousal, so each dimension has its own :class:`DimPost`.

Choices are stated in seconds and turned into frames with each video's own frame rate
(Aff-Wild2 mixes 25, 30 and 60 fps), so one choice means the same thing on every video:

- smoothing: ``method`` (``mean`` or ``median``) over a centred window of ``window_s``
  seconds, i.e. ``n = 2 * floor(window_s * fps / 2) + 1`` frames (the odd count nearest
  ``window_s * fps``, so it is centred exactly); the window shrinks at the ends of a video (no padding value is
  invented);
- shift: ``shift_s > 0`` delays the predictions: frame t takes the (smoothed) prediction of
  frame ``t - round(shift_s * fps)``, the first frames repeat the first prediction (edge
  padding). A label lag of d seconds calls for ``shift_s = d``; ``shift_s < 0`` advances.

Smoothing is applied first, then the shift. ``post.json`` (written by ``vafusion cv``,
chosen out of fold by :mod:`vafusion.fusion.post.fit`) holds one choice per dimension;
:func:`read_post` reads it back for ``vafusion predict``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import make_dir
from vafusion.fusion.models.ridge import context_average

POST_FORMAT = "vafusion-post"
POST_VERSION = 1
DIMENSIONS = ("valence", "arousal")


def _mean(x: np.ndarray, n: int) -> np.ndarray:
    """Centred mean over ``n`` frames along axis 0 (window shrinking at the ends)."""
    # One implementation of the centred moving average: the ridge's, every frame present.
    return context_average(x, np.ones(len(x), dtype=bool), n)[0]


def _median(x: np.ndarray, n: int) -> np.ndarray:
    """Centred median over ``n`` (odd) frames along axis 0 (window shrinking at the ends).

    scipy's running median inside (O(log n) per frame); the ``(n - 1) / 2`` frames at each end,
    whose windows shrink, from their sorted NaN-padded windows.
    """
    from scipy.ndimage import median_filter

    half, t = (n - 1) // 2, len(x)
    x = x.astype(np.float32, copy=False)
    out = np.stack([median_filter(column, size=n, mode="nearest") for column in x.T], axis=1)  # 1-D: the fast path
    pad = np.full((half, x.shape[1]), np.nan, dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(np.concatenate([pad, x, pad]), n, axis=0)  # (T, d, n) view
    ends = np.unique(np.concatenate([np.arange(min(half, t)), np.arange(max(t - half, 0), t)]))
    edge = np.sort(windows[ends], axis=-1)  # the padding NaNs sort last
    valid = (n - np.isnan(edge).sum(axis=-1))[..., None]
    out[ends] = (np.take_along_axis(edge, (valid - 1) // 2, -1) + np.take_along_axis(edge, valid // 2, -1))[..., 0] / 2
    return out


SMOOTHERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"mean": _mean, "median": _median}


def smooth(x: np.ndarray, n: int, method: str = "mean") -> np.ndarray:
    """Centred ``method`` (mean or median) over ``n`` frames along axis 0; ``n <= 1`` returns ``x``.

    ``x`` is ``(T,)`` or ``(T, d)``; the window shrinks at the ends. With an even ``n`` the
    mean takes ``(n - 1) // 2`` frames before and ``n // 2`` after (``predict --smooth N``).
    """
    if method not in SMOOTHERS:
        raise VafusionError(f"smoothing {method!r}: unknown; use one of {', '.join(SMOOTHERS)}")
    x = np.asarray(x)
    if n <= 1 or len(x) == 0:
        return x
    if method == "median" and n % 2 == 0:
        raise ValueError(f"median over {n} frames: the window must be odd to be centred")
    flat = x.reshape(len(x), -1)
    return SMOOTHERS[method](flat, n).astype(x.dtype, copy=False).reshape(x.shape)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k`` frames along axis 0 (``y[t] = x[t - k]``), edges repeated; ``k < 0`` advances."""
    x = np.asarray(x)
    if k == 0 or len(x) == 0:
        return x
    return x[np.clip(np.arange(len(x)) - k, 0, len(x) - 1)]


@dataclass(frozen=True)
class DimPost:
    """One dimension's post-processing: ``method`` over ``window_s`` seconds, then a ``shift_s`` delay."""

    method: str = "mean"
    window_s: float = 0.0
    shift_s: float = 0.0

    def __post_init__(self) -> None:
        if self.method not in SMOOTHERS:
            raise VafusionError(f"post-processing method {self.method!r}: use one of {', '.join(SMOOTHERS)}")
        if not (np.isfinite(self.window_s) and np.isfinite(self.shift_s)) or self.window_s < 0:
            raise VafusionError(
                f"post-processing window {self.window_s} s / shift {self.shift_s} s: need a "
                f"finite window >= 0 and a finite shift"
            )

    def frames(self, fps: float) -> tuple[int, int]:
        """(window in frames, odd; shift in frames) at ``fps``."""
        return 2 * int(np.floor(self.window_s * fps / 2 + 1e-9)) + 1, int(round(self.shift_s * fps))

    @property
    def identity(self) -> bool:
        return self.window_s == 0 and self.shift_s == 0

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        n, k = self.frames(fps)
        return shift(smooth(x, n, self.method), k)

    def describe(self) -> str:
        smoothing = f"{self.method} over {self.window_s:g} s" if self.window_s > 0 else "no smoothing"
        return f"{smoothing}, shift {self.shift_s:+.3f} s"


@dataclass(frozen=True)
class Post:
    """Post-processing of both dimensions (column 0 valence, column 1 arousal)."""

    valence: DimPost = DimPost()
    arousal: DimPost = DimPost()

    def apply(self, pred: np.ndarray, fps: float) -> np.ndarray:
        """``(T, 2)`` predictions post-processed, each column by its own choice, clipped to [-1, 1]."""
        out = np.stack([self.valence.apply(pred[:, 0], fps), self.arousal.apply(pred[:, 1], fps)], axis=1)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    def describe(self) -> str:
        return f"valence: {self.valence.describe()}; arousal: {self.arousal.describe()}"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"valence": asdict(self.valence), "arousal": asdict(self.arousal)}


def write_post(path: Path, post: Post, details: Mapping[str, Any]) -> Path:
    """``post.json``: the format marker, the choice per dimension, and ``details`` (how it was chosen)."""
    content = {"format": POST_FORMAT, "format_version": POST_VERSION, **post.to_dict(), **details}
    make_dir(path.parent, "folder of post.json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_post(path: str | Path) -> Post:
    """The choice recorded in a ``post.json``; a one-line error for anything else."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise VafusionError(f"--post {path}: no such file; give a post.json written by `vafusion cv`") from e
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise VafusionError(f"{path}: not JSON; give a post.json written by `vafusion cv`") from e
    if not isinstance(content, dict) or content.get("format") != POST_FORMAT:
        raise VafusionError(f"{path}: not a vafusion post-processing file (format {POST_FORMAT!r} expected)")
    if content.get("format_version") != POST_VERSION:
        raise VafusionError(
            f"{path}: format_version {content.get('format_version')}, this vafusion reads "
            f"{POST_VERSION}; run `vafusion cv` again to rewrite it"
        )
    try:
        dims = {
            d: DimPost(str(content[d]["method"]), float(content[d]["window_s"]), float(content[d]["shift_s"]))
            for d in DIMENSIONS
        }
    except (KeyError, TypeError, ValueError) as e:
        raise VafusionError(f"{path}: needs valence and arousal entries with method, window_s and shift_s") from e
    return Post(**dims)


__all__ = ["DIMENSIONS", "SMOOTHERS", "DimPost", "Post", "read_post", "shift", "smooth", "write_post"]
