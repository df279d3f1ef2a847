"""``RUNS/cv.html``: a cross-validation at a glance: fold and run scores, out-of-fold scores, post-processing.

A :class:`~vafusion.fusion.reports.pages.Page` (opens from disk, no network). The post-processing
section shows what :mod:`vafusion.fusion.post.fit` chose per dimension, the honest (nested)
gain next to the optimistic in-sample one, each fold's nested choice (a column per step), and,
when the last step is a shift, the out-of-fold CCC against the shift with the steps before it
unchanged and at their best (by default: no smoothing and the chosen smoothing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vafusion.fs import make_dir
from vafusion.fusion.post.apply import DimPost
from vafusion.fusion.post.fit import PostFit
from vafusion.fusion.reports.pages import (
    COLOURS,
    FIGURES,
    Page,
    clear_figures,
    esc,
    new_figure,
    num,
    seconds_text,
    table,
)
from vafusion.fusion.runs.config import FusionConfig
from vafusion.fusion.runs.run_dir import METRIC_KEYS

CV_HTML = "cv.html"
_FIGURE = "post_shift.png"


def _scores(page: Page, summary: dict[str, Any], runs_dir: Path) -> None:
    page.add("<h2>Folds</h2>")
    page.add(
        "<p>Validation scores of each fold's best checkpoint (CCC over all the fold's validation frames; "
        "P = (CCC_V + CCC_A) / 2), the mean over its seeds, and mean ± std over folds.</p>"
    )
    rows = [
        (r["fold"], r.get("seeds", 1), *(num(r[m]) for m in METRIC_KEYS), seconds_text(r.get("seconds")))
        for r in summary["folds"]
    ]
    rows.append(
        (
            "mean ± std",
            "",
            *(f"{summary[m]['mean']:.4f} ± {summary[m]['std']:.4f}" for m in METRIC_KEYS),
            f"{seconds_text(summary.get('seconds'))} in all",
        )
    )
    page.add(table(rows, header=["fold", "seeds", "CCC_V", "CCC_A", "P", "training time"], numeric=(1, 2, 3, 4, 5)))
    if len(summary["seeds"]) > 1:
        page.add("<h3>Runs</h3>")
        page.add(
            table(
                [
                    (
                        r["fold"],
                        r["seed"],
                        *(num(r[m]) for m in METRIC_KEYS),
                        r.get("epoch"),
                        seconds_text(r.get("seconds")),
                        Path(r["run"]).relative_to(runs_dir) if Path(r["run"]).is_relative_to(runs_dir) else r["run"],
                    )
                    for r in summary["runs"]
                ],
                header=["fold", "seed", "CCC_V", "CCC_A", "P", "best epoch", "training time", "run directory"],
                numeric=(2, 3, 4, 6),
            )
        )
    oof = summary["out_of_fold"]
    page.add("<h2>Out-of-fold predictions</h2>")
    page.add(
        f"<p>Every labelled id predicted by the fold that validated it (the mean of its "
        f"{len(summary['seeds'])} seed(s)), scored over all frames at once, the challenge's way: "
        f"CCC_V {num(oof['ccc_v'])}, CCC_A {num(oof['ccc_a'])}, P {num(oof['p'])}.</p>"
    )


def _post(page: Page, fit: PostFit) -> None:
    page.add("<h2>Post-processing</h2>")
    page.add(
        "<p>Chosen per dimension on the out-of-fold predictions: "
        + ", then ".join(esc(s.about or s.title) for s in fit.steps)
        + ". <b>Nested</b>: each fold scored with the choice made on the other folds only, the gain to expect on "
        "unseen videos. <b>In-sample</b>: the choice scored on the frames it was chosen on (optimistic). "
        f"<code>predict</code> applies a dimension's choice only where the nested gain is positive; "
        f"it reads <code>{esc('post.json')}</code> beside the folds.</p>"
    )
    rows = []
    for name, d in fit.dimensions.items():
        s = d.scores
        rows.append(
            (
                name,
                d.best.describe(),
                "yes" if d.applied else "no (nested gain not positive)",
                num(s["ccc_before"]),
                num(s["ccc_in_sample"]),
                num(s["ccc_nested"]),
                f"{s['gain_nested']:+.4f}",
            )
        )
    page.add(
        table(
            rows,
            header=["dimension", "best choice", "applied", "CCC before", "in-sample", "nested", "nested gain"],
            numeric=(3, 4, 5, 6),
        )
    )
    _per_fold(page, fit)
    _curves(page, fit)


def _per_fold(page: Page, fit: PostFit) -> None:
    """Each fold's nested choice, one column per step."""
    rows = []
    for name, d in fit.dimensions.items():
        for f in d.scores["per_fold"]:
            chosen = DimPost.from_dict(f)
            rows.append(
                (f["fold"], name, *(s.brief() for s in chosen.steps), num(f["ccc_before"]), num(f["ccc_after"]))
            )
    titles = [s.title for s in fit.steps]
    scores = (len(titles) + 2, len(titles) + 3)
    page.add(
        "<details><summary>each fold's nested choice (made on the other folds)</summary>"
        + table(rows, header=["fold", "dimension", *titles, "CCC before", "CCC after"], numeric=scores)
        + "</details>"
    )


def _curves(page: Page, fit: PostFit) -> None:
    """Out-of-fold CCC against the setting of the last step, when that step only delays (a shift)."""
    if not all(d.curves for d in fit.dimensions.values()):
        return
    last, before = fit.steps[-1].title, " and ".join(s.title for s in fit.steps[:-1])
    unchanged = ", ".join(s.grid()[0].describe() for s in fit.steps[:-1]) or "as predicted"
    fig = new_figure(8, 3.2)
    for ax, (name, d), key in zip(fig.subplots(1, 2, sharey=True), fit.dimensions.items(), ("ccc_v", "ccc_a")):
        c, prefix, seconds = d.curves, d.best.steps[:-1], d.best.steps[-1].delay_seconds() or 0.0
        ax.plot(c["x"], c["none"], color="0.5", lw=1.2, label=unchanged)
        if not all(s.identity for s in prefix):
            ax.plot(c["x"], c["best"], color=COLOURS[key], lw=1.8, label=", ".join(s.describe() for s in prefix))
        ax.axvline(seconds, color="grey", ls="--", lw=1, label=f"best {last} {seconds:+.2f} s")
        ax.set(title=f"{name}{'' if d.applied else ' (not applied)'}", xlabel=f"{last} (s)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower center")
    fig.axes[0].set_ylabel("out-of-fold CCC")
    page.figure(
        fig,
        _FIGURE,
        f"out-of-fold CCC against the {last}",
        f"Pooled out-of-fold CCC of each dimension against the {last} of the predictions, without "
        f"{before or 'other steps'} and with the best {before or 'setting'}; the dashed line marks the best {last}.",
    )


def write_cv_page(runs_dir: Path, summary: dict[str, Any], fit: PostFit, config: FusionConfig) -> Path:
    """Write ``RUNS/cv.html`` (and its figure in ``RUNS/figures/``); return its path."""
    make_dir(runs_dir / FIGURES, "figures folder")
    clear_figures(runs_dir, [_FIGURE])
    page = Page(runs_dir)
    _scores(page, summary, runs_dir)
    _post(page, fit)
    page.add("<h2>Settings</h2>")
    parts = config.to_dict()
    parts["model"] = {
        "name": parts["model"]["name"],
        **{f"options.{k}": v for k, v in parts["model"]["options"].items()},
    }
    settings = [
        (f"{part}.{k}", ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else v)
        for part in ("data", "model", "training")
        for k, v in parts[part].items()
        if k not in ("fold", "seed")
    ]
    settings.append(("seeds", ", ".join(map(str, summary["seeds"]))))
    page.add(table(settings, header=["setting", "value"], row_headers=True))
    subtitle = (
        f"{runs_dir.resolve()} · {config.model.name} · {len(summary['folds'])} folds × "
        f"{len(summary['seeds'])} seed(s) · P {summary['p']['mean']:.4f} ± {summary['p']['std']:.4f}"
    )
    return page.write(runs_dir / CV_HTML, "vafusion cross-validation", subtitle)


__all__ = ["CV_HTML", "write_cv_page"]
