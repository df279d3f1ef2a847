"""The only place that knows face-detector names: ``--detector`` -> a built detector.

``--detector`` is a built-in name (:data:`BUILTINS`), ``package.module:attribute`` (a detector
class or a function returning one), or a name an installed package declares in the entry-point
group ``vafusion.detectors``. ``--detector-option KEY=VALUE`` become keyword arguments of the
class or function, typed from its signature.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vafusion.errors import VafusionError
from vafusion.extract.faces.contract import Detector, DetectorError, check_declaration

ENTRY_POINT_GROUP = "vafusion.detectors"
BUILTINS = {"mtcnn": "vafusion.extract.faces.mtcnn:MTCNN"}
DEFAULT = "mtcnn"


@dataclass(frozen=True)
class Resolved:
    """A detector name resolved: how it is shown, and its factory."""

    source: str
    factory: Callable[..., Any]


def _import(spec: str, label: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise VafusionError(f"--detector {spec!r}: write package.module:attribute")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `vafusion` script does not put it there
        sys.path.append(os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as e:
        raise VafusionError(f"{label}: cannot import {module_name} ({e}); make it importable") from e
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise VafusionError(f"{label}: {module_name} has no attribute {attr}; check the name")
        obj = getattr(obj, part)
    if not callable(obj):
        raise VafusionError(f"{label}: {attr} must be a detector class or a function returning a detector")
    return obj


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def find(name: str) -> Resolved:
    """Resolve ``--detector`` without building anything."""
    if name in BUILTINS:
        return Resolved(name, _import(BUILTINS[name], f"detector {name}"))
    if ":" in name:
        return Resolved(name, _import(name, f"--detector {name}"))
    ep = _entry_points().get(name)
    if ep is not None:
        return Resolved(name, _import(ep.value, f"detector {name} ({ENTRY_POINT_GROUP})"))
    known = [*BUILTINS, *_entry_points()]
    close = difflib.get_close_matches(name, known, n=2)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    raise VafusionError(
        f"--detector {name}: unknown detector{hint}; use {', '.join(known)} or package.module:attribute"
    )


def _typed(factory: Callable[..., Any], options: Mapping[str, str], source: str) -> dict[str, Any]:
    """Option text typed by the factory's defaults (int, float, bool, else text)."""
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return dict(options)
    out: dict[str, Any] = {}
    for key, text in options.items():
        param = params.get(key)
        if param is None and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            raise VafusionError(
                f"--detector-option {key}: detector {source} has no such option; "
                f"its options: {', '.join(p for p in params if p != 'self') or 'none'}"
            )
        default = None if param is None else param.default
        kind = type(default) if isinstance(default, (bool, int, float)) else str
        try:
            out[key] = (text.lower() in ("1", "true", "yes")) if kind is bool else kind(text)
        except ValueError:
            raise VafusionError(f"--detector-option {key}={text}: detector {source} wants a {kind.__name__}") from None
    return out


def build(name: str, options: Mapping[str, str] | None = None) -> tuple[str, Detector]:
    """``(source, detector)`` for ``--detector name`` with ``--detector-option`` text, checked against the contract."""
    found = find(name)
    kwargs = _typed(found.factory, options or {}, found.source)
    try:
        det = found.factory(**kwargs)
    except VafusionError:
        raise
    except Exception as e:
        raise DetectorError(f"detector {found.source}: building it raised {type(e).__name__}: {e}") from e
    return found.source, check_declaration(det, found.source)
