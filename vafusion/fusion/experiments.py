"""A list of trainings, each run resumably, and their results collected: what ``cv`` and ``compare`` share.

(``vafusion cv`` itself: :mod:`vafusion.fusion.cv`; ``vafusion compare``: :mod:`vafusion.fusion.compare`.)

A :class:`Job` is fully described by ``(cache_dir, run_dir, config)`` (plus labels that only
name it in tables), and jobs are independent of each other, so the loop in :func:`run_jobs`
can later be spread over processes without changing what a job does. Rerunning the same
jobs continues where they stopped:

- a finished run (``summary.json`` present, written last by :func:`~vafusion.fusion.train.train`)
  is not trained again: its best scores are read back;
- an interrupted run with ``last.pt`` resumes from it (exactly, see ``train --resume``);
- an interrupted run without ``last.pt`` (stopped in its first epoch, or a closed-form fit
  stopped before its summary) starts again; its partial files are replaced;
- a run directory holding another experiment (other settings) is an error, never
  silently overwritten or mixed into the results.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vafusion.errors import VafusionError
from vafusion.fusion import checkpoint as ckpt_mod
from vafusion.fusion.config import CONFIG_FILE, FusionConfig
from vafusion.fusion.train import train

METRIC_KEYS = ("ccc_v", "ccc_a", "p")


@dataclass(frozen=True)
class Job:
    """One training: ``config`` on ``cache_dir`` into ``run_dir``; ``labels`` name it in result rows."""

    cache_dir: Path
    run_dir: Path
    config: FusionConfig
    labels: dict[str, Any] = field(default_factory=dict)


def _finished_best(run_dir: Path) -> dict[str, Any] | None:
    try:
        summary = json.loads((run_dir / ckpt_mod.SUMMARY).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    best = summary.get("best") if isinstance(summary, dict) else None
    return best if isinstance(best, dict) and all(k in best for k in METRIC_KEYS) else None


def run_job(job: Job, *, progress: bool = True, log: Callable[[str], None] | None = None,
            report: bool = False) -> dict[str, Any]:
    """Train ``job`` (or continue it, or read it back if finished); its best ``{epoch, ccc_v, ccc_a, p, ...}``."""
    log = log or (lambda msg: None)
    run_dir = job.run_dir
    if (run_dir / CONFIG_FILE).is_file():
        changed = FusionConfig.load(run_dir).differences(job.config)
        if changed:
            raise VafusionError(f"{run_dir}: holds a run with other settings ({', '.join(changed)}); "
                                f"use another directory, or delete this one to train it again")
        best = _finished_best(run_dir)
        if best is not None:
            log(f"{run_dir}: finished before, not trained again (P {best['p']:.4f})")
            return best
        if (run_dir / ckpt_mod.LAST).is_file():
            return train(job.cache_dir, run_dir, job.config, resume=True, progress=progress, log=log,
                         report=report).best
        for name in (ckpt_mod.BEST, ckpt_mod.METRICS):  # partial output of an attempt that cannot resume
            (run_dir / name).unlink(missing_ok=True)
    elif (run_dir / ckpt_mod.BEST).exists() or (run_dir / ckpt_mod.LAST).exists():
        raise VafusionError(f"{run_dir}: holds checkpoints but no {CONFIG_FILE}, so it cannot be continued; "
                            f"delete it to train it again, or use another directory")
    return train(job.cache_dir, run_dir, job.config, progress=progress, log=log, report=report).best


def run_jobs(jobs: Sequence[Job], *, progress: bool = True, log: Callable[[str], None] | None = None,
             report: bool = False) -> list[dict[str, Any]]:
    """Run every job in order; one row per job: its labels, ``ccc_v``, ``ccc_a``, ``p``, ``epoch`` and ``run``."""
    log = log or (lambda msg: None)
    dirs = [j.run_dir.resolve() for j in jobs]
    twice = sorted({str(d) for d in dirs if dirs.count(d) > 1})
    if twice:
        raise VafusionError(f"two jobs would train into {twice[0]}; give each its own run directory")
    rows = []
    bar = tqdm(jobs, desc="runs", unit="run", disable=None if progress and len(jobs) > 1 else True,
               dynamic_ncols=True)
    for k, job in enumerate(bar, start=1):
        name = " ".join(f"{key} {value}" for key, value in job.labels.items())
        log(f"[{k}/{len(jobs)}] {name or job.run_dir}")
        best = run_job(job, progress=progress, log=log, report=report)
        rows.append({**job.labels, **{m: float(best[m]) for m in METRIC_KEYS}, "epoch": best.get("epoch"),
                     "run": str(job.run_dir)})
    bar.close()
    return rows


def mean_std(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std"}}`` over ``rows`` for CCC_V, CCC_A, P (population std, 0 for one row)."""
    out = {}
    for m in METRIC_KEYS:
        values = np.array([float(r[m]) for r in rows], dtype=np.float64)
        out[m] = {"mean": float(values.mean()), "std": float(values.std())}
    return out


__all__ = ["Job", "run_job", "run_jobs", "mean_std", "METRIC_KEYS"]
