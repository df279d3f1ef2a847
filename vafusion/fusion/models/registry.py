"""The model registry: the one place that knows model names.

``--model`` (and a run's ``config.json``) names a model in one of three ways:

- a built-in name (:data:`BUILTINS`; ``fusion`` is the old name of ``imf``),
- ``package.module:Class``, imported on demand (from the current directory too, when the
  module is not importable otherwise, so a ``my_model.py`` beside you just works),
- a name under the entry-point group ``vafusion.models`` of an installed distribution.

A model declares everything vafusion needs in plain Python, with no registration call:

- its options are the keyword parameters of its constructor ``__init__(self, dims, *,
  opt: type = default, ...)``: names, defaults and annotations (int, float, bool, str or
  ``tuple[int, ...]``) are read with :mod:`inspect`; every option needs a default;
- an optional class attribute ``option_help = {"opt": "one line"}``;
- an optional class attribute ``option_space = {"opt": {"low": 16, "high": 256, "log": True}, "other":
  {"choices": [3, 5, 7]}}``: the ranges ``vafusion tune`` searches by default (the options it names;
  without it, tune derives ranges from the numeric options' defaults, see
  :mod:`vafusion.fusion.experiments.space`);
- the first line of the class docstring is its description in ``vafusion models``.

Capabilities come from the class, never from its name: a model accepts ``--causal`` when
it has a ``causal`` option; a ``torch.nn.Module`` is trained by gradient steps on
``forward(streams, present, valid) -> (B, W, 2)``; any other class must be *fitted in closed
form* (``fit(streams, present, labels, *, seed)`` and ``predict(streams, present)`` over
whole videos as numpy arrays, plus ``state_dict()`` / ``load_state_dict()`` of plain arrays
and numbers), like the built-in ``ridge``.

A config stores a built-in by its name (stable across refactors inside vafusion) and any
other model by its ``module:Class`` path, which is what loading a run needs to import.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn

from vafusion import plugins
from vafusion.errors import VafusionError
from vafusion.fusion.models import contract
from vafusion.plugins import MODELS, Option, parse_value

ENTRY_POINT_GROUP = MODELS.group
DEFAULT_MODEL = "imf"
BUILTINS: dict[str, str] = {
    "imf": "vafusion.fusion.models.imf:IMF",
    "interactive": "vafusion.fusion.models.imf:Interactive",
    "transformer": "vafusion.fusion.models.transformer:TemporalTransformer",
    "concat": "vafusion.fusion.models.concat:EarlyConcat",
    "late": "vafusion.fusion.models.late:LateFusion",
    "ridge": "vafusion.fusion.models.ridge:RidgeBaseline",
}
ALIASES = {"fusion": "imf"}  # config_version 1 and the CLI before the registry called imf "fusion"
CLOSED_FORM_METHODS = ("fit", "predict", "state_dict", "load_state_dict")

# config_version 1 stored a flat configuration: its model names, and which of its fields were
# that model's options (old field -> option name).
_V1_MODELS: dict[str, tuple[str, dict[str, str]]] = {
    "fusion": (
        "imf",
        {
            k: k
            for k in (
                "d_model",
                "tcn_kernel",
                "tcn_dilations",
                "causal",
                "dropout",
                "heads",
                "head_hidden",
                "attn_distance_bias",
            )
        },
    ),
    "ridge": ("ridge", {"ridge_alpha": "alpha", "ridge_context": "context", "ridge_max_frames": "max_frames"}),
}
V1_MODEL_FIELDS = frozenset(f for _, fields in _V1_MODELS.values() for f in fields) | {"model"}


# ---- options ------------------------------------------------------------------------------


def parse_model_options(pairs: Iterable[str]) -> dict[str, Any]:
    """``["KEY=VALUE", ...]`` -> ``{KEY: text}``; a pair without ``=`` or a repeated key is an error.

    Values stay text here: the chosen model's declaration decides their type
    (:meth:`Option.coerce`).
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or not key:
            raise VafusionError(f"--model-option {pair!r}: write KEY=VALUE, e.g. --model-option d_model=64")
        if key in options:
            raise VafusionError(f"--model-option {key}: given twice; give each option once")
        options[key] = value.strip()
    return options


# ---- specs --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModelSpec:
    """A resolved model: its class and what its declaration says."""

    name: str  # as listed and as the user named it
    ref: str  # as a config stores it: built-in name, or module:Class
    cls: type
    options: Mapping[str, Option]
    description: str
    origin: str  # "built-in", "entry point of <distribution>", or "module"
    space: Mapping[str, Any] | None = None  # the class's option_space (search ranges for tune), if it has one

    @property
    def closed_form(self) -> bool:
        """Fitted in closed form (fit / predict) rather than trained by gradient steps."""
        return not issubclass(self.cls, nn.Module)

    @property
    def can_be_causal(self) -> bool:
        return "causal" in self.options

    def with_defaults(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option of the model: ``given`` checked and typed, the others at their defaults."""
        if "causal" in given and "causal" not in self.options:
            causal = ", ".join(n for n in BUILTINS if "causal" in resolve_model(n).options)
            raise VafusionError(
                f"--causal: model {self.name!r} cannot run causally (it declares no 'causal' option); "
                f"drop --causal or choose a model that has it ({causal})"
            )
        declared = plugins.Declared(self.options, extra=False)
        typed = plugins.typed_options(
            plugins.who(MODELS, self.name), declared, given, "--model-option ", f" (see {MODELS.listing})"
        )
        return {name: typed.get(name, option.default) for name, option in self.options.items()}

    def build(self, dims: Sequence[int], options: Mapping[str, Any], seed: int = 0) -> Any:
        """``cls(dims, **options)`` whose initial weights depend only on ``seed``.

        The global RNG is left untouched (forked), so building a model does not shift the
        random stream the trainer uses for shuffling and dropout. A ValueError of the
        constructor (an option value it cannot work with) becomes a one-line VafusionError.
        """
        options = self.with_defaults(options)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            try:
                return contract.guarded(self.name, "building it", self.cls, [int(d) for d in dims], **options)
            except contract.ModelError as e:
                if isinstance(e.__cause__, ValueError):  # an option value it cannot work with
                    raise VafusionError(f"model {self.name!r}: {e.__cause__}; fix --model-option") from e
                raise


def _options(cls: type, where: str) -> dict[str, Option]:
    """The constructor's options after ``dims``, each with a default that config.json can store."""
    params = plugins.parameters(cls)
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise VafusionError(f"{where}: the constructor must take dims first: __init__(self, dims, *, option=default)")
    declared = plugins.declared_options(cls, where, skip=1)
    helps = dict(getattr(cls, "option_help", {}) or {})
    options = {}
    for name, option in declared.options.items():
        if option.required:
            raise VafusionError(f"{where}: constructor argument {name!r} has no default; every option needs one")
        try:
            json.dumps(option.default)
        except TypeError as e:
            raise VafusionError(
                f"{where}: option {name!r} has default {option.default!r}; options are stored in "
                f"config.json: use numbers, booleans, strings or tuples of them"
            ) from e
        options[name] = replace(option, help=str(helps.pop(name, "")))
    if helps:
        raise VafusionError(f"{where}: option_help names {sorted(helps)}, which are not constructor options")
    return options


def _describe(found: plugins.Found) -> ModelSpec:
    """Read a model class's declaration (see the module docstring); a VafusionError if it breaks the contract."""
    cls = found.obj
    if not isinstance(cls, type):
        raise VafusionError(f"model {found.name!r}: {found.ref} is a {type(cls).__name__}, not a class")
    where = f"model {found.name!r} ({cls.__module__}.{cls.__qualname__})"
    if not issubclass(cls, nn.Module) and not all(callable(getattr(cls, m, None)) for m in CLOSED_FORM_METHODS):
        raise VafusionError(
            f"{where}: neither a torch.nn.Module nor fitted in closed form "
            f"({', '.join(CLOSED_FORM_METHODS)}); see README 'Writing your own model'"
        )
    options = _options(cls, where)
    doc = inspect.getdoc(cls) or ""
    description = doc.strip().splitlines()[0] if doc.strip() else "(no description: give the class a docstring)"
    return ModelSpec(found.name, found.ref, cls, options, description, found.origin, _space(cls, where, options))


def _space(cls: type, where: str, options: Mapping[str, Option]) -> dict[str, Any] | None:
    """The class's ``option_space`` (a dict naming options), as declared; each entry is read by tune's space."""
    space = getattr(cls, "option_space", None)
    if space is None:
        return None
    if not isinstance(space, Mapping):
        raise VafusionError(f"{where}: option_space must be a dict of option -> range, not {type(space).__name__}")
    unknown = sorted(str(k) for k in space if k not in options)
    if unknown:
        raise VafusionError(f"{where}: option_space names {unknown}, which are not constructor options")
    return dict(space)


def resolve_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for a built-in name, ``module:Class``, or an entry-point name."""
    found = plugins.find(MODELS, name, BUILTINS, ALIASES, flag="--model")
    if found.builtin:
        found = replace(found, obj=plugins.import_object(found.obj, MODELS, plugins.who(MODELS, found.name)))
    return _describe(found)


def list_models() -> tuple[list[ModelSpec], list[str]]:
    """Every built-in, then every installed plug-in (entry points); plus one line per broken plug-in."""
    described, problems = plugins.installed(MODELS, [*BUILTINS, *ALIASES], _describe)
    return [*(resolve_model(n) for n in BUILTINS), *described], [line for _, line in problems]


def model_from_v1(flat: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(name, options)`` from a config_version 1 flat configuration (its model-related fields)."""
    old = flat.get("model", "fusion")
    if old not in _V1_MODELS:
        raise VafusionError(
            f"run configuration version 1 names model {old!r}; that version knew only "
            f"{', '.join(_V1_MODELS)}: the run directory is damaged"
        )
    name, fields = _V1_MODELS[old]
    return name, {option: flat[field] for field, option in fields.items() if field in flat}


# ---- instances ----------------------------------------------------------------------------


def is_closed_form(model: Any) -> bool:
    """A model instance fitted in closed form (see the module docstring), not by gradient steps."""
    return not isinstance(model, nn.Module)


def count_parameters(model: Any, name: str = "") -> int:
    """Trainable parameters of a module (weight-norm counts g and v); numbers in a closed-form state."""
    if is_closed_form(model):
        return int(sum(np.size(np.asarray(v)) for v in contract.state(name or type(model).__name__, model).values()))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


__all__ = [
    "ALIASES",
    "BUILTINS",
    "DEFAULT_MODEL",
    "ENTRY_POINT_GROUP",
    "V1_MODEL_FIELDS",
    "ModelSpec",
    "Option",
    "count_parameters",
    "is_closed_form",
    "list_models",
    "model_from_v1",
    "parse_model_options",
    "parse_value",
    "resolve_model",
]
