"""Every choice of a stage-2 run in one dataclass, saved as ``config.json`` in the run directory.

One place for defaults means the CLI, the library, checkpoints and reports cannot disagree
about what a run did.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vafusion.errors import VafusionError

CONFIG_FILE = "config.json"
CONFIG_VERSION = 1


@dataclass
class FusionConfig:
    # data
    features: tuple[str, ...] = ("resnet50", "vggish", "logmel")  # first = visual query stream
    window: int = 300
    hop: int = 200
    # folds: split="official" (Train_Set / Validation_Set) or "folds" (groups of both, K of N)
    split: str = "official"
    folds: int = 6
    fold: int = 1
    # model
    model: str = "fusion"  # "fusion" | "ridge"
    d_model: int = 128
    tcn_kernel: int = 5
    tcn_dilations: tuple[int, ...] = (1, 2, 4, 8)
    causal: bool = False
    dropout: float = 0.2
    heads: int = 4
    head_hidden: int = 64
    attn_distance_bias: bool = True  # attention bias -slope_h*|t-s|: queries find their own instant
    # ridge baseline
    ridge_alpha: float = 10.0
    ridge_context: int = 1  # frames averaged (centred) before the per-frame ridge
    ridge_max_frames: int = 200_000  # labelled frames the ridge fits on at most (seeded subsample)
    # training
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 1e-4
    mse_weight: float = 0.0
    patience: int = 8
    grad_clip: float = 1.0
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # only used on CUDA
    config_version: int = CONFIG_VERSION

    def __post_init__(self) -> None:
        self.features = tuple(self.features)
        self.tcn_dilations = tuple(int(d) for d in self.tcn_dilations)
        problems = []
        if not self.features:
            problems.append("features: name at least one feature set")
        if self.window < 1 or self.hop < 1 or self.hop > self.window:
            problems.append(f"window/hop: need 1 <= hop <= window, got window={self.window} hop={self.hop}")
        if self.split not in ("official", "folds"):
            problems.append(f"split: 'official' or 'folds', got {self.split!r}")
        if self.split == "folds" and not (self.folds >= 2 and 1 <= self.fold <= self.folds):
            problems.append(f"fold: need folds >= 2 and 1 <= fold <= folds, got fold {self.fold} of {self.folds}")
        if self.model not in ("fusion", "ridge"):
            problems.append(f"model: 'fusion' or 'ridge', got {self.model!r}")
        if self.d_model % self.heads:
            problems.append(f"d_model ({self.d_model}) must be divisible by heads ({self.heads})")
        if problems:
            raise VafusionError("invalid configuration: " + "; ".join(problems))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "FusionConfig":
        version = data.get("config_version")
        if version != CONFIG_VERSION:
            raise VafusionError(
                f"run configuration version {version!r}, this vafusion reads {CONFIG_VERSION}; "
                f"retrain with this version"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise VafusionError(f"run configuration has unknown keys {unknown}; made by another vafusion version?")
        return cls(**data)

    def save(self, run_dir: str | Path) -> Path:
        path = Path(run_dir) / CONFIG_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: str | Path) -> "FusionConfig":
        path = Path(run_dir) / CONFIG_FILE
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise VafusionError(f"{path}: no run configuration; is {run_dir} a run directory of `vafusion train`?") from None
        except json.JSONDecodeError as e:
            raise VafusionError(f"{path}: not valid JSON ({e}); the run directory is damaged") from None
        return cls.from_dict(data)


def replace(config: FusionConfig, **changes: Any) -> FusionConfig:
    """A copy with ``changes`` applied and validated again."""
    return dataclasses.replace(config, **changes)


__all__ = ["FusionConfig", "CONFIG_FILE", "replace"]
