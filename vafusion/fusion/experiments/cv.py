"""``vafusion cv``: every fold (x seed) trained, their validation predictions kept, post-processing chosen on them.

Train and validation ids are merged and split by group into ``config.data.folds`` folds
(:mod:`vafusion.fusion.data.folds`); fold k's runs validate on fold k. The layout
(:mod:`vafusion.fusion.runs.layout`): ``RUNS/fold-K`` with one seed, ``RUNS/fold-K/seed-S`` for
``seeds > 1`` (seeds ``training.seed``, ``+ 1``, ...). Every run is a
:class:`~vafusion.fusion.experiments.jobs.Job`, so a rerun of the same command continues: finished
runs are kept, an interrupted one resumes.

After training, each run's validation predictions are kept (``RUN/val_predictions.npz``,
:mod:`vafusion.fusion.post.oof`); a fold's seeds are averaged, as ``predict`` averages them; the
folds together are the out-of-fold (OOF) predictions of every labelled id, on which
:func:`~vafusion.fusion.post.fit.fit_post` chooses each dimension's post-processing steps (by
default a smoothing and a shift; procedure and why it is honest: :mod:`vafusion.fusion.post.fit`).
Written: ``RUNS/post.json`` (what ``predict`` applies), ``RUNS/cv.json`` (scores, per run and per fold, OOF scores, the
post-processing) and ``RUNS/cv.html`` (the same as a page).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import remove_stale_temporaries
from vafusion.fusion.experiments.jobs import Job, mean_std, run_jobs, total_seconds
from vafusion.fusion.metrics import score
from vafusion.fusion.post.apply import write_post
from vafusion.fusion.post.fit import PostFit, fit_post
from vafusion.fusion.post.oof import RunPredictions, average_runs, keep_oof
from vafusion.fusion.post.registry import DEFAULT_STEPS, step_class
from vafusion.fusion.reports.cv import CV_HTML, write_cv_page
from vafusion.fusion.runs.config import CONFIG_FILE, FusionConfig, replace
from vafusion.fusion.runs.layout import POST_FILE, fold_dir, seed_dir
from vafusion.fusion.runs.run_dir import METRIC_KEYS

CV_JSON = "cv.json"


def _check_layout(fold_directory: Path, seed_dirs: Sequence[Path], seeds: int) -> None:
    """Refuse a fold folder that holds runs this cross-validation would not include."""
    if seeds > 1 and (fold_directory / CONFIG_FILE).is_file():
        raise VafusionError(
            f"{fold_directory}: holds a one-seed run; rerun without --seeds, or use another --runs "
            f"directory for {seeds} seeds"
        )
    expected = {d.name for d in seed_dirs}
    extra = sorted(p.name for p in fold_directory.glob("seed-*") if p.is_dir() and p.name not in expected)
    if extra:
        raise VafusionError(
            f"{fold_directory}: holds {', '.join(extra)}, not among this cross-validation's seeds; "
            f"rerun with the same --seeds and --seed, or use another --runs directory"
        )


def cv_jobs(cache_dir: str | Path, runs_dir: str | Path, config: FusionConfig, seeds: int = 1) -> list[Job]:
    """One job per fold of ``config.data.folds`` and seed (``config.training.seed`` onwards)."""
    if seeds < 1:
        raise VafusionError(f"--seeds {seeds}: must be >= 1")
    runs_dir, jobs = Path(runs_dir), []
    for k in range(1, config.data.folds + 1):
        folder = fold_dir(runs_dir, k)
        values = range(config.training.seed, config.training.seed + seeds)
        dirs = [folder] if seeds == 1 else [seed_dir(folder, s) for s in values]
        _check_layout(folder, dirs if seeds > 1 else [], seeds)
        for seed, run in zip(values, dirs):
            labels = {"fold": k} if seeds == 1 else {"fold": k, "seed": seed}
            jobs.append(Job(Path(cache_dir), run, replace(config, split="folds", fold=k, seed=seed), labels))
    return jobs


def _fold_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per fold: the mean over its seeds of CCC_V, CCC_A, P, how many seeds, and their training seconds together."""
    folds: dict[int, list[dict[str, Any]]] = {}
    for row in rows:
        folds.setdefault(row["fold"], []).append(row)
    return [
        {
            "fold": k,
            **{m: float(np.mean([r[m] for r in g])) for m in METRIC_KEYS},
            "seeds": len(g),
            "seconds": total_seconds(g),
        }
        for k, g in folds.items()
    ]


def _pooled(per_fold: dict[int, RunPredictions]) -> dict[str, float]:
    """CCC_V, CCC_A, P over every OOF frame at once (the challenge's way), before post-processing."""
    pred = np.concatenate([p for r in per_fold.values() for p in r.predictions])
    true = np.concatenate([t for r in per_fold.values() for t in r.labels])
    return score(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1])


def _post_summary(fit: PostFit) -> dict[str, Any]:
    return {**fit.post.to_dict(), **fit.details()}


def cross_validate(
    cache_dir: str | Path,
    runs_dir: str | Path,
    config: FusionConfig,
    *,
    seeds: int = 1,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    report: bool = True,
    workers: int | None = None,
    devices: Sequence[str] | None = None,
    post_steps: Sequence[str] = DEFAULT_STEPS,
) -> dict[str, Any]:
    """Train every fold x seed (resumably), keep OOF predictions, choose post-processing; ``cv.json``'s content.

    Returns ``folds`` (per fold: CCC_V, CCC_A, P, mean over its seeds; its training seconds),
    their mean ± std (``ccc_v``, ``ccc_a``, ``p``), ``seeds``, ``seconds`` (every run's training
    together; None if a run of an earlier version recorded none), ``runs`` (one row per fold x seed),
    ``out_of_fold`` (pooled CCCs of the seed-averaged OOF predictions) and ``post`` (the
    content of ``post.json``). ``workers``, ``devices``: the runs in parallel processes
    (:func:`~vafusion.fusion.experiments.jobs.run_jobs`). ``post_steps``: the post-processing steps
    fitted out of fold, in order (:mod:`vafusion.fusion.post.registry`; checked before any training).
    """
    runs_dir, log = Path(runs_dir), log or (lambda msg: None)
    kinds = [step_class(s) for s in post_steps]
    jobs = cv_jobs(cache_dir, runs_dir, config, seeds)
    remove_stale_temporaries(runs_dir)  # of a killed cv: post.json, cv.json
    rows = run_jobs(jobs, progress=progress, log=log, report=report, workers=workers, devices=devices)
    kept = keep_oof(
        [j.run_dir for j in jobs], Path(cache_dir), device=config.training.device, progress=progress, log=log
    )
    per_fold = {}
    for k in range(1, config.data.folds + 1):
        mine = [i for i, j in enumerate(jobs) if j.labels["fold"] == k]
        per_fold[k] = average_runs([kept[i] for i in mine], [str(jobs[i].run_dir) for i in mine])
    fit = fit_post(per_fold, kinds)
    write_post(runs_dir / POST_FILE, fit.post, fit.details())
    folds = _fold_rows(rows)
    summary: dict[str, Any] = {
        "folds": folds,
        **mean_std(folds),
        "seeds": list(range(config.training.seed, config.training.seed + seeds)),
        "seconds": total_seconds(rows),
        "runs": rows,
        "out_of_fold": _pooled(per_fold),
        "post": _post_summary(fit),
    }
    with atomic_path(runs_dir / CV_JSON) as tmp:
        tmp.write_text(json.dumps(summary, indent=2) + "\n")
    log(f"cross-validation page: {write_cv_page(runs_dir, summary, fit, config)}")
    return summary


__all__ = ["CV_HTML", "CV_JSON", "cross_validate", "cv_jobs"]
