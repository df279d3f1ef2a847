"""``DIR/tune.html``: a study at a glance — the best trial, the optimisation history, parameter
importances, one slice plot per searched setting, and every trial.

A :class:`~vafusion.fusion.reports.pages.Page` (opens from disk, no network), drawn with
matplotlib like the other pages (no plotting stack of Optuna's). It shows tune.json's content
(:func:`vafusion.fusion.experiments.tune.summarize`) and needs nothing else.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.fs import make_dir
from vafusion.fusion.reports.pages import FIGURES, Page, clear_figures, esc, new_figure, note, num, table

TUNE_HTML = "tune.html"
_FIGURES = ("tune-history.png", "tune-importances.png", "tune-slices.png")
_PANEL = (3.2, 2.6)  # inches per slice panel
_STATE_COLOURS = {"complete": "tab:blue", "pruned": "tab:orange"}


def write_tune_page(study_dir: Path, summary: Mapping[str, Any]) -> Path:
    """``DIR/tune.html`` from tune.json's content."""
    make_dir(study_dir / FIGURES, "figures folder")
    clear_figures(study_dir, _FIGURES)
    page = Page(study_dir)
    counts = summary["counts"]
    page.add("<h2>Best trial</h2>")
    best = summary["best"]
    if best is None:
        page.add(note("No trial has completed yet: rerun the same command to continue the study."))
    else:
        page.add(
            f"<p>Trial {best['trial']}: validation P = {num(best['p'])} (its run: <code>{esc(best['run'])}</code>; "
            f"retrain it with <code>vafusion train CACHE --run RUN --params {esc(study_dir / 'best.json')}</code>).</p>"
        )
        page.add(table([(k, _value(v)) for k, v in best["params"].items()], header=["setting", "value"]))
    page.add(
        f"<p>{counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed, "
        f"{counts['running']} running; goal {summary['goal']} finished trials. Pruner: {esc(summary['pruner'])}; "
        f"TPE seeded by {summary['seed']}.</p>"
    )
    trials = summary["trials"]
    scored = [t for t in trials if t["p"] is not None or t["state"] == "pruned"]
    if scored:
        _history(page, trials)
    if summary["importances"]:
        _importances(page, summary["importances"])
    if summary["space"]["search"] and any(t["state"] == "complete" for t in trials):
        _slices(page, trials, summary["space"]["search"])
    page.add("<h2>Trials</h2>")
    rows = [
        (
            t["trial"],
            _state(t),
            num(t["p"]),
            t["epochs"] if t["epochs"] is not None else "—",
            num(t["seconds"], 1),
            ", ".join(f"{k}={_value(v)}" for k, v in t["params"].items()),
        )
        for t in trials
    ]
    page.add(table(rows, header=["trial", "state", "P", "epochs", "seconds", "parameters"], numeric=(0, 2, 3, 4)))
    return page.write(study_dir / TUNE_HTML, f"Tuning {summary['study']}", f"{summary['model']} on {summary['cache']}")


def _state(t: Mapping[str, Any]) -> str:
    """A trial's state with how it came about: a retry (resumed from the retried run's last.pt or not), a pause."""
    notes = []
    if t.get("retry_of") is not None:
        resumed = ", resumed" if t.get("resumed_from") is not None else ""
        notes.append(f"retry of {t['retry_of']}{resumed}")
    if t.get("timeout"):
        notes.append("stopped by --timeout")
    return t["state"] + (f" ({'; '.join(notes)})" if notes else "")


def _value(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _history(page: Page, trials: Sequence[Mapping[str, Any]]) -> None:
    """P of each complete trial by number, pruned trials at their last P, and the best so far."""
    from matplotlib.ticker import MaxNLocator

    fig = new_figure(8.0, 3.2)
    ax = fig.subplots()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trial numbers
    for state, colour in _STATE_COLOURS.items():
        mine = [t for t in trials if t["state"] == state and t["p"] is not None]
        ax.scatter([t["trial"] for t in mine], [t["p"] for t in mine], s=18, color=colour, label=state)
    complete = sorted((t["trial"], t["p"]) for t in trials if t["state"] == "complete" and t["p"] is not None)
    if complete:
        best = np.maximum.accumulate([p for _, p in complete])
        ax.step([n for n, _ in complete], best, where="post", color="tab:green", label="best so far")
    ax.set(xlabel="trial", ylabel="validation P", title="Optimisation history")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    page.add("<h2>Optimisation history</h2>")
    page.figure(fig, _FIGURES[0], "optimisation history", "Validation P by trial; the line is the best so far.")


def _importances(page: Page, importances: Mapping[str, float]) -> None:
    names = list(importances)[::-1]
    fig = new_figure(8.0, max(1.6, 0.35 * len(names) + 0.8))
    ax = fig.subplots()
    ax.barh(names, [importances[n] for n in names], color="tab:blue")
    ax.set(xlabel="importance (PED-ANOVA, sums to 1)", title="Parameter importances")
    ax.grid(axis="x", alpha=0.3)
    page.add("<h2>Parameter importances</h2>")
    page.figure(
        fig, _FIGURES[1], "parameter importances", "How much of the variation of P each setting explains (Optuna)."
    )


def _panel_margins(cols: int, rows: int) -> dict[str, float]:
    """Fixed margins (inches, as figure fractions) for a grid of slice panels: room for the y tick labels, a
    panel's title, and the rotated choice labels under the panel above. Why not layout="tight": for nine
    panels it measured ~half of tune.html's drawing time, and these panels' labels are all of one kind."""
    left, right, bottom, top, between_x, between_y = 0.55, 0.15, 0.55, 0.3, 0.55, 0.8
    width, height = _PANEL[0] * cols, _PANEL[1] * rows
    axis_w = (width - left - right - (cols - 1) * between_x) / cols
    axis_h = (height - bottom - top - (rows - 1) * between_y) / rows
    return {
        "left": left / width,
        "right": 1 - right / width,
        "bottom": bottom / height,
        "top": 1 - top / height,
        "wspace": between_x / axis_w,
        "hspace": between_y / axis_h,
    }


def _slices(page: Page, trials: Sequence[Mapping[str, Any]], search: Mapping[str, Mapping[str, Any]]) -> None:
    """One panel per searched setting: P of the complete trials against its value."""
    from matplotlib.ticker import NullFormatter

    names = list(search)
    cols = min(3, len(names))
    rows = math.ceil(len(names) / cols)
    fig = new_figure(_PANEL[0] * cols, _PANEL[1] * rows, layout=None)
    fig.subplots_adjust(**_panel_margins(cols, rows))
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    complete = [t for t in trials if t["state"] == "complete" and t["p"] is not None]
    for ax, name in zip(axes, names):
        points = [(t["params"][name], t["p"]) for t in complete if name in t["params"]]
        if "choices" in search[name]:
            labels = [str(c if not isinstance(c, list) else ",".join(map(str, c))) for c in search[name]["choices"]]
            xs: list[float] = [labels.index(str(v)) if str(v) in labels else -1 for v, _ in points]
            ax.set_xticks(range(len(labels)), labels, fontsize=7, rotation=20)
            ax.set_xlim(-0.5, len(labels) - 0.5)  # every choice, tried or not
        else:
            xs = [float(v) for v, _ in points]
            if search[name].get("log"):
                ax.set_xscale("log")
                ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on a short decade
            ax.set_xlim(float(search[name]["low"]), float(search[name]["high"]))  # the whole searched range
        ax.scatter(xs, [p for _, p in points], s=14, c=[t["trial"] for t in complete if name in t["params"]])
        ax.set_title(name, fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    page.add("<h2>Slices</h2>")
    page.figure(
        fig, _FIGURES[2], "slice plots", "Validation P of the complete trials against each setting (darker = earlier)."
    )


__all__ = ["TUNE_HTML", "write_tune_page"]
