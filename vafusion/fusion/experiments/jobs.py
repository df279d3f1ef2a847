"""A list of trainings, each run resumably, and their results collected: what ``cv`` and ``compare`` share.

(``vafusion cv`` itself: :mod:`.cv`; ``vafusion compare``: :mod:`.compare`.)

A :class:`Job` is fully described by ``(cache_dir, run_dir, config)`` (plus labels that only
name it in tables), and jobs are independent of each other, so the loop in :func:`run_jobs`
is spread over worker processes (``--jobs N``, :func:`run_jobs_parallel`) without changing
what a job does. Rerunning the same jobs continues where they stopped, by the rules of
``train --resume`` (:mod:`vafusion.fusion.runs.run_dir`): a finished run is read back, an
interrupted one resumes (or starts again if it stopped before its first ``last.pt``), and a
run directory holding another experiment (other settings) is an error, never silently
overwritten or mixed into the results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from vafusion.errors import VafusionError
from vafusion.fusion.experiments.parallel import run_in_workers
from vafusion.fusion.reports.run import report_on_trained
from vafusion.fusion.runs.config import FusionConfig, replace
from vafusion.fusion.runs.run_dir import METRIC_KEYS
from vafusion.fusion.runs.train import train


@dataclass(frozen=True)
class Job:
    """One training: ``config`` on ``cache_dir`` into ``run_dir``; ``labels`` name it in result rows."""

    cache_dir: Path
    run_dir: Path
    config: FusionConfig
    labels: dict[str, Any] = field(default_factory=dict)


def run_job(
    job: Job, *, progress: bool = True, log: Callable[[str], None] | None = None, report: bool = False
) -> dict[str, Any]:
    """Train ``job`` (or continue it, or read it back if finished); its best ``{epoch, ccc_v, ccc_a, p, ...}``
    and ``seconds``, the run's training time (None for a run of an earlier version, which did not record it).

    Exactly ``train --resume`` (the rules of :mod:`vafusion.fusion.runs.run_dir`).
    """
    on_trained = report_on_trained(job.config.training.device, log) if report else None
    result = train(
        job.cache_dir, job.run_dir, job.config, resume=True, progress=progress, log=log, on_trained=on_trained
    )
    return {**result.best, "seconds": result.seconds}


def job_name(job: Job) -> str:
    """How a job is named in logs: its labels (``fold 2 seed 1``), or its run directory."""
    return " ".join(f"{key} {value}" for key, value in job.labels.items()) or str(job.run_dir)


def _row(job: Job, best: dict[str, Any]) -> dict[str, Any]:
    return {
        **job.labels,
        **{m: float(best[m]) for m in METRIC_KEYS},
        "epoch": best.get("epoch"),
        "seconds": best.get("seconds"),
        "run": str(job.run_dir),
    }


def total_seconds(rows: Sequence[dict[str, Any]]) -> float | None:
    """The training seconds of ``rows`` together; None if a run did not record them."""
    times = [r.get("seconds") for r in rows]
    return None if any(t is None for t in times) else float(sum(float(t) for t in times if t is not None))


def run_jobs(
    jobs: Sequence[Job],
    *,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    report: bool = False,
    workers: int | None = None,
    devices: Sequence[str] | None = None,
) -> list[dict[str, Any]]:
    """Run every job; one row per job, in job order: its labels, ``ccc_v``, ``ccc_a``, ``p``, ``epoch``,
    ``seconds`` (training time) and ``run``.

    ``workers`` > 1 or ``devices``: in that many worker processes (default: one per device),
    each on its device (round-robin), see :func:`run_jobs_parallel`. Otherwise (the default)
    one after the other in this process.
    """
    log = log or (lambda msg: None)
    dirs = [j.run_dir.resolve() for j in jobs]
    twice = sorted({str(d) for d in dirs if dirs.count(d) > 1})
    if twice:
        raise VafusionError(f"two jobs would train into {twice[0]}; give each its own run directory")
    workers = workers or len(devices or ()) or 1
    if workers > 1 or devices:
        return run_jobs_parallel(jobs, workers=workers, devices=devices, progress=progress, log=log, report=report)
    rows = []
    bar = tqdm(jobs, desc="runs", unit="run", disable=None if progress and len(jobs) > 1 else True, dynamic_ncols=True)
    for k, job in enumerate(bar, start=1):
        log(f"[{k}/{len(jobs)}] {job_name(job)}")
        best = run_job(job, progress=progress, log=log, report=report)
        rows.append(_row(job, best))
    bar.close()
    return rows


class JobsFailed(VafusionError):
    """Some jobs of a parallel run failed; the others finished. ``failures``: ``(job, message)``."""

    def __init__(self, failures: list[tuple[Job, str]], total: int):
        self.failures = failures
        lines = "".join(
            f"\n  {m}" if m.startswith(str(job.run_dir)) else f"\n  {job.run_dir}: {m}" for job, m in failures
        )
        super().__init__(
            f"{len(failures)} of {total} runs failed (the others are finished and kept; fix the cause "
            f"and rerun the same command to continue):{lines}"
        )


def _run_spec(spec: dict[str, Any], device: str | None, log: Callable[[str], None]) -> dict[str, Any]:
    """A worker's side of :func:`run_jobs_parallel`: the job ``spec`` describes, on ``device`` when given."""
    config = FusionConfig.from_dict(spec["config"])
    if device is not None:
        config = replace(config, device=device)
    job = Job(Path(spec["cache_dir"]), Path(spec["run_dir"]), config, spec["labels"])
    return run_job(job, progress=False, log=log, report=spec["report"])


def run_jobs_parallel(
    jobs: Sequence[Job],
    *,
    workers: int,
    devices: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    report: bool = False,
) -> list[dict[str, Any]]:
    """The jobs in ``workers`` processes (:mod:`.parallel`); rows as :func:`run_jobs` gives them.

    Every job runs as it would alone (same seed, same data), so the results equal a sequential
    run's up to floating-point reduction order. What a job logs is prefixed with its name. A
    job that fails does not stop the others; at the end, :class:`JobsFailed` names each
    failed job's run directory. Resumable like the sequential loop.
    """
    specs = [
        {
            "cache_dir": str(j.cache_dir),
            "run_dir": str(j.run_dir),
            "config": j.config.to_dict(),
            "labels": dict(j.labels),
            "report": report,
        }
        for j in jobs
    ]
    bar = tqdm(
        total=len(jobs),
        desc="runs",
        unit="run",
        disable=None if progress and len(jobs) > 1 else True,
        dynamic_ncols=True,
    )
    try:
        bests, failures = run_in_workers(
            _run_spec,
            specs,
            workers=workers,
            devices=devices,
            names=[job_name(j) for j in jobs],
            log=log,
            on_end=lambda i: bar.update(),
        )
    finally:
        bar.close()
    if failures:
        raise JobsFailed([(jobs[f.index], f.message) for f in failures], len(jobs))
    return [_row(job, bests[k]) for k, job in enumerate(jobs)]


def mean_std(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """``{metric: {"mean", "std"}}`` over ``rows`` for CCC_V, CCC_A, P (population std, 0 for one row)."""
    out = {}
    for m in METRIC_KEYS:
        values = np.array([float(r[m]) for r in rows], dtype=np.float64)
        out[m] = {"mean": float(values.mean()), "std": float(values.std())}
    return out


__all__ = [
    "METRIC_KEYS",
    "Job",
    "JobsFailed",
    "job_name",
    "mean_std",
    "run_job",
    "run_jobs",
    "run_jobs_parallel",
    "total_seconds",
]
