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

import importlib
import inspect
import json
import os
import sys
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

import numpy as np
import torch
from torch import nn

from vafusion.errors import VafusionError

ENTRY_POINT_GROUP = "vafusion.models"
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


def parse_value(text: str) -> Any:
    """``--model-option`` text as int, float, true/false, else the string itself."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


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


def _kind_name(kind: Any) -> str:
    if kind is None:
        return "any"
    if typing.get_origin(kind) is tuple:
        return f"tuple[{_kind_name(typing.get_args(kind)[0])}, ...]"
    return getattr(kind, "__name__", str(kind))


@dataclass(frozen=True)
class Option:
    """One constructor option of a model: its name, type (None: unannotated), default and help."""

    name: str
    kind: Any
    default: Any
    help: str = ""

    @property
    def type_name(self) -> str:
        return _kind_name(self.kind)

    def coerce(self, value: Any) -> Any:
        """``value`` (text from the command line, or a Python/JSON value) as this option's type.

        Raises ValueError with a message naming the expected type.
        """
        kind = self.kind
        if typing.get_origin(kind) is tuple:
            item = typing.get_args(kind)[0]
            parts = (
                value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
            )
            return tuple(Option(self.name, item, None).coerce(p) for p in parts)
        if isinstance(value, str) and kind is not str:
            value = parse_value(value)
        if kind is None or kind is typing.Any:
            return value
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is int and isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
            return value
        raise ValueError(f"expected {self.type_name}, got {value!r}")

    def shown(self, value: Any) -> str:
        """How a value of this option is written on the command line."""
        if isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            return str(value).lower()
        return str(value)


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

    @property
    def closed_form(self) -> bool:
        """Fitted in closed form (fit / predict) rather than trained by gradient steps."""
        return not issubclass(self.cls, nn.Module)

    @property
    def can_be_causal(self) -> bool:
        return "causal" in self.options

    def with_defaults(self, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option of the model: ``given`` checked and typed, the others at their defaults."""
        unknown = [k for k in given if k not in self.options]
        if "causal" in unknown:
            causal = ", ".join(n for n in BUILTINS if "causal" in resolve_model(n).options)
            raise VafusionError(
                f"--causal: model {self.name!r} cannot run causally (it declares no 'causal' option); "
                f"drop --causal or choose a model that has it ({causal})"
            )
        if unknown:
            known = ", ".join(self.options) or "none"
            raise VafusionError(
                f"--model-option {unknown[0]}: model {self.name!r} has no such option; "
                f"its options: {known} (see `vafusion models`)"
            )
        options = {}
        for name, option in self.options.items():
            if name not in given:
                options[name] = option.default
                continue
            try:
                options[name] = option.coerce(given[name])
            except ValueError as e:
                raise VafusionError(f"--model-option {name}={option.shown(given[name])}: {e}") from None
        return options

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
                return self.cls([int(d) for d in dims], **options)
            except ValueError as e:
                raise VafusionError(f"model {self.name!r}: {e}; fix --model-option") from None


def _option_kinds(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the defaults' types
        return {}


def _kind_of(annotation: Any, default: Any) -> Any:
    if annotation in (int, float, bool, str):
        return annotation
    if typing.get_origin(annotation) is tuple:
        args = typing.get_args(annotation)
        if len(args) == 2 and args[1] is Ellipsis and args[0] in (int, float, bool, str):
            return annotation
    if type(default) in (int, float, bool, str):
        return type(default)
    return None


def _describe(cls: type, name: str, ref: str, origin: str) -> ModelSpec:
    """Read ``cls``'s declaration (see the module docstring); a VafusionError if it breaks the contract."""
    where = f"model {name!r} ({cls.__module__}.{cls.__qualname__})"
    if not issubclass(cls, nn.Module) and not all(callable(getattr(cls, m, None)) for m in CLOSED_FORM_METHODS):
        raise VafusionError(
            f"{where}: neither a torch.nn.Module nor fitted in closed form "
            f"({', '.join(CLOSED_FORM_METHODS)}); see README 'Writing your own model'"
        )
    params = list(inspect.signature(cls.__init__).parameters.values())[1:]
    if not params or params[0].kind not in (params[0].POSITIONAL_ONLY, params[0].POSITIONAL_OR_KEYWORD):
        raise VafusionError(f"{where}: the constructor must take dims first: __init__(self, dims, *, option=default)")
    kinds = _option_kinds(cls)
    helps = dict(getattr(cls, "option_help", {}) or {})
    options = {}
    for p in params[1:]:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.default is p.empty:
            raise VafusionError(f"{where}: constructor argument {p.name!r} has no default; every option needs one")
        try:
            json.dumps(p.default)
        except TypeError:
            raise VafusionError(
                f"{where}: option {p.name!r} has default {p.default!r}; options are stored in "
                f"config.json: use numbers, booleans, strings or tuples of them"
            ) from None
        kind = _kind_of(kinds.get(p.name), p.default)
        default = Option(p.name, kind, p.default).coerce(p.default) if kind is not None else p.default
        options[p.name] = Option(p.name, kind, default, str(helps.pop(p.name, "")))
    if helps:
        raise VafusionError(f"{where}: option_help names {sorted(helps)}, which are not constructor options")
    doc = inspect.getdoc(cls) or ""
    description = doc.strip().splitlines()[0] if doc.strip() else "(no description: give the class a docstring)"
    return ModelSpec(name, ref, cls, options, description, origin)


def _import_module(module: str, shown: str) -> Any:
    """Import ``module``; retried once with the current directory on sys.path (appended)."""
    for attempt in (0, 1):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            missing = e.name or ""
            ours = module == missing or module.startswith(missing + ".")
            if not ours:  # the plug-in imports something that is not installed
                raise VafusionError(
                    f"model {shown!r}: importing {module!r} failed ({e}); install what it needs"
                ) from None
            cwd = os.getcwd()
            if attempt == 0 and cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)
                continue
            raise VafusionError(
                f"model {shown!r}: cannot import module {module!r} ({e}); make {module!r} "
                f"importable: install its package, run from the folder that holds it, or add that "
                f"folder to PYTHONPATH"
            ) from None
        except VafusionError:
            raise
        except Exception as e:  # noqa: BLE001
            raise VafusionError(f"model {shown!r}: importing {module!r} raised {type(e).__name__}: {e}") from None
    raise AssertionError("unreachable")


def _load_class(ref: str, shown: str) -> type:
    module, _, attr = ref.partition(":")
    if not module.strip() or not attr.strip():
        raise VafusionError(f"--model {shown}: write package.module:Class")
    obj: Any = _import_module(module.strip(), shown)
    for part in attr.strip().split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise VafusionError(f"model {shown!r}: module {module!r} has no {attr!r}") from None
    if not isinstance(obj, type):
        raise VafusionError(f"model {shown!r}: {ref} is a {type(obj).__name__}, not a class")
    return obj


def _entry_points() -> dict[str, Any]:
    """Entry points of group ``vafusion.models`` by name (the first of a repeated name wins)."""
    found: dict[str, Any] = {}
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _from_entry_point(ep: Any) -> ModelSpec:
    dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"
    module, attr = ep.module, ep.attr
    if not attr:
        raise VafusionError(f"model {ep.name!r}: entry point {ep.value!r} of {dist} names no class (module:Class)")
    return _describe(_load_class(f"{module}:{attr}", ep.name), ep.name, f"{module}:{attr}", f"entry point of {dist}")


def resolve_model(name: str) -> ModelSpec:
    """The :class:`ModelSpec` for a built-in name, ``module:Class``, or an entry-point name."""
    name = str(name).strip()
    key = ALIASES.get(name, name)
    if key in BUILTINS:
        return _describe(_load_class(BUILTINS[key], key), key, key, "built-in")
    if ":" in name:
        return _describe(_load_class(name, name), name, name, "module")
    ep = _entry_points().get(name)
    if ep is not None:
        return _from_entry_point(ep)
    plugins = [n for n in _entry_points() if n not in BUILTINS and n not in ALIASES]
    known = ", ".join(BUILTINS) + (f"; installed plug-ins: {', '.join(plugins)}" if plugins else "")
    raise VafusionError(
        f"--model {name}: unknown model; built-ins: {known}; or give package.module:Class "
        f"(`vafusion models` lists them)"
    )


def list_models() -> tuple[list[ModelSpec], list[str]]:
    """Every built-in, then every installed plug-in (entry points); plus one line per broken plug-in."""
    specs = [resolve_model(n) for n in BUILTINS]
    problems = []
    for name, ep in sorted(_entry_points().items()):
        if name in BUILTINS or name in ALIASES:
            problems.append(f"entry point {name!r} ({ep.value}) is hidden by the built-in of that name")
            continue
        try:
            specs.append(_from_entry_point(ep))
        except VafusionError as e:
            problems.append(str(e))
    return specs, problems


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


def count_parameters(model: Any) -> int:
    """Trainable parameters of a module (weight-norm counts g and v); numbers in a closed-form state."""
    if is_closed_form(model):
        return int(sum(np.size(np.asarray(v)) for v in model.state_dict().values()))
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
