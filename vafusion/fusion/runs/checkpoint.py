"""Run directories and checkpoints: everything needed to predict again, and nothing pickled.

A checkpoint is a plain dict of tensors, numbers and strings saved with ``torch.save`` and
read with ``torch.load(weights_only=True)``, so a checkpoint shared by a colleague cannot run
code on load. It carries the model's weights (a module's ``state_dict``, or the plain arrays
of a model fitted in closed form), the configuration (which names the model, a built-in or
``module:Class``, and all its options), the standardisation statistics, the feature dims and
fingerprints it was trained on, and metrics.

Loading rebuilds the model through the registry, so a plug-in model's module is imported
then (the one piece of code a run names; install or trust it like any other package).
Checkpoints of format_version 1 hold a config_version 1 configuration; it is converted
(:mod:`vafusion.fusion.runs.config`), the weights load unchanged.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import write_error
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.models import contract
from vafusion.fusion.runs.config import FusionConfig

BEST = "best.pt"
LAST = "last.pt"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
CHECKPOINT_FORMAT = "vafusion-run"
CHECKPOINT_VERSION = 1


def save_atomic(obj: dict[str, Any], path: Path) -> None:
    """torch.save through a temporary file and a rename: a kill never leaves half a checkpoint.

    Serialised in memory first: torch.save into a file that cannot grow (disk full, ``ulimit -f``)
    fails with a RuntimeError that does not say why; a plain write says ENOSPC / EFBIG, which
    :func:`~vafusion.atomic.atomic_path` names.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buffer.getbuffer())


def _tensors(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Tensors as they are, arrays and numbers (a closed-form model's state) as tensors."""
    return {k: v if isinstance(v, torch.Tensor) else torch.as_tensor(np.asarray(v)) for k, v in state.items()}


def make_checkpoint(
    config: FusionConfig,
    dims: list[int],
    standardizer: Standardizer,
    model: Any,
    fingerprints: dict[str, Any],
    metrics: dict[str, Any],
    epoch: int,
) -> dict[str, Any]:
    weights = _tensors(contract.state(config.model.name, model))
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
    model: Any  # a torch.nn.Module, or a model fitted in closed form (vafusion.fusion.models)
    fingerprints: dict[str, Any]  # {"corpus": ..., "features": {name: fingerprint}, "cache": path}
    metrics: dict[str, Any]
    epoch: int


def read_metrics(run_dir: Path) -> list[dict[str, Any]]:
    """Rows of ``metrics.jsonl`` in order; a damaged line (a kill mid-append) is skipped."""
    path = Path(run_dir) / METRICS
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and "epoch" in row:
            rows.append(row)
    return rows


def append_metrics(run_dir: Path, row: dict[str, Any]) -> None:
    """One row more (an append, not atomic: a damaged last row, from a kill or a full disk, is skipped by
    :func:`read_metrics` and dropped by a resume)."""
    path = Path(run_dir) / METRICS
    try:
        with open(path, "a") as f:
            f.write(json.dumps(row) + "\n")
    except OSError as e:
        raise write_error(path, e) from e


def truncate_metrics(run_dir: Path, last_epoch: int) -> None:
    """Keep the rows up to ``last_epoch``: drop those written after the checkpoint being resumed
    (a kill between the two) and damaged ones."""
    rows = [r for r in read_metrics(run_dir) if r["epoch"] <= last_epoch]
    with atomic_path(Path(run_dir) / METRICS) as tmp:
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))


def read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as e:
        raise VafusionError(f"{path}: no checkpoint; is {path.parent} a run directory of `vafusion train`?") from e
    except Exception as e:  # pickle/zip errors of a damaged or foreign file
        raise VafusionError(
            f"{path}: unreadable checkpoint ({type(e).__name__}); retrain, or copy the run again"
        ) from e
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
    except VafusionError as e:
        raise VafusionError(f"{run_dir}: {e}") from e
    try:
        dims = [int(d) for d in ckpt["dims"]]
        standardizer = Standardizer.from_state_dict(ckpt["standardizer"])
        model = config.build_model(dims)
        model.load_state_dict(ckpt["weights"])
        fingerprints = json.loads(ckpt["fingerprints"])
        metrics = json.loads(ckpt["metrics"])
    except VafusionError:
        raise
    except (KeyError, ValueError, RuntimeError) as e:
        raise VafusionError(f"{run_dir / BEST}: inconsistent checkpoint ({e}); retrain") from e
    return TrainedRun(run_dir, config, dims, standardizer, model, fingerprints, metrics, int(ckpt["epoch"]))
