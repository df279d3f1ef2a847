"""Post-processing of per-frame predictions: per dimension, a sequence of steps; ``post.json``, written and read.

Each dimension (valence, arousal) has its own :class:`DimPost`, the steps applied in order
(:mod:`.steps`: by default a centred smoothing, then a time shift), because the best
smoothing and delay differ between them. ``post.json`` (written by ``vafusion cv``, chosen out
of fold by :mod:`.fit`) holds one sequence per dimension; :func:`read_post` reads it back for
``vafusion predict``.

``post.json`` format_version 2 names each step and its parameters
(``{"valence": {"steps": [{"step": "smooth", "method": "mean", "window_s": 0.5},
{"step": "shift", "shift_s": 0.1}]}, ...}``; a step of your own is named ``package.module:Class``).
Files of format_version 1 (``{"valence": {"method", "window_s", "shift_s"}}``: a smoothing, then a
shift) are read as the same two steps.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, read_text
from vafusion.fusion.post.registry import make_step, step_name
from vafusion.fusion.post.steps import Shift, Smooth, Step

POST_FORMAT = "vafusion-post"
POST_VERSION = 2
_READS = (1, 2)  # format versions read_post reads (1: smooth then shift, flat)
DIMENSIONS = ("valence", "arousal")


@dataclass(frozen=True)
class DimPost:
    """One dimension's post-processing: ``steps`` applied in order (none: the predictions as they are)."""

    steps: tuple[Step, ...] = ()

    @classmethod
    def smooth_then_shift(cls, method: str = "mean", window_s: float = 0.0, shift_s: float = 0.0) -> DimPost:
        """A smoothing then a shift: what format_version 1 recorded (and ``cv``'s default steps)."""
        return cls((Smooth(method, window_s), Shift(shift_s)))

    @property
    def identity(self) -> bool:
        return all(s.identity for s in self.steps)

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        for s in self.steps:
            x = s.apply(x, fps)
        return x

    def describe(self) -> str:
        return ", ".join(s.describe() for s in self.steps) or "none"

    def to_dict(self) -> dict[str, Any]:
        return {"steps": [{"step": step_name(s), **s.params()} for s in self.steps]}

    @classmethod
    def from_dict(cls, content: Mapping[str, Any], where: str = "post.json") -> DimPost:
        """From :meth:`to_dict`'s form, or format_version 1's ``{method, window_s, shift_s}``."""
        if "steps" not in content:
            numbers = {k: _number(content[k], k) for k in ("window_s", "shift_s")}
            return cls.smooth_then_shift(str(content["method"]), numbers["window_s"], numbers["shift_s"])
        steps = []
        for entry in content["steps"]:
            params = {k: v for k, v in entry.items() if k != "step"}
            steps.append(make_step(str(entry["step"]), params, where))
        return cls(tuple(steps))


def _number(value: Any, name: str) -> float:
    """A post.json number as a float; ``true`` or ``"0.5"`` is no number (float() would take them)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VafusionError(f"{name} {json.dumps(value)}: not a number; write seconds, e.g. 0.5")
    return float(value)


@dataclass(frozen=True)
class Post:
    """Post-processing of both dimensions (column 0 valence, column 1 arousal)."""

    valence: DimPost = DimPost()
    arousal: DimPost = DimPost()

    def apply(self, pred: np.ndarray, fps: float) -> np.ndarray:
        """``(T, 2)`` predictions post-processed, each column by its own steps, clipped to [-1, 1]."""
        out = np.stack([self.valence.apply(pred[:, 0], fps), self.arousal.apply(pred[:, 1], fps)], axis=1)
        return np.clip(out, -1.0, 1.0).astype(np.float32, copy=False)

    def describe(self) -> str:
        return f"valence: {self.valence.describe()}; arousal: {self.arousal.describe()}"

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {"valence": self.valence.to_dict(), "arousal": self.arousal.to_dict()}


def write_post(path: Path, post: Post, details: Mapping[str, Any]) -> Path:
    """``post.json``: the format marker, the steps per dimension, and ``details`` (how they were chosen)."""
    content = {"format": POST_FORMAT, "format_version": POST_VERSION, **post.to_dict(), **details}
    make_dir(path.parent, "folder of post.json")
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(content, indent=2) + "\n")
    return path


def read_post(path: str | Path) -> Post:
    """The choice recorded in a ``post.json`` (format_version 1 or 2); a one-line error for anything else."""
    path = Path(path)
    text = read_text(path, "post.json written by `vafusion cv` (--post FILE)")
    try:
        content = json.loads(text)
    except json.JSONDecodeError as e:
        raise VafusionError(f"{path}: not JSON; give a post.json written by `vafusion cv`") from e
    if not isinstance(content, dict) or content.get("format") != POST_FORMAT:
        raise VafusionError(f"{path}: not a vafusion post-processing file (format {POST_FORMAT!r} expected)")
    if content.get("format_version") not in _READS:
        raise VafusionError(
            f"{path}: format_version {content.get('format_version')}, this vafusion reads "
            f"{' and '.join(map(str, _READS))}; run `vafusion cv` again to rewrite it"
        )
    try:
        dims = {d: DimPost.from_dict(content[d], str(path)) for d in DIMENSIONS}
    except VafusionError as e:  # a value out of its range, or not a number: name the file
        raise VafusionError(e if str(e).startswith(str(path)) else f"{path}: {e}") from e
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise VafusionError(
            f"{path}: needs valence and arousal entries, each a list of steps (format_version 2) "
            f"or method, window_s and shift_s (format_version 1)"
        ) from e
    return Post(**dims)


__all__ = ["DIMENSIONS", "POST_FORMAT", "POST_VERSION", "DimPost", "Post", "read_post", "write_post"]
