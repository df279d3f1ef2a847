"""The one loader of plug-ins, for every kind: extractors, models, face detectors, post-processing steps.

A registry knows its built-in names; everything else about finding, importing and calling code
that vafusion did not write is here, so that every kind follows the same rules (README,
"Plug-ins: the common rules"):

* **Naming.** A plug-in is named by a built-in name, by ``package.module:attribute`` (an
  attribute path, e.g. ``mod:Outer.Inner``), or by the name an installed distribution declares
  under the kind's entry-point group (:data:`EXTRACTORS`, :data:`MODELS`, :data:`DETECTORS`,
  :data:`POST_STEPS`).
* **Importing.** The module is imported as Python would; when the module itself is not found,
  the current directory is appended to ``sys.path`` and it is tried once more (the
  ``vafusion`` script does not put it there), so a ``my_plugin.py`` beside the user just
  works. A module that is found but imports something missing is named with what to install;
  any other exception raised while importing it is named with its type.
* **Entry points.** A built-in name wins over an entry point of the same name (listings name
  the hidden entry point). One name declared by two distributions for different targets is
  an error naming both (``package.module:attribute`` chooses one); for the same target it is
  one plug-in.
* **Unknown names** are one line with the closest names ("did you mean"), the built-ins,
  the installed plug-ins and the ``module:attribute`` form.
* **Options** are the keyword parameters of the class's constructor or of the factory
  function: an annotation (``int``, ``float``, ``bool``, ``str``, ``tuple[X, ...]``, or a
  union of them and ``None``) types the value, else the default's type does, else the
  generic rule applies (int, float, true/false, else text). Text from the command line is
  typed accordingly; an option the callable does not declare is an error, unless it takes
  ``**kwargs``, which receive the text as given.

Every failure is a :class:`~vafusion.errors.VafusionError` of one line that names the plug-in
(and the option) and says what to fix; the original exception is its ``__cause__``. A plug-in
that calls ``sys.exit()`` (at import, in its constructor, or when called) has failed like one
that raised (:data:`FOREIGN`): it may not end the run with its own exit code and no message.

This module sits on top of the layers (it imports nothing from ``extract/``, ``fusion/`` or
``cache/``, and no torch), so that every layer may use it.
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata
import inspect
import os
import sys
import types
import typing
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from vafusion.errors import VafusionError

T = TypeVar("T")  # what a listing makes of each installed plug-in

FOREIGN = (Exception, SystemExit)
"""What code vafusion did not write may raise and still only fail itself: any exception, and
``sys.exit()`` (KeyboardInterrupt still stops the run)."""


def failure(e: BaseException) -> str:
    """How a message tells what foreign code did: ``raised TypeError: text`` or ``called sys.exit(3)``."""
    if isinstance(e, SystemExit):
        return f"called sys.exit({e.code!r}) (a plug-in must raise an exception, not end the process)"
    text = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
    return f"raised {type(e).__name__}{': ' + text if text else ''}"


# ---- kinds ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kind:
    """A kind of plug-in: how messages call it, its entry-point group, and how ``module:attr`` reads."""

    noun: str  # "extractor", "model", ...
    group: str  # the entry-point group
    form: str  # what a module:attr reference names, e.g. "package.module:Class"
    listing: str = ""  # where the user sees them all, e.g. "`vafusion models`"


EXTRACTORS = Kind("extractor", "vafusion.extractors", "package.module:attribute", "`vafusion features`")
MODELS = Kind("model", "vafusion.models", "package.module:Class", "`vafusion models`")
DETECTORS = Kind("face detector", "vafusion.detectors", "package.module:attribute")
POST_STEPS = Kind("post-processing step", "vafusion.post", "package.module:attribute")
KINDS = (EXTRACTORS, MODELS, DETECTORS, POST_STEPS)


def who(kind: Kind, name: str, origin: str = "") -> str:
    """How a message names a plug-in: ``model 'my_model:MyFusion'`` (plus its origin if given)."""
    return f"{kind.noun} {name!r}" + (f" ({origin})" if origin else "")


# ---- module:attr ---------------------------------------------------------------------------


def split_ref(ref: str, kind: Kind, shown: str | None = None) -> tuple[str, str]:
    """``"package.module:attr.sub"`` -> ``("package.module", "attr.sub")``; a malformed one is an error."""
    module, sep, attr = ref.partition(":")
    module, attr = module.strip(), attr.strip()
    if not sep or not module or not attr or not all(p.isidentifier() for p in [*module.split("."), *attr.split(".")]):
        raise VafusionError(f"{who(kind, shown or ref)}: write {kind.form}")
    return module, attr


def _own_module_missing(error: ModuleNotFoundError, module: str) -> bool:
    """The module named (or a package above it) is not found, as opposed to something it imports."""
    missing = error.name or ""
    return bool(missing) and (module == missing or module.startswith(missing + "."))


def import_module(module: str, label: str) -> types.ModuleType:
    """Import ``module`` for the plug-in ``label`` names; retried once with the current directory on sys.path."""
    for attempt in (0, 1):
        try:
            return importlib.import_module(module)
        except ModuleNotFoundError as e:
            if not _own_module_missing(e, module):
                raise VafusionError(f"{label}: importing {module!r} failed ({e}); install what it needs") from e
            cwd = os.getcwd()
            if attempt == 0 and cwd not in sys.path and "" not in sys.path:
                sys.path.append(cwd)
                importlib.invalidate_caches()
                continue
            raise VafusionError(
                f"{label}: cannot import module {module!r} ({e}); make {module!r} importable: install its "
                f"package, run from the folder that holds it, or add that folder to PYTHONPATH"
            ) from e
        except VafusionError:
            raise
        except FOREIGN as e:  # the plug-in's own module failed (or exited) while importing
            raise VafusionError(f"{label}: importing {module!r} {failure(e)}") from e
    raise AssertionError("unreachable")


def import_object(ref: str, kind: Kind, label: str | None = None) -> Any:
    """The object ``package.module:attr.sub`` names; ``label`` (default: ``who(kind, ref)``) starts each error."""
    label = label or who(kind, ref)
    module_name, attr = split_ref(ref, kind)
    obj: Any = import_module(module_name, label)
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as e:
            raise VafusionError(f"{label}: module {module_name!r} has no attribute {attr!r}; check the name") from e
    return obj


# ---- entry points and names ----------------------------------------------------------------


def _declared(kind: Kind) -> dict[str, list[importlib.metadata.EntryPoint]]:
    found: dict[str, list[importlib.metadata.EntryPoint]] = {}
    for ep in importlib.metadata.entry_points(group=kind.group):
        found.setdefault(ep.name, []).append(ep)
    return found


def _dist(ep: importlib.metadata.EntryPoint) -> str:
    return getattr(getattr(ep, "dist", None), "name", None) or "an installed distribution"


def _one(kind: Kind, name: str, eps: list[importlib.metadata.EntryPoint]) -> importlib.metadata.EntryPoint:
    """The entry point of ``name``; declared for two different targets it is an error naming both."""
    targets = {ep.value: ep for ep in eps}
    if len(targets) > 1:
        both = ", ".join(f"{value} ({_dist(ep)})" for value, ep in sorted(targets.items()))
        raise VafusionError(
            f"{who(kind, name)}: entry point declared by two distributions ({both}) in group {kind.group}; "
            f"name the one you mean as {kind.form}, or uninstall one"
        )
    return eps[0]


def entry_point_names(kind: Kind, builtins: Collection[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """Installed plug-ins usable by name (sorted), and ``(name, one line)`` per entry point that is not."""
    usable: list[str] = []
    problems: list[tuple[str, str]] = []
    for name, eps in sorted(_declared(kind).items()):
        if name in builtins:
            problems += [
                (name, f"entry point {name!r} ({ep.value}) is hidden by the built-in of that name") for ep in eps
            ]
            continue
        try:
            _one(kind, name, eps)
        except VafusionError as e:
            problems.append((name, str(e)))
            continue
        usable.append(name)
    return usable, problems


@dataclass(frozen=True)
class Found:
    """A resolved plug-in name: the object, how configurations store it, where it came from."""

    name: str  # as listed (a built-in's own name when it was named by an alias)
    ref: str  # a built-in's name, else package.module:attribute
    obj: Any  # the built-in table's value, or the imported attribute
    origin: str  # "built-in", "module", or "entry point of <distribution>"

    @property
    def builtin(self) -> bool:
        return self.origin == "built-in"


def declares(kind: Kind, name: str) -> bool:
    """An installed distribution declares ``name`` in the kind's group (nothing is imported)."""
    return name in _declared(kind)


def load_entry_point(kind: Kind, name: str) -> Found:
    """Import the plug-in an installed distribution declares as ``name`` (see :func:`find`)."""
    eps = _declared(kind).get(name)
    if not eps:
        raise VafusionError(f"{who(kind, name)}: no installed distribution declares it in group {kind.group}")
    ep = _one(kind, name, eps)
    origin = f"entry point of {_dist(ep)}"
    if not ep.attr:
        raise VafusionError(f"{who(kind, name, origin)}: entry point {ep.value!r} names no attribute ({kind.form})")
    ref = f"{ep.module}:{ep.attr}"
    return Found(name, ref, import_object(ref, kind, who(kind, name, origin)), origin)


def installed(
    kind: Kind, builtins: Collection[str], describe: Callable[[Found], T]
) -> tuple[list[T], list[tuple[str, str]]]:
    """Every installed plug-in of ``kind`` described by ``describe`` (each imported), and ``(name, one line)``
    per entry point that cannot be used: hidden by a built-in, declared twice, not importable, or refused by
    ``describe`` (a :class:`VafusionError`). What the listings (``vafusion models``, ``vafusion features``) show."""
    names, problems = entry_point_names(kind, builtins)
    described: list[T] = []
    for name in names:
        try:
            described.append(describe(load_entry_point(kind, name)))
        except VafusionError as e:
            problems.append((name, str(e)))
    return described, sorted(problems, key=lambda p: p[0])


def unknown(
    kind: Kind, name: str, builtins: Collection[str], flag: str = "", aliases: Collection[str] = ()
) -> VafusionError:
    """The error for a name that is neither a built-in, ``module:attr`` nor an installed plug-in."""
    plugins, _ = entry_point_names(kind, [*builtins, *aliases])
    close = difflib.get_close_matches(name, [*builtins, *aliases, *plugins], n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    installed = f"; installed plug-ins: {', '.join(plugins)}" if plugins else ""
    listing = f" ({kind.listing} lists them)" if kind.listing else ""
    start = f"{flag} {name}: unknown {kind.noun}" if flag else f"unknown {kind.noun} {name!r}"
    return VafusionError(
        f"{start}{hint}; built-ins: {', '.join(builtins)}{installed}; or give {kind.form} for your own{listing}"
    )


def find(
    kind: Kind, name: str, builtins: Mapping[str, Any], aliases: Mapping[str, str] | None = None, flag: str = ""
) -> Found:
    """Resolve a name: a built-in (or an alias of one), ``module:attr``, or an installed plug-in.

    A built-in's :attr:`Found.obj` is its value in ``builtins``, unimported; the caller decides
    what that value is (a ``module:attr`` string, a family object ...).
    """
    name = str(name).strip()
    key = (aliases or {}).get(name, name)
    if key in builtins:
        return Found(key, key, builtins[key], "built-in")
    if ":" in name:
        return Found(name, name, import_object(name, kind), "module")
    if declares(kind, name):
        return load_entry_point(kind, name)
    raise unknown(kind, name, list(builtins), flag, list(aliases or {}))


# ---- options -------------------------------------------------------------------------------

SCALARS = (int, float, bool, str)
_NONE = type(None)


def parse_value(text: str) -> Any:
    """Command-line text as int, float, true/false, else the string itself (the untyped rule)."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def _members(kind: Any) -> tuple[Any, ...]:
    """The types a union accepts (``int | None`` -> ``(int, NoneType)``); a plain type alone."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        return typing.get_args(kind)
    return (kind,)


def _is_tuple(kind: Any) -> bool:
    return typing.get_origin(kind) is tuple


def _kind_name(kind: Any) -> str:
    if kind is None:
        return "any"
    if _is_tuple(kind):
        return f"tuple[{_kind_name(typing.get_args(kind)[0])}, ...]"
    members = _members(kind)
    if len(members) > 1:
        return " | ".join("None" if m is _NONE else _kind_name(m) for m in members)
    return getattr(kind, "__name__", str(kind))


_NO = object()


def _as(kind: type, value: Any) -> Any:
    """``value`` as ``kind`` where that loses nothing (2.0 as int, 2 as float); else ``_NO``."""
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind is bool:
        return value if isinstance(value, bool) else _NO
    if kind is int:
        if number and float(value).is_integer():
            return int(value)
        return _NO
    if kind is float:
        return float(value) if number else _NO
    return value if isinstance(value, kind) else _NO


@dataclass(frozen=True)
class Option:
    """One option of a plug-in: its name, type (None: unannotated), default and help."""

    name: str
    kind: Any
    default: Any
    help: str = ""
    required: bool = False  # no default: the caller must give it

    @property
    def type_name(self) -> str:
        return _kind_name(self.kind)

    def coerce(self, value: Any) -> Any:
        """``value`` (text from the command line, or a Python/JSON value) as this option's type.

        Raises ValueError with a message naming the expected type.
        """
        kind = self.kind
        if _is_tuple(kind):
            item = typing.get_args(kind)[0]
            parts = (
                value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
            )
            return tuple(Option(self.name, item, None).coerce(p) for p in parts)
        original = value
        if isinstance(value, str) and kind is not str:
            value = parse_value(value)
        if kind is None or kind is typing.Any:
            return value
        members = _members(kind)
        if value is None and _NONE in members:
            return None
        typed = [m for m in members if m is not _NONE and m is not str]
        for convert in (lambda m, v: v if type(v) is m else _NO, _as):  # an exact type first, then conversions
            for member in typed:
                result = convert(member, value)
                if result is not _NO:
                    return result
        if str in members and isinstance(original, str):
            return original
        raise ValueError(f"expected {self.type_name}, got {value!r}")


def shown(value: Any) -> str:
    """How a value is written on the command line: ``1,2,4`` for a sequence, ``true`` for a bool."""
    if isinstance(value, (tuple, list)):
        return ",".join(str(v) for v in value)
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


@dataclass(frozen=True)
class Declared:
    """What a callable declares: its options by name, and whether it takes ``**kwargs``."""

    options: Mapping[str, Option]
    extra: bool


def parameters(obj: Callable[..., Any]) -> list[inspect.Parameter]:
    """The parameters a call of ``obj`` takes (a class: its constructor's, without ``self``)."""
    return list(inspect.signature(obj).parameters.values())


def _hints(obj: Any) -> dict[str, Any]:
    """Resolved annotations of ``obj``'s parameters (a class: of its constructor)."""
    if isinstance(obj, type):
        obj = vars(obj).get("__init__") or next(
            (vars(base)["__init__"] for base in obj.__mro__ if "__init__" in vars(base)), None
        )
    try:
        return typing.get_type_hints(obj)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: fall back to the defaults' types
        return {}


def _typed(annotation: Any) -> bool:
    """An annotation the options can type by: a scalar, ``tuple[scalar, ...]``, a union of scalars and None."""
    if annotation in SCALARS:
        return True
    if _is_tuple(annotation):
        args = typing.get_args(annotation)
        return len(args) == 2 and args[1] is Ellipsis and args[0] in SCALARS
    members = _members(annotation)
    return len(members) > 1 and all(m in SCALARS or m is _NONE for m in members)


def _kind_of(annotation: Any, default: Any) -> Any:
    if _typed(annotation):
        return annotation
    if type(default) in SCALARS:
        return type(default)
    return None


def declared_options(obj: Callable[..., Any], label: str, skip: int = 0) -> Declared:
    """The options ``obj`` declares: its keyword parameters after the first ``skip`` positional ones.

    A default that does not fit its own annotation is an error naming the plug-in (``label``).
    A callable whose signature cannot be read declares nothing and takes anything (as text).
    """
    try:
        params = parameters(obj)[skip:]
    except (TypeError, ValueError):
        return Declared({}, True)
    hints = _hints(obj)
    options: dict[str, Option] = {}
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.POSITIONAL_ONLY):
            continue
        required = p.default is p.empty
        default = None if required else p.default
        kind = _kind_of(hints.get(p.name), default)
        if kind is not None and not required:
            try:
                default = Option(p.name, kind, default).coerce(default)
            except ValueError as e:
                raise VafusionError(
                    f"{label}: option {p.name!r} has default {p.default!r}, not a {_kind_name(kind)}; "
                    f"fix its annotation or default"
                ) from e
        options[p.name] = Option(p.name, kind, default, required=required)
    return Declared(options, any(p.kind is p.VAR_KEYWORD for p in params))


def typed_options(label: str, declared: Declared, given: Mapping[str, Any], flag: str, see: str = "") -> dict[str, Any]:
    """``given`` (text or values) checked against ``declared`` and typed; only the given ones.

    ``flag`` is how the user sets one, up to the key (``"--model-option "``,
    ``"--extractor-option resnet50."``); ``see`` ends the unknown-option message.
    """
    out: dict[str, Any] = {}
    for key, value in given.items():
        option = declared.options.get(key)
        if option is None:
            if declared.extra:
                out[key] = value
                continue
            known = ", ".join(declared.options) or "none"
            raise VafusionError(f"{flag}{key}: {label} has no such option; its options: {known}{see}")
        try:
            out[key] = option.coerce(value)
        except ValueError as e:
            raise VafusionError(f"{flag}{key}={shown(value)}: {e}") from e
    missing = [o.name for o in declared.options.values() if o.required and o.name not in given]
    if missing:
        raise VafusionError(f"{label}: option {missing[0]!r} has no default; give {flag}{missing[0]}=VALUE")
    return out


def call(label: str, factory: Callable[..., Any], kwargs: Mapping[str, Any], error: type[VafusionError]) -> Any:
    """``factory(**kwargs)``; anything foreign code raises becomes one ``error`` line naming the plug-in."""
    try:
        return factory(**kwargs)
    except VafusionError:
        raise
    except FOREIGN as e:  # any failure of foreign code (sys.exit included) becomes one line
        given = f" with {', '.join(sorted(kwargs))}" if kwargs else ""
        raise error(f"{label}: building it{given} {failure(e)}") from e


__all__ = [
    "DETECTORS",
    "EXTRACTORS",
    "FOREIGN",
    "KINDS",
    "MODELS",
    "POST_STEPS",
    "Declared",
    "Found",
    "Kind",
    "Option",
    "call",
    "declared_options",
    "declares",
    "entry_point_names",
    "failure",
    "find",
    "import_module",
    "import_object",
    "load_entry_point",
    "parameters",
    "parse_value",
    "shown",
    "split_ref",
    "typed_options",
    "unknown",
    "who",
]
