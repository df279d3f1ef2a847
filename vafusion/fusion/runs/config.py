"""Every choice of a stage-2 run, saved as ``config.json`` in the run directory.

Three parts, because they vary independently and belong to different owners:

- :class:`DataConfig`: what the model sees (feature sets, windows, which ids train and
  validate); the same for every model of a comparison;
- :class:`ModelConfig`: which model and its options; the options are the model's own
  declaration (its constructor, see :mod:`vafusion.fusion.models`), never fields here;
- :class:`TrainingConfig`: how it is fitted (epochs, batch size, learning rate, schedule, windows,
  stopping, temporal stride, seed, device).

One place for defaults means the CLI, the library, checkpoints and reports cannot disagree
about what a run did. A ``ModelConfig`` always holds *every* option of its model (defaults
filled in, typed), so a run records what it used even if a later version changes a default.
Configurations of version 1 (one flat dataclass, ``model: "fusion" | "ridge"``) are read
and converted, so old run directories keep working.

Recipes: the training defaults are the ``fast`` recipe (chosen for time to quality,
BENCHMARKS.md section 12); ``v1`` is the recipe of every run before it (30 epochs of batch 16 at
1e-3 on a fixed grid of windows of every frame, ``v1`` schedule, patience 8), kept so earlier results
reproduce: ``make_config(recipe="v1")``, ``--recipe v1``. A saved configuration that predates a
training setting (it has no ``windows`` key, say) gets the ``v1`` value of that setting, which
is what the run used; those settings are listed in :attr:`FusionConfig.implied`, and a resume
takes them from the run (:mod:`vafusion.fusion.run_dir`).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vafusion.atomic import atomic_path
from vafusion.bounds import bound, check_bounds
from vafusion.errors import VafusionError
from vafusion.fusion.models.registry import DEFAULT_MODEL, V1_MODEL_FIELDS, ModelSpec, model_from_v1, resolve_model
from vafusion.fusion.runs.schedule import SCHEDULES

CONFIG_FILE = "config.json"
CONFIG_VERSION = 2


SPLITS = ("official", "folds")
WINDOWS = ("random", "grid")  # training windows: a grid shifted at random per epoch and video, or the fixed grid
SEED_RANGE = bound(0, 2**32 - 1)  # what every RNG vafusion seeds (numpy, torch) accepts


@dataclass
class DataConfig:
    """Numeric fields carry their range (:mod:`vafusion.bounds`): checked here, and the CLI options' types."""

    features: tuple[str, ...] = ("resnet50", "vggish", "logmel")  # first = visual query stream
    window: int = field(default=300, metadata=bound(1))
    hop: int = field(default=200, metadata=bound(1))
    # split="official" (Train_Set / Validation_Set) or "folds" (groups of both, fold K of N validates)
    split: str = "official"
    folds: int = field(default=6, metadata=bound(2))
    fold: int = field(default=1, metadata=bound(1))
    # audio streams absent where the cache's vad (speech probability) is below this; None: never
    audio_where_speech: float | None = field(default=None, metadata=bound(0, 1, optional=True))

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        problems = check_bounds(self)
        if not self.features or not all(isinstance(f, str) and f.strip() for f in self.features):
            problems.append(
                f"--features {','.join(map(str, self.features))!r}: name at least one feature set, "
                f"comma-separated (e.g. resnet50,vggish)"
            )
        if not problems and self.hop > self.window:
            problems.append(
                f"--hop {self.hop}: more than --window {self.window} (frames between windows would "
                f"never be trained on); need hop <= window"
            )
        if self.split not in SPLITS:
            problems.append(f"--split {self.split!r}: use one of {', '.join(SPLITS)}")
        if not problems and self.split == "folds" and self.fold > self.folds:
            problems.append(f"--fold {self.fold}: there are only {self.folds} folds (--folds); use 1..{self.folds}")
        if problems:
            raise VafusionError("invalid configuration: " + "; ".join(problems))


@dataclass
class TrainingConfig:
    """Numeric fields carry their range (:mod:`vafusion.bounds`): checked here, and the CLI options' types.

    The defaults are the ``fast`` recipe; :func:`training_recipe` gives another recipe's.
    """

    epochs: int = field(default=10, metadata=bound(1))
    batch_size: int = field(default=8, metadata=bound(1))
    lr: float = field(default=3e-3, metadata=bound(0, low_open=True))
    weight_decay: float = field(default=1e-4, metadata=bound(0))
    mse_weight: float = field(default=0.0, metadata=bound(0))
    patience: int = field(default=3, metadata=bound(1))
    grad_clip: float = field(default=1.0, metadata=bound(0))  # 0 = no clipping
    seed: int = field(default=0, metadata=SEED_RANGE)
    device: str = "auto"
    amp: bool = True  # only used on CUDA
    schedule: str = "cosine"  # .schedule.SCHEDULES
    windows: str = "random"  # WINDOWS
    min_epochs: int = field(default=4, metadata=bound(1))  # no early stop before this epoch
    # the model sees every stride-th frame, in training and in every prediction (window and hop count those
    # frames); training takes one phase per video and epoch, predictions interleave all phases
    stride: int = field(default=2, metadata=bound(1))

    def __post_init__(self) -> None:
        problems = check_bounds(self)
        if self.schedule not in SCHEDULES:
            problems.append(f"--schedule {self.schedule!r}: use one of {', '.join(SCHEDULES)}")
        if self.windows not in WINDOWS:
            problems.append(f"--windows {self.windows!r}: use one of {', '.join(WINDOWS)}")
        if problems:
            raise VafusionError("invalid configuration: " + "; ".join(problems))


RECIPES: dict[str, dict[str, Any]] = {
    "fast": {},  # TrainingConfig's defaults
    "v1": dict(
        epochs=30, batch_size=16, lr=1e-3, patience=8, schedule="v1", windows="grid", min_epochs=1, stride=1
    ),  # every run before the fast recipe
}
"""Recipe name -> the TrainingConfig settings it changes from the defaults."""
LEGACY_TRAINING = {k: RECIPES["v1"][k] for k in ("schedule", "windows", "min_epochs", "stride")}
"""Settings added with (or after) the fast recipe, as runs that predate them used them."""


def training_recipe(recipe: str = "fast", **settings: Any) -> TrainingConfig:
    """A TrainingConfig of ``recipe`` (:data:`RECIPES`), with ``settings`` (None = the recipe's) over it."""
    if recipe not in RECIPES:
        raise VafusionError(f"--recipe {recipe!r}: use one of {', '.join(RECIPES)}")
    given = {k: v for k, v in settings.items() if v is not None}
    return TrainingConfig(**{**RECIPES[recipe], **given})


@dataclass
class ModelConfig:
    """A model reference (built-in name or ``module:Class``) and all its options, checked and typed."""

    name: str = DEFAULT_MODEL
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        spec = resolve_model(self.name)
        self.name = spec.ref
        self.options = spec.with_defaults(self.options)

    @property
    def spec(self) -> ModelSpec:
        return resolve_model(self.name)


@dataclass
class FusionConfig:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # ``part.key`` of settings a saved configuration did not record (it predates them): they hold the
    # values that run used (LEGACY_TRAINING), and a resume takes them from the run, not from the caller
    implied: tuple[str, ...] = field(default=(), compare=False, repr=False)

    def build_model(self, dims: list[int]) -> Any:
        """The model this configuration names, for feature widths ``dims``; weights from ``training.seed``."""
        return self.model.spec.build(dims, self.model.options, self.training.seed)

    def differences(self, other: FusionConfig) -> list[str]:
        """Settings (``part.key``) in which ``other`` describes another experiment than this one.

        ``training.device`` is not one of them: a run may continue on another device.
        """
        mine, theirs = self.flat(), other.flat()
        keys = sorted(set(mine) | set(theirs))
        return [k for k in keys if k != "training.device" and mine.get(k) != theirs.get(k)]

    def flat(self) -> dict[str, Any]:
        """Every setting by ``part.key`` (``model.options.d_model``), tuples as lists: what a message names."""
        return _flat(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        return {
            "config_version": CONFIG_VERSION,
            "data": dataclasses.asdict(self.data),
            "model": {"name": self.model.name, "options": dict(self.model.options)},
            "training": dataclasses.asdict(self.training),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FusionConfig:
        version = data.get("config_version")
        if version == 1:
            return _from_v1(data)
        if version != CONFIG_VERSION:
            raise VafusionError(
                f"run configuration version {version!r}, this vafusion reads 1 and {CONFIG_VERSION}; "
                f"retrain with this version"
            )
        unknown = sorted(set(data) - {"config_version", "data", "model", "training"})
        if unknown:
            raise VafusionError(f"run configuration has unknown keys {unknown}; made by another vafusion version?")
        training = data.get("training", {})
        implied = tuple(f"training.{k}" for k in LEGACY_TRAINING if k not in training)
        try:
            return cls(
                DataConfig(**data.get("data", {})),
                ModelConfig(**data.get("model", {})),
                TrainingConfig(**{**LEGACY_TRAINING, **training}),
                implied,
            )
        except TypeError as e:
            raise VafusionError(f"run configuration does not fit this version ({e}); made by another version?") from e

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> FusionConfig:
        path = Path(run_dir) / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError as e:
            raise VafusionError(
                f"{path}: no run configuration; is {run_dir} a run directory of `vafusion train`?"
            ) from e
        except json.JSONDecodeError as e:
            raise VafusionError(f"{path}: not valid JSON ({e}); the run directory is damaged") from e
        return cls.from_dict(data)


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


_DATA_FIELDS = frozenset(f.name for f in dataclasses.fields(DataConfig))
_TRAINING_FIELDS = frozenset(f.name for f in dataclasses.fields(TrainingConfig))


def _from_v1(flat: dict[str, Any]) -> FusionConfig:
    """A config_version 1 configuration (one flat dataclass) as three parts."""
    known = _DATA_FIELDS | _TRAINING_FIELDS | V1_MODEL_FIELDS | {"config_version"}
    unknown = sorted(set(flat) - known)
    if unknown:
        raise VafusionError(f"run configuration (version 1) has unknown keys {unknown}; the run directory is damaged")
    name, options = model_from_v1(flat)
    return FusionConfig(
        DataConfig(**{k: v for k, v in flat.items() if k in _DATA_FIELDS}),
        ModelConfig(name, options),
        TrainingConfig(**{**LEGACY_TRAINING, **{k: v for k, v in flat.items() if k in _TRAINING_FIELDS}}),
        tuple(f"training.{k}" for k in LEGACY_TRAINING),
    )


def make_config(
    model: str = DEFAULT_MODEL, options: dict[str, Any] | None = None, *, recipe: str = "fast", **settings: Any
) -> FusionConfig:
    """A :class:`FusionConfig` from flat keyword settings, each routed to its part.

    Data and training fields by name (training settings not given: those of ``recipe``,
    :data:`RECIPES`); every other keyword is an option of ``model`` (as are the entries of
    ``options``), checked against the model's declaration::

        make_config(features=("resnet50", "vggish"), epochs=20, model="imf", d_model=64)
    """
    data = {k: v for k, v in settings.items() if k in _DATA_FIELDS}
    training = {k: v for k, v in settings.items() if k in _TRAINING_FIELDS}
    model_options = {k: v for k, v in settings.items() if k not in _DATA_FIELDS and k not in _TRAINING_FIELDS}
    return FusionConfig(
        DataConfig(**data),
        ModelConfig(model, {**(options or {}), **model_options}),
        training_recipe(recipe, **training),
    )


def replace(config: FusionConfig, model: str | None = None, **changes: Any) -> FusionConfig:
    """A copy with flat ``changes`` (routed as in :func:`make_config`) applied and validated again.

    A new ``model`` starts from that model's defaults (options of the old one do not carry over).
    """
    data = {**dataclasses.asdict(config.data), **{k: v for k, v in changes.items() if k in _DATA_FIELDS}}
    training = {**dataclasses.asdict(config.training), **{k: v for k, v in changes.items() if k in _TRAINING_FIELDS}}
    options = {} if model is not None else dict(config.model.options)
    options.update({k: v for k, v in changes.items() if k not in _DATA_FIELDS and k not in _TRAINING_FIELDS})
    return FusionConfig(
        DataConfig(**data), ModelConfig(model or config.model.name, options), TrainingConfig(**training)
    )


__all__ = [
    "CONFIG_FILE",
    "RECIPES",
    "DataConfig",
    "FusionConfig",
    "ModelConfig",
    "TrainingConfig",
    "make_config",
    "replace",
    "training_recipe",
]
