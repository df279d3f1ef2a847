"""Post-processing steps by name: the built-ins, ``package.module:Class``, or an installed plug-in (``vafusion.post``).

Why a registry: post.json, ``cv --post-steps`` and the fit name steps, and this is the one place
that turns a name into a step class, through the one plug-in loader (:mod:`vafusion.plugins`:
the same naming, import and error rules as extractors and models). A step's parameters come
from post.json as JSON values and are typed by its constructor, as a model's options are.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from vafusion import plugins
from vafusion.errors import VafusionError
from vafusion.fusion.post.steps import Shift, Smooth, Step
from vafusion.plugins import POST_STEPS

BUILTINS: dict[str, type[Step]] = {"smooth": Smooth, "shift": Shift}
DEFAULT_STEPS = ("smooth", "shift")
"""What ``vafusion cv`` fits unless told otherwise: a smoothing, then a shift."""
_REQUIRED = ("grid", "apply", "describe")


def step_class(name: str | type[Step], flag: str = "--post-steps") -> type[Step]:
    """The step class ``name`` stands for (a class is taken as it is), checked against the contract."""
    if isinstance(name, type):
        cls, label = name, f"post-processing step {name.__qualname__}"
    else:
        found = plugins.find(POST_STEPS, name, BUILTINS, flag=flag)
        cls, label = found.obj, plugins.who(POST_STEPS, found.name, "" if found.builtin else found.origin)
    missing = [a for a in _REQUIRED if not callable(getattr(cls, a, None))]
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls) or missing:
        raise VafusionError(
            f"{label}: not a post-processing step (a dataclass with grid(), apply(x, fps) and describe()"
            + (f"; it lacks {', '.join(missing)}" if missing else "")
            + "); see vafusion.fusion.post.steps.Step"
        )
    return cls


def step_name(step: Step | type[Step]) -> str:
    """How post.json names a step: its built-in name, else ``package.module:Class``."""
    cls = step if isinstance(step, type) else type(step)
    for name, builtin in BUILTINS.items():
        if cls is builtin:
            return name
    return f"{cls.__module__}:{cls.__qualname__}"


def make_step(name: str, params: Mapping[str, Any], where: str) -> Step:
    """The step ``name`` with ``params`` (JSON values, typed by its constructor); errors name ``where``."""
    cls = step_class(name, flag=f"{where}: step")
    label = plugins.who(POST_STEPS, name)
    declared = plugins.declared_options(cls, label)
    typed = plugins.typed_options(label, declared, dict(params), f"{where}: {name}.")
    return plugins.call(label, cls, typed, VafusionError)


__all__ = ["BUILTINS", "DEFAULT_STEPS", "make_step", "step_class", "step_name"]
