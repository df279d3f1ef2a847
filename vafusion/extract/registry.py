"""The only place that knows extractor names: ``--features`` entries -> extractors.

An entry is one of

* a built-in name: each family module (:data:`FAMILY_MODULES`) declares its names and
  how to build them (a :class:`Family`), like torchvision's model registry: the names of
  a family are listed, not hard-coded here (``resnet50``, ``efficientnet_b0``, ``vggish``,
  ``logmel``, ``wav2vec2_base``, ``vad`` ...);
* ``PREFIX:NAME`` for a family whose names are open-ended (any timm model, any Hugging Face
  speech encoder): ``timm:vit_small_patch14_dinov2.lvd142m``, ``hf:openai/whisper-base``,
  ``hf:/models/wavlm-large``. The rule that tells these from ``package.module:attribute``:
  when the text before the first colon is exactly a family prefix (:func:`prefixes`:
  ``timm``, ``hf``), the entry is that family's, always; any other entry with a colon is
  a plug-in. (A module of your own named ``timm`` or ``hf`` cannot be given by path: rename
  it, or register it as an entry point.)
* ``package.module:attribute``, the attribute an extractor class or a zero-argument
  callable returning one (the module importable on ``sys.path`` or from the current
  directory);
* a name that an installed package registers under the entry-point group
  ``vafusion.extractors`` (``importlib.metadata``), pointing at such an attribute.

Finding, importing and typing a user's extractor follow the rules every kind of plug-in
shares (:mod:`vafusion.plugins`; a built-in name wins over an entry point of the same name).
Options (``--extractor-option FEATURE.KEY=VALUE``) and weights (``--weights FEATURE=SPEC``)
go to built-ins as a :class:`BuildRequest` (text, parsed by the family), to plug-ins as
keyword arguments typed as the class or factory declares them
(``attribute(key=value, ..., weights=SPEC)``), and are recorded in the provenance as given.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from vafusion import plugins
from vafusion.errors import VafusionError
from vafusion.extract.contract import Extractor, ExtractorError, check_declaration, checked_provenance
from vafusion.hashing import sha256_file
from vafusion.plugins import EXTRACTORS

ENTRY_POINT_GROUP = EXTRACTORS.group

FAMILY_MODULES = (
    "vafusion.extract.torchvision_backbones",
    "vafusion.extract.vggish",
    "vafusion.extract.logmel",
    "vafusion.extract.speech",
    "vafusion.extract.timm_models",
    "vafusion.extract.hf_audio",
    "vafusion.extract.vad",
)
"""Modules holding a ``FAMILY``: the built-ins. A new family is one module plus one line here."""


@dataclass(frozen=True)
class Settings:
    """What one run asks of its extractors: the registry's whole input besides the names.

    ``weights`` and ``options`` are per ``--features`` entry (``--weights``,
    ``--extractor-option``); ``family_weights`` and ``family_options`` apply to every built-in
    of a family (by :attr:`Family.key`) unless the entry has its own (the older flags
    ``--visual-weights``, ``--vggish-weights``, ``--vggish-pca``, which their owner maps here).
    """

    weights: Mapping[str, str] = field(default_factory=dict)
    options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    image_size: int = 224
    family_weights: Mapping[str, str | None] = field(default_factory=dict)
    family_options: Mapping[str, Mapping[str, str]] = field(default_factory=dict)


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
    option names any. A family with a ``prefix`` takes every entry ``PREFIX:NAME`` (its
    ``check`` judges NAME) and lists no ``names``. ``needs``: the optional package it imports
    (a key of :data:`vafusion.extract.extras.EXTRAS`), so a listing can say what to install.
    """

    key: str
    names: Callable[[], Sequence[str]]
    build: Callable[[BuildRequest], Extractor]
    check: Callable[[BuildRequest], None] = lambda request: None
    options: tuple[str, ...] = ()
    default_weights: str | None = None
    prefix: str | None = None
    needs: str | None = None


@cache
def families() -> tuple[Family, ...]:
    return tuple(importlib.import_module(m).FAMILY for m in FAMILY_MODULES)


@cache
def prefixes() -> dict[str, Family]:
    """Every family prefix (``timm``, ``hf``) -> its family."""
    return {fam.prefix: fam for fam in families() if fam.prefix}


def prefixed(entry: str) -> Family | None:
    """The family of a ``PREFIX:NAME`` entry: the text before the first colon is a family
    prefix, exactly (``timm:resnet50`` yes; ``timm_tools:make`` and ``mypkg.hf:X`` no)."""
    head, colon, _ = entry.partition(":")
    return prefixes().get(head) if colon else None


def is_builtin(entry: str) -> bool:
    """Whether ``entry`` names a built-in (a listed name or ``PREFIX:NAME``), not a user's plug-in."""
    return prefixed(entry) is not None or (":" not in entry and entry in builtins())


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


@dataclass(frozen=True)
class Plugin:
    """A user's extractor: where it comes from (for messages and provenance) and its factory."""

    source: str  # package.module:attribute
    factory: Callable[..., Any]
    label: str  # how messages name it before it is built


def find(entry: str) -> Family | Plugin:
    """Resolve one ``--features`` entry without building anything (a user's module is imported)."""
    family = prefixed(entry)
    if family is not None:
        return family
    found = plugins.find(EXTRACTORS, entry, builtins(), flag="--features")
    if found.builtin:
        return found.obj
    label = plugins.who(EXTRACTORS, found.name, "" if found.origin == "module" else found.origin)
    if not callable(found.obj) or (not isinstance(found.obj, type) and hasattr(found.obj, "kind")):
        raise VafusionError(
            f"{label}: {found.ref} must be an extractor class or a function returning an extractor, "
            "not an extractor object"
        )
    return Plugin(found.ref, found.obj, label)


def _request(entry: str, family: Family, settings: Settings) -> BuildRequest:
    options = {**settings.family_options.get(family.key, {}), **settings.options.get(entry, {})}
    unknown = sorted(set(options) - set(family.options))
    if unknown:
        accepted = ", ".join(family.options) or "none"
        raise VafusionError(
            f"--extractor-option {entry}.{unknown[0]}: {entry} has no option {unknown[0]!r} (its options: {accepted})"
        )
    weights = settings.weights.get(entry)
    if weights is None:
        weights = settings.family_weights.get(family.key)
    if weights is None:
        weights = family.default_weights
    return BuildRequest(entry, weights, options, settings.image_size)


def check(features: Sequence[str], settings: Settings) -> None:
    """Fail fast on what the user typed: unknown names, bad options of built-ins.

    Nothing is built, and no user module imported: that happens in :func:`build`, where a
    failure stops that feature only (the run goes on with the others). A family may import its
    own optional package here, so that a missing one is named before any work.
    """
    for entry in features:
        family = prefixed(entry)
        if family is not None:
            family.check(_request(entry, family, settings))
            continue
        if ":" in entry:
            plugins.split_ref(entry, EXTRACTORS)
            continue
        family = builtins().get(entry)
        if family is not None:
            family.check(_request(entry, family, settings))
        elif not plugins.declares(EXTRACTORS, entry):
            forms = [f"{prefix}:<name>" for prefix in sorted(prefixes())]  # listed with the built-ins
            raise plugins.unknown(EXTRACTORS, entry, [*sorted(builtins()), *forms], flag="--features")


@dataclass
class Resolved:
    """One built extractor of a run, and how messages and the provenance name it."""

    entry: str
    source: str
    extractor: Extractor
    plugin: dict[str, Any] | None = None  # recorded in the provenance of a user's extractor
    recorded: dict[str, Any] | None = None  # the provenance, once asked for

    @property
    def name(self) -> str:
        return self.extractor.name

    def provenance(self) -> dict:
        """What the file records, asked once (:func:`~.contract.checked_provenance`: the same on every call)."""
        if self.recorded is None:
            self.recorded = self._provenance()
        return self.recorded

    def _provenance(self) -> dict:
        prov = checked_provenance(self.extractor, self.source)
        if self.plugin is not None:
            if "plugin" in prov:
                raise ExtractorError(
                    f"extractor {self.source}: provenance() may not use the key 'plugin' "
                    "(vafusion records the plug-in's source and options there)"
                )
            prov = dict(prov, plugin=self.plugin)
        return prov


def _weights_record(spec: str) -> dict[str, Any]:
    path = Path(spec)
    return {"weights": path.name, "sha256": sha256_file(path)} if path.is_file() else {"weights": spec}


def _arguments(entry: str, plugin: Plugin, settings: Settings) -> dict[str, Any]:
    """The plug-in's keyword arguments: its options typed as it declares them, and ``weights``."""
    declared = plugins.declared_options(plugin.factory, plugin.label)
    options = plugins.Declared({k: o for k, o in declared.options.items() if k != "weights"}, declared.extra)
    kwargs = plugins.typed_options(
        plugin.label, options, settings.options.get(entry, {}), f"--extractor-option {entry}."
    )
    weights = settings.weights.get(entry)
    accepts = "weights" in declared.options or declared.extra
    if weights is not None and not accepts:
        raise VafusionError(f"--weights {entry}: {plugin.label} takes no weights (no `weights` argument); drop it")
    if weights is None and "weights" in declared.options and declared.options["weights"].required:
        raise VafusionError(f"{plugin.label}: needs weights; give --weights {entry}=SPEC")
    if weights is not None:
        kwargs["weights"] = weights
    return kwargs


def _build_plugin(entry: str, plugin: Plugin, settings: Settings) -> Resolved:
    ext = plugins.call(plugin.label, plugin.factory, _arguments(entry, plugin, settings), ExtractorError)
    check_declaration(ext, plugin.source)
    record: dict[str, Any] = {"source": plugin.source}
    if settings.options.get(entry):  # as given (text from the command line): the fingerprint is stable
        record["options"] = dict(sorted(settings.options[entry].items()))
    weights = settings.weights.get(entry)
    if weights is not None:
        record.update(_weights_record(weights))
    return Resolved(entry, plugin.source, ext, record)


def build(entry: str, settings: Settings) -> Resolved:
    """Build the extractor of one ``--features`` entry, checked against the contract."""
    found = find(entry)
    if isinstance(found, Plugin):
        return _build_plugin(entry, found, settings)
    ext = found.build(_request(entry, found, settings))
    return Resolved(entry, entry, check_declaration(ext, entry))
