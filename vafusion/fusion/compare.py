"""``vafusion compare``: models x feature sets x seeds (x folds) on one cache, with the same data for all.

Every combination is one :class:`~vafusion.fusion.experiments.Job` trained into
``RUNS/<model>/<features>/seed-<s>[/fold-<k>]`` (resumably: see
:mod:`vafusion.fusion.experiments`). The results are aggregated per (model, feature set) as
mean ± std over seeds and folds and written to ``RUNS/compare.json`` (every run's scores
too) and ``RUNS/compare.html`` (a table and a bar chart with ± std error bars).

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
from vafusion.fusion.config import DataConfig, FusionConfig, ModelConfig, TrainingConfig
from vafusion.fusion.experiments import METRIC_KEYS, Job, mean_std, run_jobs
from vafusion.fusion.models import ModelSpec, resolve_model
from vafusion.fusion.pages import FIGURES, Page, clear_figures, num, score_chart, table

COMPARE_JSON = "compare.json"
COMPARE_HTML = "compare.html"
_FIGURE = "compare.png"


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
    """Per (model, features), in first-seen order: ``n`` runs and mean ± std of CCC_V, CCC_A, P."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["model"], row["features"]), []).append(row)
    return [{"model": m, "features": f, "n": len(g), **mean_std(g)} for (m, f), g in groups.items()]


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
    ``workers``, ``devices``: the runs in parallel processes (:func:`~vafusion.fusion.experiments.run_jobs`).
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


def _mean_pm_std(cell: Mapping[str, float], digits: int = 3) -> str:
    return f"{cell['mean']:.{digits}f} ± {cell['std']:.{digits}f}"


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a plain-text table (what ``vafusion compare`` and ``vafusion demo`` print)."""
    model_w = max([len("model")] + [len(r["model"]) for r in summary])
    feat_w = max([len("features")] + [len(r["features"]) for r in summary])
    lines = [f"{'model':<{model_w}}  {'features':<{feat_w}}  {'runs':>4}  {'CCC_V':>14}  {'CCC_A':>14}  {'P':>14}"]
    for r in summary:
        cells = "  ".join(f"{_mean_pm_std(r[m]):>14}" for m in METRIC_KEYS)
        lines.append(f"{r['model']:<{model_w}}  {r['features']:<{feat_w}}  {r['n']:>4}  {cells}")
    return "\n".join(lines)


def write_compare_page(runs_dir: Path, result: Mapping[str, Any]) -> Path:
    """``RUNS/compare.html``: the summary table (best P highlighted), a bar chart with ± std, every run."""
    summary = result["summary"]
    make_dir(runs_dir / FIGURES, "figures folder")
    clear_figures(runs_dir, [_FIGURE])
    page = Page(runs_dir)
    spread = "seeds and folds" if result["split"] == "folds" else "seeds"
    page.add("<h2>Results</h2>")
    page.add(
        f"<p>Validation scores of each run's best checkpoint (CCC over all validation frames, the "
        f"challenge's way; P = (CCC_V + CCC_A) / 2), mean ± std over {spread}.</p>"
    )
    best = max(range(len(summary)), key=lambda i: summary[i]["p"]["mean"]) if summary else None
    page.add(
        table(
            [(r["model"], r["features"], r["n"], *(_mean_pm_std(r[m], 4) for m in METRIC_KEYS)) for r in summary],
            header=["model", "features", "runs", "CCC_V", "CCC_A", "P"],
            numeric=(2, 3, 4, 5),
            highlight=best,
        )
    )
    chart = [
        {
            "name": f"{r['model']} · {r['features'].replace(',', ', ')}",
            **{m: r[m]["mean"] for m in METRIC_KEYS},
            **{f"{m}_std": r[m]["std"] for m in METRIC_KEYS},
        }
        for r in summary
    ]
    if chart:
        score_chart(
            page,
            chart,
            _FIGURE,
            "validation scores by model and features",
            f"Mean CCC_V, CCC_A and P; error bars ± one std over {spread}.",
        )
    page.add("<h2>Runs</h2>")
    keys = [k for k in ("model", "features", "seed", "fold") if any(k in r for r in result["runs"])]
    page.add(
        table(
            [
                (
                    *(r.get(k, "") for k in keys),
                    *(num(r[m]) for m in METRIC_KEYS),
                    r.get("epoch"),
                    Path(r["run"]).relative_to(runs_dir) if Path(r["run"]).is_relative_to(runs_dir) else r["run"],
                )
                for r in result["runs"]
            ],
            header=[*keys, "CCC_V", "CCC_A", "P", "best epoch", "run directory"],
            numeric=tuple(range(len(keys), len(keys) + 3)),
        )
    )
    page.add("<h2>Settings</h2>")
    settings = [
        ("cache", result["cache"]),
        ("split", result["split"] + (f", {result['folds']} folds" if result["folds"] else "")),
        ("seeds", ", ".join(map(str, result["seeds"]))),
    ]
    settings += [
        (f"model {name}", " ".join(f"{k}={v}" for k, v in m["options"].items()) or "—")
        for name, m in result["models"].items()
    ]
    settings += [(f"data.{k}", v) for k, v in result["data"].items()]
    settings += [(f"training.{k}", v) for k, v in result["training"].items()]
    page.add(table(settings, header=["setting", "value"], row_headers=True))
    subtitle = f"{runs_dir.resolve()} · {len(result['runs'])} runs · cache {result['cache']}"
    return page.write(runs_dir / COMPARE_HTML, "vafusion comparison", subtitle)


__all__ = ["COMPARE_HTML", "COMPARE_JSON", "compare", "compare_jobs", "format_table", "summarise", "write_compare_page"]
