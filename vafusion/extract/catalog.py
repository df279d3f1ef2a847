"""What ``vafusion features`` lists: every built-in family and every installed extractor plug-in.

The registry resolves one ``--features`` entry; this walks all of them for a person choosing
one. Plug-ins declared as entry points are imported to describe them, so one that cannot be
imported, or that a built-in name hides, becomes a warning line here instead of never being
heard of (the registry would silently pick the built-in).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import asdict, dataclass
from typing import Any

from vafusion import plugins
from vafusion.extract.extras import EXTRAS
from vafusion.extract.registry import FAMILY_MODULES, Family, builtins, families
from vafusion.plugins import EXTRACTORS


@dataclass(frozen=True)
class Listed:
    """One family of built-ins, or one installed plug-in."""

    name: str
    origin: str  # "built-in" or "entry point of <distribution>"
    entries: tuple[str, ...]  # what --features takes: its names, or PREFIX:NAME
    about: str  # the first line of the module's or the plug-in's docstring
    options: tuple[str, ...]  # --extractor-option keys (a plug-in's as key=default (type))
    weights: str | None  # the default --weights, if it takes any
    install: str | None  # what to install first, where an optional package is missing

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


def _first_line(obj: Any) -> str:
    text = (getattr(obj, "__doc__", None) or "").strip()
    return text.splitlines()[0].replace("``", "`") if text else ""


def _install(family: Family) -> str | None:
    if family.needs is None or importlib.util.find_spec(family.needs) is not None:
        return None
    return f"pip install 'vafusion[{EXTRAS[family.needs]}]'"


def _family_row(module: str, family: Family) -> Listed:
    entries = (f"{family.prefix}:NAME",) if family.prefix else tuple(family.names())
    return Listed(
        name=family.key,
        origin="built-in",
        entries=entries,
        about=_first_line(importlib.import_module(module)),
        options=family.options,
        weights=family.default_weights,
        install=_install(family),
    )


def _plugin_row(found: plugins.Found) -> Listed:
    declared = plugins.declared_options(found.obj, plugins.who(EXTRACTORS, found.name, found.origin))
    options = tuple(
        f"{o.name}={plugins.shown(o.default)} ({o.type_name})"
        if not o.required
        else f"{o.name} ({o.type_name}, required)"
        for o in declared.options.values()
        if o.name != "weights"
    )
    return Listed(
        name=found.name,
        origin=found.origin,
        entries=(found.name,),
        about=_first_line(found.obj),
        options=options,
        weights=_default_weights(declared.options.get("weights")),
        install=None,
    )


def _default_weights(option: plugins.Option | None) -> str | None:
    """What a plug-in's ``weights`` argument defaults to: None when it takes none, "required" without a default."""
    if option is None:
        return None
    return "required" if option.required else plugins.shown(option.default)


def catalog() -> tuple[list[Listed], list[str]]:
    """Every built-in family, then every installed plug-in; plus one line per plug-in that cannot be used."""
    described, problems = plugins.installed(EXTRACTORS, builtins(), _plugin_row)
    rows = [_family_row(module, family) for module, family in zip(FAMILY_MODULES, families())]
    return [*rows, *described], [line for _, line in problems]
