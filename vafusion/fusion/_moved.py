"""The old import paths of stage 2 (before its modules moved into rooms), kept working for one release.

Why: library callers import ``vafusion.fusion.data``, ``.train``, ``.checkpoint`` ... (the README's
Python API named them). Each old module path is now an alias of the module it became (so its
functions, constants and even monkeypatching behave as before); the names of the two old modules
whose paths are rooms now (``vafusion.fusion.data``, ``vafusion.fusion.predict``) are served by
the room's ``__getattr__``. Both warn with a :class:`DeprecationWarning` naming
the new path. They stay through the 0.2 releases and are removed in 0.3.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Callable, Mapping
from typing import Any

REMOVED_IN = "0.3"


def warn_moved(old: str, new: str, stacklevel: int = 3) -> None:
    """The one warning every old path gives: where the thing is now, and when the old path goes."""
    warnings.warn(
        f"{old} moved to {new}; import it from there ({old} is removed in vafusion {REMOVED_IN})",
        DeprecationWarning,
        stacklevel=stacklevel,
    )


def alias(old: str, new: str) -> None:
    """Make module ``old`` (the caller's ``__name__``) the module ``new``: one object, two names."""
    warn_moved(old, new, stacklevel=4)
    sys.modules[old] = importlib.import_module(new)


def names_moved(room: str, moved: Mapping[str, str]) -> Callable[[str], Any]:
    """A room's module ``__getattr__`` serving ``room.NAME`` from ``moved[NAME]`` (a module path), with a warning."""

    def __getattr__(name: str) -> Any:
        if name not in moved:
            raise AttributeError(f"module {room!r} has no attribute {name!r}")
        warn_moved(f"{room}.{name}", f"{moved[name]}.{name}")
        return getattr(importlib.import_module(moved[name]), name)

    return __getattr__
