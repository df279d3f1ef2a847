"""The optional packages of extractor families: one import rule, one message naming the extra.

Why apart: timm, transformers and silero-vad are heavy and needed only by the families that use
them (``vafusion[timm]``, ``vafusion[hf]``, ``vafusion[vad]``); a missing one must be one line
that says what to install, whichever family asks, before any work starts.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from vafusion.errors import VafusionError

EXTRAS = {"timm": "timm", "transformers": "hf", "silero_vad": "vad"}
"""Importable module -> the vafusion extra that installs it."""

PACKAGES = {"timm": "timm", "transformers": "transformers", "silero_vad": "silero-vad"}
"""Importable module -> its distribution name on PyPI."""


def _missing(module: str, who: str, reason: str) -> VafusionError:
    return VafusionError(
        f"{who} needs the {PACKAGES[module]} package ({reason}): pip install 'vafusion[{EXTRAS[module]}]'"
    )


def need(module: str, who: str) -> ModuleType:
    """Import optional ``module`` for ``who`` (a feature entry); missing, one line naming the extra."""
    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise _missing(module, who, str(e).splitlines()[0] if str(e) else "not installed") from e


def package_dir(module: str, who: str) -> Path:
    """The folder of optional package ``module``, found without importing it (its data files only).

    Why not import: silero-vad's ``__init__`` sets torch's thread count to 1 for the whole process.
    """
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise _missing(module, who, "not installed")
    return Path(next(iter(spec.submodule_search_locations)))
