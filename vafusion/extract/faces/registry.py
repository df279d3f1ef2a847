"""The only place that knows face-detector names: ``--detector`` -> a built detector.

``--detector`` is a built-in name (:data:`BUILTINS`), ``package.module:attribute`` (a detector
class or a function returning one), or a name an installed package declares in the entry-point
group ``vafusion.detectors``. ``--detector-option KEY=VALUE`` become keyword arguments of the
class or function, typed from its signature. Finding, importing, typing the options and calling
foreign code follow the rules of every plug-in (:mod:`vafusion.plugins`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vafusion import plugins
from vafusion.errors import VafusionError
from vafusion.extract.faces.contract import Detector, DetectorError, check_declaration
from vafusion.plugins import DETECTORS

BUILTINS = {"mtcnn": "vafusion.extract.faces.mtcnn:MTCNN"}
"""Built-in name -> where its class lives (imported only when used)."""
DEFAULT = "mtcnn"


@dataclass(frozen=True)
class Resolved:
    """A detector name resolved: how provenance names it (a built-in's name or module:attr), how messages
    name it, and its factory."""

    source: str
    label: str
    factory: Callable[..., Any]


def find(name: str) -> Resolved:
    """Resolve ``--detector`` (a user's module is imported) without building anything."""
    found = plugins.find(DETECTORS, name, BUILTINS, flag="--detector")
    factory = plugins.import_object(found.obj, DETECTORS) if found.builtin else found.obj
    label = plugins.who(DETECTORS, found.name, "" if found.origin in ("module", "built-in") else found.origin)
    if not callable(factory) or (not isinstance(factory, type) and hasattr(factory, "kind")):
        raise VafusionError(
            f"{label}: {found.ref} must be a detector class or a function returning a detector, not a detector object"
        )
    return Resolved(found.ref, label, factory)


def build(name: str, options: Mapping[str, str] | None = None) -> tuple[str, Detector]:
    """``(source, detector)`` for ``--detector name`` with ``--detector-option`` text, checked against the contract."""
    found = find(name)
    declared = plugins.declared_options(found.factory, found.label)
    kwargs = plugins.typed_options(found.label, declared, options or {}, "--detector-option ")
    det = plugins.call(found.label, found.factory, kwargs, DetectorError)
    return found.source, check_declaration(det, found.source)
