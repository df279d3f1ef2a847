"""Post-processing steps: what a step is (:class:`Step`), and the built-ins, a centred smoothing and a time shift.

Why steps: a model's frame-level predictions jitter where the labels are smooth (annotators move
a joystick), and the labels lag the stimulus (an annotator reacts a fraction of a second late).
ABAW entries therefore smooth their predictions and delay them; others detrend, rescale or
filter them. Each such operation is a step with parameters and a grid of candidate settings, and
:mod:`.fit` chooses one setting of each step of a sequence, per dimension, out of fold.

The contract (a built-in and a plug-in alike, named in :mod:`.registry`): a frozen dataclass
whose fields are its parameters (typed; post.json records them), with

- ``grid()`` (classmethod): the candidate settings the fit tries, the identity (a setting that
  changes nothing) first, so that at equal scores no change wins;
- ``apply(x, fps)``: ``x`` ``(T,)`` or ``(T, d)`` per-frame values of one video at ``fps``, the
  same shape back;
- ``describe()``: one line for logs and pages; ``identity`` (a property): whether it changes nothing.

Optional: ``title`` and ``about`` (how the cv page names the step and its grid), ``brief()``
(its cell in the page's table), ``grid_summary()`` (how post.json records the grid), and
``delay_seconds()``: a step that only delays the values by a number of seconds says so, and the
fit then scores all its candidates at once (correlations instead of one pass per candidate).

Settings are stated in seconds and turned into frames with each video's own frame rate
(Aff-Wild2 mixes 25, 30 and 60 fps), so one setting means the same on every video.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from vafusion.bounds import bound, bound_of
from vafusion.errors import VafusionError
from vafusion.fusion.signal import delay, moving_mean, moving_median


class Step:
    """Base of post-processing steps (subclass it as a frozen dataclass; see the module docstring)."""

    title: ClassVar[str] = "step"
    about: ClassVar[str] = ""

    @classmethod
    def grid(cls) -> tuple[Step, ...]:
        raise NotImplementedError(f"{cls.__name__}.grid(): the candidate settings, the identity first")

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.apply(x, fps)")

    def describe(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    def brief(self) -> str:
        return self.describe()

    @property
    def identity(self) -> bool:
        raise NotImplementedError(f"{type(self).__name__}.identity: whether this setting changes nothing")

    def params(self) -> dict[str, Any]:
        """The parameters post.json records (the dataclass fields)."""
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def delay_seconds(self) -> float | None:
        """Seconds by which this step only delays the values (None: it does something else)."""
        return None

    @classmethod
    def grid_summary(cls) -> dict[str, Any]:
        """How post.json records the grid the fit tried (default: every candidate's parameters)."""
        return {"candidates": [c.params() for c in cls.grid()]}


SMOOTHERS: dict[str, Callable[[np.ndarray, int], np.ndarray]] = {"mean": moving_mean, "median": moving_median}

MAX_WINDOW_S = 60.0
"""The longest smoothing window and shift a step takes (seconds): far beyond any useful one (the fit
tries up to 3 s and 1 s), short enough that no number in a post.json can size the work."""


def _require_in_range(cls: type, name: str, value: Any, what: str) -> None:
    """A step's parameter within the range its field declares (:mod:`vafusion.bounds`); one line if not."""
    problem = bound_of(cls, name).problem(value)  # type: ignore[union-attr]
    if problem:
        raise VafusionError(f"post-processing {name} {value!r}: {problem} ({what})")


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
    n = min(n, 2 * len(x) - 1)  # wider windows give the same values (every window is the whole video)
    flat = x.reshape(len(x), -1)
    return SMOOTHERS[method](flat, n).astype(x.dtype, copy=False).reshape(x.shape)


def shift(x: np.ndarray, k: int) -> np.ndarray:
    """``x`` delayed by ``k`` frames along axis 0 (``y[t] = x[t - k]``), edges repeated; ``k < 0`` advances."""
    return delay(x, k)


WINDOWS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SHIFT_STEP_S = 1 / 30
MAX_SHIFT_S = 1.0
_STEPS = int(round(MAX_SHIFT_S / SHIFT_STEP_S))
# 0 first, then +-1, +-2 ... steps: at equal scores the smaller shift wins (argmax keeps the first)
SHIFTS_S = tuple(s * k * SHIFT_STEP_S for k in range(_STEPS + 1) for s in ((1,) if k == 0 else (1, -1)))


@dataclass(frozen=True)
class Smooth(Step):
    """A centred ``method`` (mean or median) over ``window_s`` seconds: ``n = 2 * floor(window_s * fps / 2) + 1``
    frames (the odd count nearest ``window_s * fps``, so it is centred exactly); 0 s: no smoothing."""

    method: str = "mean"
    window_s: float = field(default=0.0, metadata=bound(0, MAX_WINDOW_S))

    title: ClassVar[str] = "smoothing"
    about: ClassVar[str] = "no smoothing, or a centred mean or median over a window"

    def __post_init__(self) -> None:
        if self.method not in SMOOTHERS:
            raise VafusionError(f"post-processing method {self.method!r}: use one of {', '.join(SMOOTHERS)}")
        _require_in_range(type(self), "window_s", self.window_s, "seconds of the smoothing window")

    @classmethod
    def grid(cls) -> tuple[Step, ...]:
        # no smoothing first: at equal scores it wins
        return (cls("mean", 0.0), *(cls(m, w) for w in WINDOWS_S for m in SMOOTHERS))

    @classmethod
    def grid_summary(cls) -> dict[str, Any]:
        return {"methods": list(SMOOTHERS), "windows_s": list(WINDOWS_S)}

    def frames(self, fps: float) -> int:
        """The window in frames at ``fps`` (odd)."""
        return 2 * int(np.floor(self.window_s * fps / 2 + 1e-9)) + 1

    @property
    def identity(self) -> bool:
        return self.window_s == 0

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        return smooth(x, self.frames(fps), self.method)

    def describe(self) -> str:
        return f"{self.method} over {self.window_s:g} s" if self.window_s > 0 else "no smoothing"

    def brief(self) -> str:
        return f"{self.method} over {self.window_s:g} s" if self.window_s else "none"


@dataclass(frozen=True)
class Shift(Step):
    """A delay of ``shift_s`` seconds: frame t takes the value of frame ``t - round(shift_s * fps)``, the first
    frames repeat the first value (edge padding); a label lag of d seconds calls for ``shift_s = d``, < 0 advances."""

    shift_s: float = field(default=0.0, metadata=bound(-MAX_WINDOW_S, MAX_WINDOW_S))

    title: ClassVar[str] = "shift"
    about: ClassVar[str] = "a shift (positive: predictions delayed, as a label lag calls for)"

    def __post_init__(self) -> None:
        _require_in_range(type(self), "shift_s", self.shift_s, "seconds of delay")

    @classmethod
    def grid(cls) -> tuple[Step, ...]:
        return tuple(cls(s) for s in SHIFTS_S)

    @classmethod
    def grid_summary(cls) -> dict[str, Any]:
        return {"shift_step_s": SHIFT_STEP_S, "max_shift_s": MAX_SHIFT_S}

    def frames(self, fps: float) -> int:
        return int(round(self.shift_s * fps))

    @property
    def identity(self) -> bool:
        return self.shift_s == 0

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        return shift(x, self.frames(fps))

    def describe(self) -> str:
        return f"shift {self.shift_s:+.3f} s"

    def brief(self) -> str:
        return f"{self.shift_s:+.3f} s"

    def params(self) -> dict[str, Any]:
        return {"shift_s": round(self.shift_s, 6)}  # the grid's k/30 s, recorded to the microsecond

    def delay_seconds(self) -> float:
        return self.shift_s


__all__ = [
    "MAX_SHIFT_S",
    "MAX_WINDOW_S",
    "SHIFTS_S",
    "SHIFT_STEP_S",
    "SMOOTHERS",
    "WINDOWS_S",
    "Shift",
    "Smooth",
    "Step",
    "shift",
    "smooth",
]
