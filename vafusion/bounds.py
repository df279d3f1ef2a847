"""Numeric settings declared once with their range, checked wherever a value enters.

Why: a learning rate of -1 or NaN, a fold 0 or a negative weight decay must stop at the
boundary with one line naming the option, never reach an optimiser or an index. A setting's
range is declared once, on its dataclass field (``field(default=..., metadata=bound(...))``);
:func:`check_bounds` enforces it for library callers and saved configurations, and the CLI
builds the option's click type from the same declaration (:func:`bound_of`), so the two can
never disagree. Options are named as the CLI spells them (``lr`` -> ``--lr``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

from vafusion.errors import VafusionError

BOUND = "vafusion.bound"  # the key of a field's metadata that holds its Bound


@dataclass(frozen=True)
class Bound:
    """A closed range ``[low, high]`` (``low_open``: ``low`` excluded) of finite numbers; None = unbounded."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    optional: bool = False  # None is a value (e.g. "default: chosen at run time")

    def describe(self) -> str:
        """The range the way click shows it: ``x>0``, ``x>=1``, ``16<=x<=1024``."""
        low_op = ">" if self.low_open else ">="
        if self.high is None:
            return f"x{low_op}{_num(self.low)}" if self.low is not None else "any finite number"
        low = "" if self.low is None else f"{_num(self.low)}{'<' if self.low_open else '<='}"
        return f"{low}x<={_num(self.high)}"

    def problem(self, value: Any) -> str | None:
        """Why ``value`` is not allowed, or None."""
        if value is None and self.optional:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{value!r} is not a number"
        if not math.isfinite(value):
            return f"{value} is not a finite number"
        below = self.low is not None and (value <= self.low if self.low_open else value < self.low)
        if below or (self.high is not None and value > self.high):
            return f"{value:g} is not in the range {self.describe()}"
        return None


IMAGE_SIZE = Bound(16, 1024)
"""Side of a face crop in pixels: ``--image-size``, and the ``image_size`` a frame extractor declares."""

SAMPLE_RATE = Bound(1000, 192000)
"""Hz: the ``sample_rate`` a track extractor declares (a whole track is held at that rate)."""

FEATURE_DIM = Bound(1, 65536)
"""Columns of a feature: the ``dim`` an extractor declares (a video's rows are held as T x dim)."""


def declared(b: Bound) -> dict[str, Bound]:
    """Field metadata for a range declared above: ``field(default=224, metadata=declared(IMAGE_SIZE))``."""
    return {BOUND: b}


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bound(
    low: float | None = None, high: float | None = None, *, low_open: bool = False, optional: bool = False
) -> dict[str, Bound]:
    """Field metadata declaring a range: ``lr: float = field(default=1e-3, metadata=bound(0, low_open=True))``."""
    return {BOUND: Bound(low, high, low_open, optional)}


def bound_of(cls: type, name: str) -> Bound | None:
    """The range declared on field ``name`` of dataclass ``cls``."""
    return next((f.metadata.get(BOUND) for f in dataclasses.fields(cls) if f.name == name), None)


def option_name(field_name: str) -> str:
    """How the CLI spells a setting: ``weight_decay`` -> ``--weight-decay``."""
    return "--" + field_name.replace("_", "-")


def check_bounds(obj: Any) -> list[str]:
    """``"--lr -1: -1 is not in the range x>0"`` for every field of dataclass ``obj`` outside its range."""
    problems = []
    for f in dataclasses.fields(obj):
        declared = f.metadata.get(BOUND)
        value = getattr(obj, f.name)
        problem = declared.problem(value) if declared is not None else None
        whole = str(f.type).startswith("int") or f.type is int
        if not problem and whole and value is not None and not isinstance(value, int):
            problem = f"{value!r} is not a whole number"
        if problem:
            problems.append(f"{option_name(f.name)} {value}: {problem}")
    return problems


def require_bounds(obj: Any, what: str) -> None:
    """Raise one VafusionError listing every field of ``obj`` outside its declared range."""
    problems = check_bounds(obj)
    if problems:
        raise VafusionError(f"invalid {what}: " + "; ".join(problems))


__all__ = [
    "FEATURE_DIM",
    "IMAGE_SIZE",
    "SAMPLE_RATE",
    "Bound",
    "bound",
    "bound_of",
    "check_bounds",
    "declared",
    "option_name",
    "require_bounds",
]
