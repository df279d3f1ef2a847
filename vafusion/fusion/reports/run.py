"""A run's report: one HTML page (``RUN/report.html``) and its PNG figures (``RUN/figures/``).

The page answers the questions one asks of a run without opening a notebook: what was
trained on what, how training went (learning curves), what the predictions look like next
to the labels (over time, in the valence-arousal plane, per validation id), and, when the
caller passes one, how the run compares with others. It is a :class:`~vafusion.fusion.reports.pages.Page`:
it opens from disk with no network.

Predictions come from the run's best checkpoint on its own validation ids, through the same
code as ``vafusion evaluate`` (:func:`vafusion.fusion.runs.evaluate.predict_partition`). When the
cache the run was trained on is gone (moved, or the run was copied elsewhere) the report is
still written, without the prediction figures, and says that ``--cache`` brings them back.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vafusion.errors import VafusionError
from vafusion.fs import make_dir
from vafusion.fusion.data.loading import LoadedCache
from vafusion.fusion.models import count_parameters, is_closed_form
from vafusion.fusion.reports.pages import (
    COLOURS,
    FIGURES,
    Page,
    clear_figures,
    esc,
    new_figure,
    note,
    num,
    score_chart,
    table,
)
from vafusion.fusion.runs import checkpoint as ckpt_mod
from vafusion.fusion.runs.checkpoint import TrainedRun, load_run
from vafusion.fusion.runs.evaluate import PartitionPredictions, predict_partition, run_cache_dir

REPORT = "report.html"
MAX_SCATTER_POINTS = 5000
# Names of the figures this module writes; older copies are removed before a report is
# written, so a report never sits next to figures of an earlier one that it does not show.
_OWN_FIGURES = ("curves.png", "va_scatter.png", "per_id_ccc.png", "comparison.png")
_SERIES_PREFIX = "series-"

# ---- reading the run ------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _parameters(run: TrainedRun, summary: dict[str, Any] | None) -> int:
    if summary and isinstance(summary.get("parameters"), int):
        return int(summary["parameters"])
    return count_parameters(run.model)


# ---- sections -------------------------------------------------------------------------------


def _training_time(rows: list[dict[str, Any]], best_epoch: int) -> str:
    """The run's wall seconds and when its best epoch was scored, from metrics.jsonl's ``elapsed``."""
    last = rows[-1].get("elapsed") if rows else None
    at_best = next((r.get("elapsed") for r in rows if r["epoch"] == best_epoch), None)
    if last is None or at_best is None:
        return "— (not recorded: a run of an earlier version)"
    return f"{last:.1f} s (wall clock, start-up included); best epoch at {at_best:.1f} s"


def _header(
    page: Page,
    run: TrainedRun,
    summary: dict[str, Any] | None,
    rows: list[dict[str, Any]],
    trained_cache: str,
    cache_here: bool,
    used_cache: Path | None,
) -> None:
    cfg, data = run.config, run.config.data
    best = run.metrics
    spec = cfg.model.spec
    features = ", ".join(f"{f} ({d})" for f, d in zip(data.features, run.dims))
    split = (
        "official (Train_Set trains, Validation_Set validates)"
        if data.split == "official"
        else f"folds: fold {data.fold} of {data.folds} validates"
    )
    epochs_run = summary.get("epochs_run") if summary else None
    if epochs_run is None:
        epochs_run = len([r for r in rows if r.get("loss") is not None])
    fps = run.fingerprints.get("features", {})
    info = [
        ("run directory", str(run.run_dir.resolve())),
        ("model", f"{spec.name} — {spec.description}"),
        ("features (dim)", features + "  — the first is the visual query stream"),
        ("split", split),
        ("best epoch", "— (closed-form fit)" if is_closed_form(run.model) else f"{run.epoch} of {epochs_run} run"),
        ("parameters", f"{_parameters(run, summary):,}"),
        ("training time", _training_time(rows, run.epoch)),
        ("trained on cache", trained_cache + ("" if cache_here else "  (not here now)")),
        ("predictions below from", str(used_cache) if used_cache else "— (no cache reachable)"),
        ("corpus fingerprint", str(run.fingerprints.get("corpus", "—"))[:16]),
        ("feature fingerprints", ", ".join(f"{f}: {str(fps.get(f, '—'))[:16]}" for f in data.features)),
    ]
    page.add("<h2>Run</h2>")
    page.add(table(info, row_headers=True))
    page.add(
        "<p>Validation scores of the best checkpoint (CCC over all validation frames, the challenge's "
        "way; P = (CCC_V + CCC_A) / 2):</p>"
    )
    page.add(
        table(
            [[num(best.get("ccc_v")), num(best.get("ccc_a")), num(best.get("p"))]],
            header=["CCC_V", "CCC_A", "P"],
            numeric=(0, 1, 2),
        )
    )
    config_rows = []
    for part in ("data", "model", "training"):
        values = cfg.to_dict()[part]
        if part == "model":
            values = {"name": values["name"], **{f"options.{k}": v for k, v in values["options"].items()}}
        for key, value in values.items():
            shown = ", ".join(str(v) for v in value) if isinstance(value, (list, tuple)) else value
            config_rows.append((f"{part}.{key}", shown))
    page.add("<h2>Configuration</h2>")
    page.add(table(config_rows, header=["option", "value"], row_headers=True))


def _learning_curves(page: Page, rows: list[dict[str, Any]], best_epoch: int, closed_form: bool) -> None:
    page.add("<h2>Learning curves</h2>")
    trained = [r for r in rows if r.get("loss") is not None]
    if not trained:
        if closed_form:
            page.add(
                note(
                    "This model is fitted in closed form: no epochs, so no learning curves. "
                    "Its validation scores are in the table above."
                )
            )
        else:
            page.add(note(f"No epoch rows in <code>{esc(ckpt_mod.METRICS)}</code>: nothing to plot."))
        return
    from matplotlib.ticker import MaxNLocator

    epochs = [r["epoch"] for r in trained]
    timed = all(r.get("elapsed") is not None for r in trained)
    fig = new_figure(12 if timed else 8, 3)
    ax_loss, ax_val, *ax_time = fig.subplots(1, 3 if timed else 2)
    ax_loss.plot(epochs, [r["loss"] for r in trained], "o-", ms=3, color=COLOURS["loss"], label="training loss")
    ax_loss.set(title="training loss (1 − CCC)", xlabel="epoch", ylabel="loss")
    _validation_curves(ax_val, epochs, trained)
    ax_val.axvline(best_epoch, color="grey", ls="--", lw=1, label=f"best (epoch {best_epoch})")
    ax_val.set(title="validation", xlabel="epoch", ylabel="CCC")
    for ax in (ax_loss, ax_val):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    if timed:
        _against_time(ax_time[0], trained, best_epoch)
    (ax_time[0] if timed else ax_val).legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    page.figure(
        fig,
        "curves.png",
        "learning curves",
        f"Training loss and validation CCC_V, CCC_A, P over {len(trained)} epoch(s)"
        + (", and validation P against the run's wall-clock seconds" if timed else "")
        + "; the dashed line marks the best epoch (the checkpoint used below).",
    )
    if timed:
        _epoch_table(page, trained)


def _validation_curves(ax: Any, xs: list[Any], trained: list[dict[str, Any]]) -> None:
    """CCC_V, CCC_A and P of each epoch at XS (epochs or elapsed seconds), P drawn thickest."""
    for key, name in (("ccc_v", "CCC_V"), ("ccc_a", "CCC_A"), ("p", "P")):
        ax.plot(
            xs,
            [r.get(key, np.nan) for r in trained],
            "o-",
            ms=3,
            color=COLOURS[key],
            label=name,
            lw=2 if key == "p" else 1.2,
        )


def _against_time(ax: Any, trained: list[dict[str, Any]], best_epoch: int) -> None:
    """Validation CCC_V, CCC_A, P against the elapsed wall seconds of the run (start-up included)."""
    elapsed = [r["elapsed"] for r in trained]
    _validation_curves(ax, elapsed, trained)
    best = next((r["elapsed"] for r in trained if r["epoch"] == best_epoch), None)
    if best is not None:
        ax.axvline(best, color="grey", ls="--", lw=1, label=f"best ({best:.0f} s)")
    ax.set(title="validation against time", xlabel="seconds since the start", ylabel="CCC")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)


def _epoch_table(page: Page, trained: list[dict[str, Any]]) -> None:
    """Every epoch's scores and wall seconds (training and validation), and the run's elapsed seconds."""
    page.add(
        table(
            [
                (
                    r["epoch"],
                    *(num(r[k]) for k in ("loss", "ccc_v", "ccc_a", "p")),
                    f"{r['lr']:.2e}",
                    f"{r['seconds']:.1f}",
                    f"{r['elapsed']:.1f}",
                )
                for r in trained
            ],
            header=["epoch", "loss", "CCC_V", "CCC_A", "P", "learning rate", "seconds", "elapsed s"],
            numeric=(1, 2, 3, 4, 6, 7),
        )
    )


def pick_ids(per_id: list[dict[str, Any]], n: int) -> list[tuple[str, str]]:
    """``n`` ids spread evenly over the ranking by per-id P, best first, worst last.

    With n = 3: the best, the median and the worst id; n = 1: the best. Ids without a single
    labelled frame have no score worth showing and are skipped. Returns ``(id, why)`` pairs.
    """
    ranked = sorted((r for r in per_id if r.get("frames", 1) > 0), key=lambda r: (-r["p"], r["id"]))
    if n <= 0 or not ranked:
        return []
    positions = sorted(set(int(round(x)) for x in np.linspace(0, len(ranked) - 1, min(n, len(ranked)))))
    picked = []
    for i, pos in enumerate(positions):
        if pos == 0:
            why = "best"
        elif pos == len(ranked) - 1:
            why = "worst"
        elif len(positions) == 3 and i == 1:
            why = "median"
        else:
            why = f"rank {pos + 1}"
        picked.append((ranked[pos]["id"], f"{why} of {len(ranked)} by P"))
    return picked


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs where ``mask`` is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)))


def _series(page: Page, result: PartitionPredictions, n_ids: int, visual: str) -> None:
    picked = pick_ids(result.scores["per_id"], n_ids)
    if not picked:
        return
    per_id = {r["id"]: r for r in result.scores["per_id"]}
    page.add("<h3>Predicted and true valence and arousal over time</h3>")
    page.add(
        f"<p>{len(picked)} validation id(s) spread over the ranking by per-id P (best, median, worst for 3). "
        f"Gaps in the label line are frames without a label; grey bands are frames without the "
        f"<code>{esc(visual)}</code> stream (no face).</p>"
    )
    loaded = result.loaded
    for k, (vid, why) in enumerate(picked, start=1):
        entry = loaded.index[vid]
        rows = loaded.rows(vid)
        true = loaded.labels[rows]
        pred = result.predictions[vid]
        t = np.arange(len(pred)) / float(entry.fps)  # frame k (1-based) is the instant (k - 1) / fps
        absent = ~loaded.masks[0][rows]
        fig = new_figure(8, 4.2)
        axes = fig.subplots(2, 1, sharex=True)
        score = per_id[vid]
        for d, (ax, name, key) in enumerate(zip(axes, ("valence", "arousal"), ("ccc_v", "ccc_a"))):
            for start, stop in _spans(absent):
                ax.axvspan(t[start], t[stop - 1] + 1.0 / entry.fps, color="0.88", lw=0, zorder=0)
            ax.plot(t, true[:, d], color=COLOURS["label"], lw=2.0, label="label")
            ax.plot(t, pred[:, d], color=COLOURS[key], lw=1.0, label="prediction")
            ax.set_ylim(-1.05, 1.05)
            ax.set_ylabel(name)
            ax.set_title(f"{name}: CCC {score[key]:.3f}", fontsize=9, loc="left")
            ax.grid(alpha=0.3)
        handles, labels = axes[0].get_legend_handles_labels()
        if absent.any():
            from matplotlib.patches import Patch

            handles, labels = [*handles, Patch(color="0.88")], [*labels, f"no {visual}"]
        # above the plot, right of the panel title: never over the curves
        axes[0].legend(
            handles,
            labels,
            fontsize=8,
            ncol=len(labels),
            loc="lower right",
            bbox_to_anchor=(1.0, 1.0),
            frameon=False,
            borderaxespad=0.1,
        )
        axes[1].set_xlabel("time (s)")
        fig.suptitle(f"{vid} ({why}): P {score['p']:.3f}, {len(pred)} frames at {entry.fps:g} fps", fontsize=10)
        page.figure(
            fig,
            f"{_SERIES_PREFIX}{k}.png",
            f"valence and arousal over time, {vid}",
            f"{vid} — {why}; CCC_V {score['ccc_v']:.4f}, CCC_A {score['ccc_a']:.4f}, P {score['p']:.4f}.",
        )


def _scatter(page: Page, result: PartitionPredictions) -> None:
    loaded = result.loaded
    trues = np.concatenate([loaded.labels[loaded.rows(v)] for v in result.ids])
    preds = np.concatenate([result.predictions[v] for v in result.ids])
    keep = np.isfinite(trues).all(axis=1)
    trues, preds = trues[keep], preds[keep]
    total = len(trues)
    if total == 0:
        return
    if total > MAX_SCATTER_POINTS:
        chosen = np.sort(np.random.default_rng(0).choice(total, MAX_SCATTER_POINTS, replace=False))
        trues, preds = trues[chosen], preds[chosen]
    fig = new_figure(5.5, 5.5)
    ax = fig.subplots()
    alpha = 0.6 if len(trues) < 1000 else 0.3 if len(trues) < 3000 else 0.2  # dense clouds need more see-through
    ax.scatter(trues[:, 0], trues[:, 1], s=5, alpha=alpha, color="0.25", lw=0, label="labels")
    ax.scatter(preds[:, 0], preds[:, 1], s=5, alpha=alpha, color="tab:red", lw=0, label="predictions")
    ax.axhline(0, color="grey", lw=0.6)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set(
        xlim=(-1, 1),
        ylim=(-1, 1),
        xlabel="valence",
        ylabel="arousal",
        aspect="equal",
        title=f"validation frames ({len(trues):,} of {total:,} shown)",
    )
    legend = ax.legend(fontsize=8, loc="upper left", markerscale=3)
    for handle in legend.legend_handles:
        handle.set_alpha(0.8)
    ax.grid(alpha=0.3)
    page.add("<h3>Valence-arousal plane</h3>")
    page.figure(
        fig,
        "va_scatter.png",
        "valence-arousal scatter of predictions and labels",
        f"Labelled validation frames (both dimensions labelled; a seeded subsample of at most "
        f"{MAX_SCATTER_POINTS:,}): labels and predictions as (valence, arousal) points. Predictions that "
        f"cluster near the centre while labels spread out are the typical sign of an under-confident model.",
    )


def _per_id(page: Page, result: PartitionPredictions) -> None:
    rows = sorted(result.scores["per_id"], key=lambda r: (-r["p"], r["id"]))
    if not rows:
        return
    n = len(rows)
    fig = new_figure(8, max(3.0, 0.22 * n + 1.2))
    ax = fig.subplots()
    y = np.arange(n)
    ax.barh(y - 0.2, [r["ccc_v"] for r in rows], height=0.4, color=COLOURS["ccc_v"], label="CCC_V")
    ax.barh(y + 0.2, [r["ccc_a"] for r in rows], height=0.4, color=COLOURS["ccc_a"], label="CCC_A")
    ax.set_yticks(y, [r["id"] for r in rows], fontsize=8 if n <= 40 else 6)
    ax.invert_yaxis()  # best id on top
    ax.axvline(0, color="grey", lw=0.8)
    lo = min(0.0, min(min(r["ccc_v"], r["ccc_a"]) for r in rows) - 0.05)
    ax.set(
        xlim=(max(-1.0, lo), 1.0), xlabel="CCC", title=f"per-id CCC on {n} validation ids (sorted by P, best on top)"
    )
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="x", alpha=0.3)
    page.add("<h3>Per-id CCC</h3>")
    page.figure(
        fig,
        "per_id_ccc.png",
        "per-id CCC bars",
        "CCC_V and CCC_A of each validation id on its own frames. The partition score above is not their mean: "
        "the challenge computes CCC over all frames at once.",
    )
    cells = [(r["id"], r["frames"], num(r["ccc_v"]), num(r["ccc_a"]), num(r["p"])) for r in rows]
    page.add(
        "<details><summary>per-id table</summary>"
        + table(cells, header=["id", "frames", "CCC_V", "CCC_A", "P"], numeric=(1, 2, 3, 4))
        + "</details>"
    )


def _predictions(
    page: Page, run: TrainedRun, result: PartitionPredictions | None, trained_cache: str, n_ids: int
) -> None:
    page.add("<h2>Validation predictions</h2>")
    if result is None:
        page.add(
            note(
                f"The cache this run was trained on (<code>{esc(trained_cache or '?')}</code>) is not here, so the "
                f"prediction figures (time series, valence-arousal plane, per-id CCC) are left out. They need "
                f"<code>--cache</code>: <code>vafusion report {esc(run.run_dir)} --cache CACHE</code>."
            )
        )
        return
    s = result.scores
    page.add(
        f"<p>The best checkpoint predicts the run's {len(result.ids)} validation id(s) from "
        f"<code>{esc(result.cache_dir)}</code> (window predictions overlap-averaged per frame): "
        f"CCC_V {num(s['ccc_v'])}, CCC_A {num(s['ccc_a'])}, P {num(s['p'])}.</p>"
    )
    _series(page, result, n_ids, run.config.data.features[0])
    _scatter(page, result)
    _per_id(page, result)


def _check_comparison(comparison: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for i, row in enumerate(comparison):
        missing = [k for k in ("name", "ccc_v", "ccc_a", "p") if not isinstance(row, dict) or k not in row]
        if missing:
            raise VafusionError(
                f"report comparison row {i + 1}: missing {', '.join(missing)}; give dicts with name, ccc_v, ccc_a, p"
            )
        rows.append(row)
    return rows


def _comparison(page: Page, comparison: list[dict[str, Any]], this_run: Path) -> None:
    page.add("<h2>Comparison</h2>")
    if not comparison:
        page.add("<p>No runs to compare.</p>")
        return
    this = next(
        (i for i, r in enumerate(comparison) if r.get("run") and Path(r["run"]).resolve() == this_run.resolve()), None
    )
    rows = [(r["name"], num(r["ccc_v"]), num(r["ccc_a"]), num(r["p"])) for r in comparison]
    page.add(table(rows, header=["run", "CCC_V", "CCC_A", "P"], numeric=(1, 2, 3), highlight=this))
    score_chart(page, comparison, "comparison.png", "validation scores by run", "CCC_V, CCC_A and P of each run.")


# ---- the page -------------------------------------------------------------------------------


def write_report(
    run_dir: str | Path,
    cache_dir: str | Path | None = None,
    comparison: Sequence[dict[str, Any]] | None = None,
    n_ids: int = 3,
    *,
    device: str = "auto",
    loaded: LoadedCache | None = None,
) -> Path:
    """Write ``run_dir/report.html`` and its figures in ``run_dir/figures/``; return the HTML's path.

    ``cache_dir``: where to read the validation ids' features and labels from (default: the
    cache the run was trained on; if that is gone the report is written without prediction
    figures and says so). ``comparison``: rows ``{"name", "ccc_v", "ccc_a", "p"}`` (an optional
    ``"run"`` path highlights this run's row) for a table and bar chart; ``None`` leaves the
    section out. ``n_ids``: how many validation ids get time-series figures (see
    :func:`pick_ids`). ``loaded``: the run's cache already in RAM (from the trainer), read
    instead of ``cache_dir``.
    """
    run_dir = Path(run_dir)
    if n_ids < 0:
        raise VafusionError(f"--ids {n_ids}: must be >= 0")
    rows_cmp = _check_comparison(comparison) if comparison is not None else None
    run = load_run(run_dir)
    summary = _read_json(run_dir / ckpt_mod.SUMMARY)
    rows = ckpt_mod.read_metrics(run_dir)
    trained_cache = str(run.fingerprints.get("cache") or "")
    cache_here = bool(trained_cache) and Path(trained_cache).is_dir()
    if cache_dir is not None and not Path(cache_dir).is_dir():
        raise VafusionError(f"--cache {cache_dir}: no such cache directory")
    result = None
    if loaded is not None:
        result = predict_partition(run, device=device, loaded=loaded)
    elif cache_dir is not None or cache_here:
        result = predict_partition(run, run_cache_dir(run, cache_dir), "validation", device)

    make_dir(run_dir / FIGURES, "figures folder")
    clear_figures(run_dir, _OWN_FIGURES, [_SERIES_PREFIX])
    page = Page(run_dir)
    _header(page, run, summary, rows, trained_cache or "—", cache_here, result.cache_dir if result else None)
    _learning_curves(page, rows, run.epoch, is_closed_form(run.model))
    _predictions(page, run, result, trained_cache, n_ids)
    if rows_cmp is not None:
        _comparison(page, rows_cmp, run_dir)
    subtitle = (
        f"{run_dir.resolve()} · {run.config.model.name} · {', '.join(run.config.data.features)} · "
        f"P {num(run.metrics.get('p'))}"
    )
    return page.write(run_dir / REPORT, f"vafusion report — {run_dir.resolve().name}", subtitle)


def report_on_trained(
    device: str = "auto", log: Callable[[str], None] | None = None
) -> Callable[[Path, LoadedCache], None]:
    """The ``on_trained`` of :func:`~vafusion.fusion.runs.train.train` that writes the run's report.

    Why a hook: training writes no page itself (the ``runs`` room comes before this one), yet the
    report belongs before ``summary.json`` (a finished run has its report) and should use the
    cache the trainer already holds. ``log`` gets ``report: PATH``.
    """
    say = log or (lambda msg: None)

    def write(run_dir: Path, loaded: LoadedCache) -> None:
        say(f"report: {write_report(run_dir, loaded.cache_dir, device=device, loaded=loaded)}")

    return write


__all__ = ["REPORT", "pick_ids", "report_on_trained", "write_report"]
