"""``vafusion compare``: models x feature sets x seeds (x folds) on one cache, with the same data for all.

Every combination is one :class:`~vafusion.fusion.experiments.jobs.Job` trained into
``RUNS/<model>/<features>/seed-<s>[/fold-<k>]`` (resumably: see
:mod:`vafusion.fusion.experiments.jobs`). The results are aggregated per (model, feature set) as
mean ± std over seeds and folds and written to ``RUNS/compare.json`` (every run's scores
too) and ``RUNS/compare.html`` (a table and a bar chart with ± std error bars:
:mod:`vafusion.fusion.reports.compare`).

Model options given to a comparison apply to each model that declares them (an option no
chosen model declares is an error, a typo caught); ``causal`` must be supported by every
chosen model, since a comparison in which some models look ahead would mislead.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vafusion.atomic import atomic_path
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, remove_stale_temporaries
from vafusion.fusion.experiments.jobs import Job, mean_std, run_jobs, total_seconds
from vafusion.fusion.models import ModelSpec, resolve_model
from vafusion.fusion.reports.compare import write_compare_page
from vafusion.fusion.runs.config import DataConfig, FusionConfig, ModelConfig, TrainingConfig

COMPARE_JSON = "compare.json"


def _dir_name(text: str) -> str:
    """A folder name for a model or feature-set label (``:`` and other odd characters -> ``_``)."""
    return re.sub(r"[^A-Za-z0-9._+-]", "_", text)


def _model_configs(
    models: Sequence[str], options: Mapping[str, Any], causal: bool
) -> list[tuple[ModelSpec, ModelConfig]]:
    specs = [resolve_model(m) for m in models]
    if not specs:
        raise VafusionError("--models: name at least one model (`vafusion models` lists them)")
    refs = [s.ref for s in specs]
    twice = sorted({r for r in refs if refs.count(r) > 1})
    if twice:
        raise VafusionError(f"--models: {twice[0]} is named twice; name each model once")
    unused = [k for k in options if not any(k in s.options for s in specs)]
    if unused:
        raise VafusionError(
            f"--model-option {unused[0]}: none of the models {', '.join(s.name for s in specs)} has "
            f"this option (`vafusion models` lists their options)"
        )
    out = []
    for spec in specs:
        given = {k: v for k, v in options.items() if k in spec.options}
        if causal:
            given["causal"] = True  # an error for a model that cannot run causally
        out.append((spec, ModelConfig(spec.ref, spec.with_defaults(given))))
    return out


def compare_jobs(
    cache_dir: str | Path,
    runs_dir: str | Path,
    models: Sequence[str],
    feature_sets: Sequence[Sequence[str]],
    *,
    data: DataConfig | None = None,
    training: TrainingConfig | None = None,
    seeds: int = 1,
    model_options: Mapping[str, Any] | None = None,
    causal: bool = False,
) -> list[Job]:
    """One job per model x feature set x seed (x fold of ``data.folds`` when ``data.split`` is "folds").

    ``data`` gives window, hop and the split (its features and fold are replaced);
    ``training`` the training settings, its seed the first of ``seeds`` consecutive ones.
    """
    data, training = data or DataConfig(), training or TrainingConfig()
    if seeds < 1:
        raise VafusionError(f"--seeds {seeds}: must be >= 1")
    sets = [tuple(f) for f in feature_sets]
    if not sets or any(not s for s in sets):
        raise VafusionError("--features: name at least one feature set, e.g. --features 'resnet50,vggish;vggish'")
    if len(set(sets)) != len(sets):
        raise VafusionError("--features: a feature set is named twice; name each once")
    folds = list(range(1, data.folds + 1)) if data.split == "folds" else [None]
    jobs = []
    for spec, model in _model_configs(models, model_options or {}, causal):
        for features in sets:
            for seed in range(training.seed, training.seed + seeds):
                for fold in folds:
                    run = Path(runs_dir) / _dir_name(spec.name) / _dir_name("+".join(features)) / f"seed-{seed}"
                    run = run / f"fold-{fold}" if fold is not None else run
                    config = FusionConfig(
                        dataclasses.replace(data, features=features, fold=fold or data.fold),
                        model,
                        dataclasses.replace(training, seed=seed),
                    )
                    labels = {"model": spec.name, "features": ",".join(features), "seed": seed}
                    jobs.append(Job(Path(cache_dir), run, config, labels if fold is None else {**labels, "fold": fold}))
    return jobs


def summarise(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, features), in first-seen order: ``n`` runs, mean ± std of CCC_V, CCC_A, P, and the mean
    training ``seconds`` of a run (None if one did not record it)."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["features"]), []).append(row)
    out = []
    for (m, f), g in groups.items():
        total = total_seconds(g)
        out.append({"model": m, "features": f, "n": len(g), **mean_std(g), "seconds": total and total / len(g)})
    return out


def compare(
    cache_dir: str | Path,
    runs_dir: str | Path,
    models: Sequence[str],
    feature_sets: Sequence[Sequence[str]],
    *,
    data: DataConfig | None = None,
    training: TrainingConfig | None = None,
    seeds: int = 1,
    model_options: Mapping[str, Any] | None = None,
    causal: bool = False,
    progress: bool = True,
    log: Callable[[str], None] | None = None,
    report: bool = False,
    workers: int | None = None,
    devices: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Train (or continue) every job of :func:`compare_jobs`; write and return ``compare.json``'s content.

    ``report``: also write each run's own report.html. ``RUNS/compare.html`` is always written.
    ``workers``, ``devices``: the runs in parallel processes (:func:`~vafusion.fusion.experiments.jobs.run_jobs`).
    """
    data, training = data or DataConfig(), training or TrainingConfig()
    jobs = compare_jobs(
        cache_dir,
        runs_dir,
        models,
        feature_sets,
        data=data,
        training=training,
        seeds=seeds,
        model_options=model_options,
        causal=causal,
    )
    rows = run_jobs(jobs, progress=progress, log=log, report=report, workers=workers, devices=devices)
    runs_dir = Path(runs_dir)
    result = {
        "cache": str(Path(cache_dir).resolve()),
        "runs_dir": str(runs_dir.resolve()),
        "models": {j.labels["model"]: {"name": j.config.model.name, "options": j.config.model.options} for j in jobs},
        "feature_sets": [list(f) for f in dict.fromkeys(tuple(f) for f in feature_sets)],
        "seeds": list(range(training.seed, training.seed + seeds)),
        "split": data.split,
        "folds": data.folds if data.split == "folds" else None,
        "data": {k: v for k, v in dataclasses.asdict(data).items() if k not in ("features", "fold")},
        "training": {k: v for k, v in dataclasses.asdict(training).items() if k != "seed"},
        "summary": summarise(rows),
        "runs": rows,
    }
    make_dir(runs_dir, "runs directory")
    remove_stale_temporaries(runs_dir)  # of a killed compare: compare.json
    with atomic_path(runs_dir / COMPARE_JSON) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
    write_compare_page(runs_dir, result)
    return result


__all__ = ["COMPARE_JSON", "compare", "compare_jobs", "summarise"]
