"""The only place that knows extractor names: ``--features`` entries -> extractors.

An entry is one of

* a built-in name: each family module (:data:`FAMILY_MODULES`) declares its names and
  how to build them (a :class:`Family`), like torchvision's model registry: the names of
  a family are listed, not hard-coded here (``resnet50``, ``efficientnet_b0``, ``vggish``,
  ``logmel``, ``wav2vec2_base`` ...);
* ``package.module:attribute``, the attribute an extractor class or a zero-argument
  callable returning one (the module importable on ``sys.path`` or from the current
  directory);
* a name that an installed package registers under the entry-point group
  ``vafusion.extractors`` (``importlib.metadata``), pointing at such an attribute.

A built-in name wins over an entry point of the same name. Options
(``--extractor-option FEATURE.KEY=VALUE``) and weights (``--weights FEATURE=SPEC``) go to
built-ins as a :class:`BuildRequest`, to plug-ins as keyword arguments
(``attribute(key=value, ..., weights=SPEC)``), and are recorded in the provenance.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vafusion.errors import VafusionError
from vafusion.extract.contract import Extractor, ExtractorError, check_declaration

if TYPE_CHECKING:
    from vafusion.extract.options import ExtractOptions

ENTRY_POINT_GROUP = "vafusion.extractors"

FAMILY_MODULES = (
    "vafusion.extract.torchvision_backbones",
    "vafusion.extract.vggish",
    "vafusion.extract.logmel",
    "vafusion.extract.speech",
)
"""Modules holding a ``FAMILY``: the built-ins. A new family is one module plus one line here."""

LEGACY_WEIGHTS = {"torchvision": "visual_weights", "vggish": "vggish_weights"}
"""Family -> the ExtractOptions field (``--visual-weights``, ``--vggish-weights``) giving its
weights when ``--weights FEATURE=SPEC`` does not."""

LEGACY_OPTIONS = {"vggish": {"pca": "vggish_pca"}}
"""Family -> {option: ExtractOptions field} (``--vggish-pca`` is ``vggish.pca``)."""


@dataclass(frozen=True)
class BuildRequest:
    """What a built-in family gets to build one extractor."""

    name: str
    weights: str | None
    options: Mapping[str, str]
    image_size: int


@dataclass(frozen=True)
class Family:
    """A family of built-in extractors (one module): its names and how to build them.

    ``check`` validates a request cheaply (no weights loaded) so that a bad option fails
    before any work; ``default_weights`` applies when neither ``--weights`` nor a legacy
    option names any.
    """

    key: str
    names: Callable[[], Sequence[str]]
    build: Callable[[BuildRequest], Extractor]
    check: Callable[[BuildRequest], None] = lambda request: None
    options: tuple[str, ...] = ()
    default_weights: str | None = None


@cache
def families() -> tuple[Family, ...]:
    return tuple(importlib.import_module(m).FAMILY for m in FAMILY_MODULES)


@cache
def builtins() -> dict[str, Family]:
    """Every built-in name -> its family."""
    table: dict[str, Family] = {}
    for fam in families():
        for name in fam.names():
            if name in table:
                raise RuntimeError(f"built-in extractor {name} declared by {table[name].key} and {fam.key}")
            table[name] = fam
    return table


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _unknown(entry: str) -> VafusionError:
    names = sorted(builtins())
    close = difflib.get_close_matches(entry, names, n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    plugins = sorted(_entry_points())
    installed = f"; installed plug-ins: {', '.join(plugins)}" if plugins else ""
    return VafusionError(
        f"unknown feature {entry!r}{hint}; use a built-in ({', '.join(names)}){installed}, "
        f"or package.module:attribute for your own extractor"
    )


@dataclass(frozen=True)
class Plugin:
    """A user's extractor: where it comes from (for messages and provenance) and its factory."""

    source: str
    factory: Callable[..., Any]


def _import_attribute(spec: str, origin: str) -> Plugin:
    """``package.module:attr.sub`` -> the attribute; one-line errors that say what to fix."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise VafusionError(f"{origin} {spec!r}: write package.module:attribute")
    if os.getcwd() not in sys.path and "" not in sys.path:  # the `vafusion` script does not put it there
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise VafusionError(
            f"{origin} {spec}: cannot import {module_name} ({e}); make {module_name} importable "
            f"(run from its folder, add the folder to PYTHONPATH, or pip install its package)"
        ) from None
    except Exception as e:  # noqa: BLE001 - the plug-in's own module failed while importing
        raise VafusionError(f"{origin} {spec}: importing {module_name} raised {type(e).__name__}: {e}") from None
    obj: Any = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise VafusionError(f"{origin} {spec}: {module_name} has no attribute {attr}; check the name")
        obj = getattr(obj, part)
    if not callable(obj) or (not isinstance(obj, type) and hasattr(obj, "kind")):
        raise VafusionError(
            f"{origin} {spec}: {attr} must be an extractor class or a function returning an "
            "extractor, not an extractor object"
        )
    return Plugin(spec, obj)


def find(entry: str) -> Family | Plugin:
    """Resolve one ``--features`` entry without building anything."""
    if ":" in entry:
        return _import_attribute(entry, "--features")
    family = builtins().get(entry)
    if family is not None:
        return family
    ep = _entry_points().get(entry)
    if ep is None:
        raise _unknown(entry)
    return _import_attribute(ep.value, f"entry point {entry} ({ENTRY_POINT_GROUP}) ->")


def _request(entry: str, family: Family, opts: ExtractOptions) -> BuildRequest:
    options = dict(opts.extractor_options.get(entry, {}))
    for key, field_name in LEGACY_OPTIONS.get(family.key, {}).items():
        if key not in options and getattr(opts, field_name) is not None:
            options[key] = getattr(opts, field_name)
    unknown = sorted(set(options) - set(family.options))
    if unknown:
        accepted = ", ".join(family.options) or "none"
        raise VafusionError(
            f"--extractor-option {entry}.{unknown[0]}: {entry} has no option {unknown[0]!r} (its options: {accepted})"
        )
    weights = opts.weights.get(entry)
    if weights is None and family.key in LEGACY_WEIGHTS:
        weights = getattr(opts, LEGACY_WEIGHTS[family.key])
    if weights is None:
        weights = family.default_weights
    return BuildRequest(entry, weights, options, opts.image_size)


def check(opts: ExtractOptions) -> None:
    """Fail fast on what the user typed: unknown names, bad options of built-ins.

    Nothing is built or imported: a user's module is imported by :func:`build`, where a
    failure stops that feature only (the run goes on with the others).
    """
    for entry in opts.features:
        if ":" in entry:
            module_name, _, attr = entry.partition(":")
            if not module_name or not attr:
                raise VafusionError(f"--features {entry!r}: write package.module:attribute")
            continue
        family = builtins().get(entry)
        if family is not None:
            family.check(_request(entry, family, opts))
        elif entry not in _entry_points():
            raise _unknown(entry)


@dataclass
class Resolved:
    """One built extractor of a run, and how messages and the provenance name it."""

    entry: str
    source: str
    extractor: Extractor
    plugin: dict[str, Any] | None = None  # recorded in the provenance of a user's extractor

    @property
    def name(self) -> str:
        return self.extractor.name

    def provenance(self) -> dict:
        prov = self.extractor.provenance()
        if self.plugin is not None:
            if "plugin" in prov:
                raise ExtractorError(
                    f"extractor {self.source}: provenance() may not use the key 'plugin' "
                    "(vafusion records the plug-in's source and options there)"
                )
            prov = dict(prov, plugin=self.plugin)
        return prov


def _weights_record(spec: str) -> dict[str, Any]:
    from vafusion.extract.weights import sha256_file

    path = Path(spec)
    return {"weights": path.name, "sha256": sha256_file(path)} if path.is_file() else {"weights": spec}


def _build_plugin(entry: str, plugin: Plugin, opts: ExtractOptions) -> Resolved:
    kwargs: dict[str, Any] = dict(opts.extractor_options.get(entry, {}))
    weights = opts.weights.get(entry)
    if weights is not None:
        kwargs["weights"] = weights
    try:
        ext = plugin.factory(**kwargs)
    except VafusionError:
        raise
    except Exception as e:  # noqa: BLE001 - any failure of foreign code becomes one line
        given = f" with {', '.join(sorted(kwargs))}" if kwargs else ""
        raise ExtractorError(f"extractor {plugin.source}: building it{given} raised {type(e).__name__}: {e}") from None
    check_declaration(ext, plugin.source)
    record: dict[str, Any] = {"source": plugin.source}
    if opts.extractor_options.get(entry):
        record["options"] = dict(sorted(opts.extractor_options[entry].items()))
    if weights is not None:
        record.update(_weights_record(weights))
    return Resolved(entry, plugin.source, ext, record)


def build(entry: str, opts: ExtractOptions) -> Resolved:
    """Build the extractor of one ``--features`` entry, checked against the contract."""
    found = find(entry)
    if isinstance(found, Plugin):
        return _build_plugin(entry, found, opts)
    ext = found.build(_request(entry, found, opts))
    return Resolved(entry, entry, check_declaration(ext, entry))
