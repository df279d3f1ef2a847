"""``RUNS/compare.html`` and the plain-text table of ``vafusion compare``: models x feature sets x seeds at a glance.

A :class:`~vafusion.fusion.reports.pages.Page` (opens from disk, no network): the summary table
(best P highlighted), a bar chart with ± std, every run and the settings. The comparison itself
(which runs, their results) is :mod:`vafusion.fusion.experiments.compare`'s; this module only shows it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vafusion.fs import make_dir
from vafusion.fusion.reports.pages import FIGURES, Page, clear_figures, num, score_chart, seconds_text, table
from vafusion.fusion.runs.run_dir import METRIC_KEYS

COMPARE_HTML = "compare.html"
_FIGURE = "compare.png"


def _mean_pm_std(cell: Mapping[str, float], runs: int, digits: int = 3) -> str:
    """``mean ± std`` over ``runs`` runs; the mean alone for one run (a std of one value says nothing)."""
    mean = f"{cell['mean']:.{digits}f}"
    return f"{mean} ± {cell['std']:.{digits}f}" if runs > 1 else mean


def format_table(summary: Sequence[dict[str, Any]]) -> str:
    """The summary as a plain-text table (what ``vafusion compare`` and ``vafusion demo`` print)."""
    model_w = max([len("model")] + [len(r["model"]) for r in summary])
    feat_w = max([len("features")] + [len(r["features"]) for r in summary])
    lines = [
        f"{'model':<{model_w}}  {'features':<{feat_w}}  {'runs':>4}  {'CCC_V':>14}  {'CCC_A':>14}  {'P':>14}"
        f"  {'time/run':>9}"
    ]
    for r in summary:
        cells = "  ".join(f"{_mean_pm_std(r[m], r['n']):>14}" for m in METRIC_KEYS)
        time = seconds_text(r.get("seconds"))
        lines.append(f"{r['model']:<{model_w}}  {r['features']:<{feat_w}}  {r['n']:>4}  {cells}  {time:>9}")
    return "\n".join(lines)


def write_compare_page(runs_dir: Path, result: Mapping[str, Any]) -> Path:
    """``RUNS/compare.html``: the summary table (best P highlighted), a bar chart with ± std, every run."""
    make_dir(runs_dir / FIGURES, "figures folder")
    clear_figures(runs_dir, [_FIGURE])
    page = Page(runs_dir)
    _results(page, result)
    _runs(page, runs_dir, result["runs"])
    _settings(page, result)
    subtitle = f"{runs_dir.resolve()} · {len(result['runs'])} runs · cache {result['cache']}"
    return page.write(runs_dir / COMPARE_HTML, "vafusion comparison", subtitle)


def _results(page: Page, result: Mapping[str, Any]) -> None:
    summary = result["summary"]
    spread = "seeds and folds" if result["split"] == "folds" else "seeds"
    page.add("<h2>Results</h2>")
    several = any(r["n"] > 1 for r in summary)
    page.add(
        "<p>Validation scores of each run's best checkpoint (CCC over all validation frames, the "
        "challenge's way; P = (CCC_V + CCC_A) / 2), "
        + (
            f"mean ± std over {spread} (± only where there is more than one run).</p>"
            if several
            else "one run each.</p>"
        )
    )
    best = max(range(len(summary)), key=lambda i: summary[i]["p"]["mean"]) if summary else None
    page.add(
        table(
            [
                (
                    r["model"],
                    r["features"],
                    r["n"],
                    *(_mean_pm_std(r[m], r["n"], 4) for m in METRIC_KEYS),
                    seconds_text(r.get("seconds")),
                )
                for r in summary
            ],
            header=["model", "features", "runs", "CCC_V", "CCC_A", "P", "time per run"],
            numeric=(2, 3, 4, 5, 6),
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
            f"Mean CCC_V, CCC_A and P; error bars ± one std over {spread}." if several else "CCC_V, CCC_A and P.",
        )


def _runs(page: Page, runs_dir: Path, runs: Sequence[Mapping[str, Any]]) -> None:
    page.add("<h2>Runs</h2>")
    keys = [k for k in ("model", "features", "seed", "fold") if any(k in r for r in runs)]
    page.add(
        table(
            [
                (
                    *(r.get(k, "") for k in keys),
                    *(num(r[m]) for m in METRIC_KEYS),
                    r.get("epoch"),
                    seconds_text(r.get("seconds")),
                    Path(r["run"]).relative_to(runs_dir) if Path(r["run"]).is_relative_to(runs_dir) else r["run"],
                )
                for r in runs
            ],
            header=[*keys, "CCC_V", "CCC_A", "P", "best epoch", "training time", "run directory"],
            numeric=tuple(range(len(keys), len(keys) + 3)),
        )
    )


def _settings(page: Page, result: Mapping[str, Any]) -> None:
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


__all__ = ["COMPARE_HTML", "format_table", "write_compare_page"]
