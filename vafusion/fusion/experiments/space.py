"""The search space of ``vafusion tune``: which settings a trial samples, in which ranges.

Why one place: the space comes from three sources that must agree, and every disagreement
should be one line naming the key. By default it is

- the model's options, as the model declares them (``option_space``, see
  :mod:`vafusion.fusion.models.registry`; plug-ins too), or, for a model that declares none,
  ranges derived from its numeric options' defaults (:func:`derived_space`);
- for a model trained by gradient steps, the training settings that matter most
  (:data:`TRAINING_SPACE`: learning rate log-uniform, weight decay, batch size, window),
  each range checked against the setting's own declared bounds (:mod:`vafusion.bounds`).

Settings given on the command line are fixed and leave the space. ``--space FILE`` (JSON) then
changes it key by key: ``{"low": L, "high": H[, "log": true][, "step": S]}`` sets a range,
``{"choices": [...]}`` a set of values, a plain value fixes the setting, ``null`` drops it (it
keeps its default). A key is a model option or a numeric data/training setting, spelt as in
``config.json`` (``lr``, ``weight_decay``, ``window``, ``d_model``).

A searched window takes the default hop-to-window ratio (``hop`` = 2/3 ``window``) unless
``--hop`` is given.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vafusion.bounds import bound_of
from vafusion.errors import VafusionError
from vafusion.fs import read_text
from vafusion.fusion.models.registry import ModelSpec
from vafusion.fusion.runs.config import DataConfig, FusionConfig, TrainingConfig, replace
from vafusion.plugins import Option

TRAINING_SPACE: dict[str, dict[str, Any]] = {
    "lr": {"low": 1e-4, "high": 1e-2, "log": True},
    "weight_decay": {"low": 1e-6, "high": 1e-2, "log": True},
    "batch_size": {"choices": [8, 16, 32]},
    "window": {"low": 100, "high": 400, "step": 50},
}
"""What a gradient-trained model's tuning searches besides the model's own options."""

# Numeric settings that describe the experiment, not the model; audio_where_speech decides which frames
# the trials see (the data a tune process reads once for all its trials).
NOT_TUNED = frozenset({"seed", "folds", "fold", "audio_where_speech"})
_RANGE_KEYS = frozenset({"low", "high", "log", "step"})
_DEFAULT_HOP_RATIO = DataConfig().hop / DataConfig().window


def _settings() -> dict[str, tuple[str, type]]:
    """Numeric data and training settings a space may name: ``name -> (part, int | float)``."""
    out: dict[str, tuple[str, type]] = {}
    for part, cls in (("data", DataConfig), ("training", TrainingConfig)):
        for f in dataclasses.fields(cls):
            if f.name not in NOT_TUNED and bound_of(cls, f.name) is not None:
                out[f.name] = (part, int if str(f.type).startswith("int") else float)
    return out


SETTINGS = _settings()


@dataclass(frozen=True)
class Param:
    """One searched setting: a range (``low``..``high``, ``log``, ``step``) or ``choices``.

    ``kind`` is ``int``, ``float`` or ``choice``; ``part`` says where the value goes (data,
    training, model). Choices that are lists (a tuple option's values) are sampled as their
    comma-separated text, which the model's declaration types back.
    """

    name: str
    part: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: Any) -> Any:
        """The value an Optuna trial samples for this setting."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.name, [_encode(c) for c in self.choices])
        if self.kind == "int":
            step = int(self.step or 1)
            return trial.suggest_int(self.name, int(self.low or 0), int(self.high or 0), step=step, log=self.log)
        return trial.suggest_float(self.name, float(self.low or 0), float(self.high or 0), step=self.step, log=self.log)

    def to_dict(self) -> dict[str, Any]:
        """The entry as ``--space`` takes it."""
        if self.kind == "choice":
            return {"choices": list(self.choices)}
        entry: dict[str, Any] = {"low": self.low, "high": self.high}
        if self.log:
            entry["log"] = True
        if self.step is not None:
            entry["step"] = self.step
        return entry

    def describe(self) -> str:
        """One line for ``--print-space``."""
        if self.kind == "choice":
            values = " | ".join(json.dumps(list(c) if isinstance(c, tuple) else c) for c in self.choices)
            return f"{self.name:<16} {self.part:<9} one of {values}"
        scale = " log" if self.log else ""
        step = f" step {self.step:g}" if self.step is not None else ""
        return f"{self.name:<16} {self.part:<9} {self.kind} {self.low:g} .. {self.high:g}{scale}{step}"


def _encode(choice: Any) -> Any:
    """A choice as Optuna stores it (numbers, booleans and text as they are; a list as ``"1,2,4"``)."""
    return ",".join(str(v) for v in choice) if isinstance(choice, (list, tuple)) else choice


@dataclass(frozen=True)
class Space:
    """The effective space: ``params`` searched, ``fixed`` values from ``--space`` (command-line values are in
    the base configuration already), ``hop_follows_window`` (hop = 2/3 window in every trial), ``dropped``
    (``null`` in ``--space``: left at their defaults)."""

    params: dict[str, Param]
    fixed: dict[str, Any]
    hop_follows_window: bool = False
    dropped: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "search": {n: p.to_dict() for n, p in self.params.items()},
            "fixed": dict(self.fixed),
            "hop_follows_window": self.hop_follows_window,
        }

    def as_space_file(self) -> dict[str, Any]:
        """The space as ``--space FILE`` takes it: with the same command line, that file gives this space."""
        return {
            **{n: p.to_dict() for n, p in self.params.items()},
            **self.fixed,
            **{n: None for n in self.dropped},
        }

    def dump(self) -> dict[str, Any]:
        """Everything, exactly (a ``--jobs`` worker gets the space this way); :meth:`load` reads it back."""
        params = [{**dataclasses.asdict(p), "choices": list(p.choices)} for p in self.params.values()]
        return {
            "params": params,
            "fixed": dict(self.fixed),
            "hop_follows_window": self.hop_follows_window,
            "dropped": list(self.dropped),
        }

    @classmethod
    def load(cls, d: Mapping[str, Any]) -> Space:
        params = [Param(**{**p, "choices": tuple(p["choices"])}) for p in d["params"]]
        return cls(
            {p.name: p for p in params}, dict(d["fixed"]), bool(d["hop_follows_window"]), tuple(d.get("dropped", ()))
        )

    def describe(self) -> list[str]:
        """``--print-space``: one line per searched setting, then the fixed ones."""
        lines = [p.describe() for p in self.params.values()] or ["(nothing searched)"]
        lines += [f"{k:<16} fixed     {json.dumps(v)}" for k, v in self.fixed.items()]
        if self.hop_follows_window:
            lines.append(f"{'hop':<16} data      follows window (hop = {_DEFAULT_HOP_RATIO:.3g} x window)")
        return lines

    def config(self, base: FusionConfig, values: Mapping[str, Any]) -> FusionConfig:
        """``base`` with the fixed values and a trial's sampled ``values`` applied (and checked)."""
        changes = {**self.fixed, **values}
        if self.hop_follows_window and "window" in changes:
            changes["hop"] = max(1, round(int(changes["window"]) * _DEFAULT_HOP_RATIO))
        return replace(base, **changes)


def derived_space(spec: ModelSpec) -> dict[str, dict[str, Any]]:
    """Ranges for a model that declares no ``option_space``: around each numeric option's default.

    An int option with default d >= 1 ranges over [max(1, d // 2), 2 d] (log scale from d = 8);
    a float with default d > 0 over [d / 10, 10 d] on a log scale, kept below 1 when d < 1 (a
    probability, say: its upper end is (1 + d) / 2). Booleans, text, tuples and options whose
    default is 0 or negative are not searched: declare ``option_space`` to search them.
    """
    out: dict[str, dict[str, Any]] = {}
    for name, option in spec.options.items():
        d = option.default
        if option.kind is int and isinstance(d, int) and not isinstance(d, bool) and d >= 1:
            out[name] = {"low": max(1, d // 2), "high": 2 * d, **({"log": True} if d >= 8 else {})}
        elif option.kind is float and isinstance(d, float) and d > 0:
            out[name] = {"low": d / 10, "high": (1 + d) / 2 if d < 1 else 10 * d, "log": True}
    return out


def read_space_file(path: Path) -> dict[str, Any]:
    """The JSON object of ``--space FILE``; not readable or not an object: one line naming the file."""
    text = read_text(path, "--space file")
    try:
        entries = json.loads(text)
    except json.JSONDecodeError as e:
        raise VafusionError(f"--space {path}: not valid JSON ({e})") from e
    if not isinstance(entries, dict):
        raise VafusionError(f'--space {path}: write a JSON object, e.g. {{"lr": {{"low": 1e-4, "high": 1e-2}}}}')
    return entries


def build_space(
    base: FusionConfig, given: set[str], entries: Mapping[str, Any] | None = None, where: str = "--space"
) -> Space:
    """The effective space of tuning ``base``: defaults less ``given`` (settings fixed on the command line), then
    ``entries`` (``--space``) applied key by key. A bad key or range is a VafusionError naming it."""
    spec = base.model.spec
    declared = spec.space if spec.space is not None else derived_space(spec)
    label = f"model {spec.name!r} option_space" if spec.space is not None else f"model {spec.name!r}"
    params: dict[str, Param] = {}
    for name, raw in declared.items():
        params[name] = _param(name, raw, spec, label)
    if not spec.closed_form:
        for name, raw in TRAINING_SPACE.items():
            params[name] = _param(name, raw, spec, "vafusion's training space")
    params = {n: p for n, p in params.items() if n not in given}
    fixed: dict[str, Any] = {}
    dropped: list[str] = []
    for name, raw in (entries or {}).items():
        _known(name, spec, where)
        if name in given:
            raise VafusionError(f"{where} {name}: also given on the command line; give it in one place")
        params.pop(name, None)
        if isinstance(raw, dict):
            params[name] = _param(name, raw, spec, where)
        elif raw is not None:
            fixed[name] = raw
        else:
            dropped.append(name)
    follows = "window" in params and "hop" not in given and "hop" not in params and "hop" not in fixed
    space = Space(params, fixed, follows, tuple(dropped))
    _check_window(space, base, where)
    space.config(base, {})  # the fixed values are checked now, not in the first trial
    return space


def _known(name: str, spec: ModelSpec, where: str) -> None:
    if name in spec.options or name in SETTINGS:
        return
    options = ", ".join(spec.options) or "none"
    raise VafusionError(
        f"{where} {name}: neither an option of model {spec.name!r} ({options}) nor a numeric data or training "
        f"setting ({', '.join(SETTINGS)})"
    )


def _check_window(space: Space, base: FusionConfig, where: str) -> None:
    """A searched window never goes below a fixed hop (a window holds at least one hop)."""
    window = space.params.get("window")
    if window is None or space.hop_follows_window or "hop" in space.params:
        return
    hop = int(space.fixed.get("hop", base.data.hop))
    lowest = min(window.choices) if window.kind == "choice" else window.low
    if lowest is not None and lowest < hop:
        raise VafusionError(
            f"{where} window: {lowest:g} is below --hop {hop} (hop <= window); raise the window's range or lower --hop"
        )


def _param(name: str, raw: Any, spec: ModelSpec, where: str) -> Param:
    """One entry (``{"low", "high", ...}`` or ``{"choices": [...]}``) read and checked against its setting."""
    if name in spec.options:
        part, option = "model", spec.options[name]
    else:
        part, kind = SETTINGS[name]
        option = Option(name, kind, None)
    if not isinstance(raw, dict):
        raise VafusionError(f'{where} {name}: write {{"low": L, "high": H}} or {{"choices": [...]}}')
    if "choices" in raw:
        return _choice(name, raw, part, option, where)
    unknown = sorted(set(raw) - _RANGE_KEYS)
    if unknown or "low" not in raw or "high" not in raw:
        what = f"unknown key {unknown[0]!r}" if unknown else "a range needs low and high"
        raise VafusionError(f'{where} {name}: {what}; write {{"low": L, "high": H[, "log": true][, "step": S]}}')
    if option.kind not in (int, float):
        raise VafusionError(
            f"{where} {name}: a range needs a numeric option ({name} is {option.type_name}); give its choices"
        )
    return _range(name, raw, part, option, where)


def _choice(name: str, raw: dict[str, Any], part: str, option: Option, where: str) -> Param:
    choices = raw["choices"]
    if set(raw) != {"choices"} or not isinstance(choices, list) or not choices:
        raise VafusionError(f'{where} {name}: write {{"choices": [v1, v2, ...]}} (a non-empty list, nothing else)')
    typed = []
    for value in choices:
        try:
            typed.append(option.coerce(value) if option.kind is not None else value)
        except ValueError as e:
            raise VafusionError(f"{where} {name}: choice {json.dumps(value)}: {e}") from e
        _in_bounds(name, part, typed[-1], where)
    return Param(name, part, "choice", choices=tuple(list(c) if isinstance(c, tuple) else c for c in typed))


def _range(name: str, raw: dict[str, Any], part: str, option: Option, where: str) -> Param:
    low, high, step, log = raw["low"], raw["high"], raw.get("step"), raw.get("log", False)
    numbers = [v for v in (low, high, step) if v is not None]
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in numbers):
        raise VafusionError(f"{where} {name}: low, high and step must be finite numbers")
    if option.kind is int and not all(float(v).is_integer() for v in numbers):
        raise VafusionError(f"{where} {name}: {name} is a whole number; low, high and step must be too")
    if not isinstance(log, bool):
        raise VafusionError(f"{where} {name}: log must be true or false")
    if not low < high:
        raise VafusionError(f"{where} {name}: low {low:g} must be below high {high:g}")
    if log and low <= 0:
        raise VafusionError(f"{where} {name}: a log scale needs low > 0 (low is {low:g})")
    if step is not None and (step <= 0 or log):
        raise VafusionError(f"{where} {name}: step must be > 0 and cannot go with log")
    for value in (low, high):
        _in_bounds(name, part, value, where)
    kind = "int" if option.kind is int else "float"
    cast = int if kind == "int" else float
    return Param(name, part, kind, cast(low), cast(high), log, None if step is None else cast(step))


def _in_bounds(name: str, part: str, value: Any, where: str) -> None:
    """A data or training setting's value inside the range its dataclass field declares."""
    if part == "model":
        return
    declared = bound_of(DataConfig if part == "data" else TrainingConfig, name)
    problem = declared.problem(value) if declared is not None else None
    if problem:
        raise VafusionError(f"{where} {name}: {problem}")


__all__ = ["SETTINGS", "TRAINING_SPACE", "Param", "Space", "build_space", "derived_space", "read_space_file"]
