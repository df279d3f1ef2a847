"""Run directories and checkpoints: everything needed to predict again, and nothing pickled.

A checkpoint is a plain dict of tensors, numbers and strings saved with ``torch.save`` and
read with ``torch.load(weights_only=True)``, so a checkpoint shared by a colleague cannot run
code on load. It carries the model (or ridge) weights, the configuration, the
standardisation statistics, the feature dims and fingerprints it was trained on, and metrics.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fusion.config import FusionConfig
from vafusion.fusion.data import Standardizer
from vafusion.fusion.model import FusionModel, build_model
from vafusion.fusion.ridge import RidgeBaseline

BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT_FORMAT = "vafusion-run"
CHECKPOINT_VERSION = 1


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    return {k: torch.as_tensor(np.asarray(v)) for k, v in state.items()}


def make_checkpoint(
    config: FusionConfig, dims: list[int], standardizer: Standardizer, model: FusionModel | RidgeBaseline,
    fingerprints: dict[str, Any], metrics: dict[str, Any], epoch: int,
) -> dict[str, Any]:
    weights = model.state_dict() if isinstance(model, FusionModel) else _tensors(model.state_dict())
    return {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "vafusion_version": __version__,
        "config": json.dumps(config.to_dict()),
        "dims": list(dims),
        "standardizer": _tensors(standardizer.state_dict()),
        "weights": weights,
        "fingerprints": json.dumps(fingerprints),
        "metrics": json.dumps(metrics),
        "epoch": int(epoch),
    }


@dataclass
class TrainedRun:
    """What a run directory's best checkpoint holds, ready to predict."""

    run_dir: Path
    config: FusionConfig
    dims: list[int]
    standardizer: Standardizer
    model: FusionModel | RidgeBaseline
    fingerprints: dict[str, Any]  # {"corpus": ..., "features": {name: fingerprint}, "cache": path}
    metrics: dict[str, Any]
    epoch: int


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise VafusionError(f"{path}: no checkpoint; is {path.parent} a run directory of `vafusion train`?") from None
    except Exception as e:  # pickle/zip errors of a damaged or foreign file
        raise VafusionError(f"{path}: unreadable checkpoint ({type(e).__name__}); retrain, or copy the run again") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise VafusionError(f"{path}: not a vafusion run checkpoint")
    if ckpt.get("format_version") != CHECKPOINT_VERSION:
        raise VafusionError(
            f"{path}: checkpoint format_version {ckpt.get('format_version')}, this vafusion reads "
            f"{CHECKPOINT_VERSION}; retrain with this version"
        )
    return ckpt


def load_run(run_dir: str | Path) -> TrainedRun:
    """Load the best checkpoint of ``run_dir`` (weights_only: no code runs on load)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise VafusionError(f"{run_dir}: no such run directory")
    ckpt = read_checkpoint(run_dir / BEST)
    try:
        config = FusionConfig.from_dict(json.loads(ckpt["config"]))
        dims = [int(d) for d in ckpt["dims"]]
        standardizer = Standardizer.from_state_dict(ckpt["standardizer"])
        if config.model == "ridge":
            model: FusionModel | RidgeBaseline = RidgeBaseline.from_state_dict(
                {k: v.numpy() for k, v in ckpt["weights"].items()}
            )
        else:
            model = build_model(config, dims)
            model.load_state_dict(ckpt["weights"])
            model.eval()
        fingerprints = json.loads(ckpt["fingerprints"])
        metrics = json.loads(ckpt["metrics"])
    except VafusionError:
        raise
    except (KeyError, ValueError, RuntimeError) as e:
        raise VafusionError(f"{run_dir / BEST}: inconsistent checkpoint ({e}); retrain") from None
    return TrainedRun(run_dir, config, dims, standardizer, model, fingerprints, metrics, int(ckpt["epoch"]))
