"""What ``vafusion analyze`` writes for a video: ``<id>.csv``, ``<id>.png`` and ``<id>.html`` (figures beside it)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from vafusion.atomic import atomic_path
from vafusion.fs import make_dir
from vafusion.fusion.reports.pages import COLOURS, FIGURES, Page, esc, new_figure, table

if TYPE_CHECKING:
    from vafusion.analyze.run import AnalyzeResult

CSV_HEADER = ("frame", "seconds", "valence", "arousal", "face")


def _spans(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) runs where ``mask`` is True."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True))


def write_csv(result: AnalyzeResult, path: Path) -> Path:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        out = csv.writer(f)
        out.writerow(CSV_HEADER)
        for k, (t, (v, a), face) in enumerate(zip(result.seconds, result.values, result.face, strict=True), start=1):
            out.writerow([k, f"{t:.4f}", f"{v:.4f}", f"{a:.4f}", int(face)])
    return path


def figure(result: AnalyzeResult) -> Any:
    """Valence and arousal over time, frames without a face shaded."""
    fig = new_figure(9, 4.2)
    axes = fig.subplots(2, 1, sharex=True)
    t, step = result.seconds, 1.0 / result.fps
    for d, (ax, name, key) in enumerate(zip(axes, ("valence", "arousal"), ("ccc_v", "ccc_a"), strict=True)):
        for start, stop in _spans(~result.face):
            ax.axvspan(t[start], t[stop - 1] + step, color="0.88", lw=0, zorder=0)
        ax.plot(t, result.values[:, d], color=COLOURS[key], lw=1.2)
        ax.set_ylim(-1.05, 1.05)
        ax.set_ylabel(name)
        ax.grid(alpha=0.3)
    axes[1].set_xlabel("time (s)")
    fig.suptitle(
        f"{result.id}: {len(t)} frames at {result.fps:g} fps; grey: no face ({int((~result.face).sum())} frames)",
        fontsize=10,
    )
    return fig


def write_outputs(result: AnalyzeResult, out: Path, crops_sheet: Path) -> dict[str, Path]:
    """The three files (and the page's figures); returns them by kind."""
    make_dir(out / FIGURES, "figures folder")
    files = {"csv": write_csv(result, out / f"{result.id}.csv")}
    fig = figure(result)
    with atomic_path(out / f"{result.id}.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png")
    files["png"] = out / f"{result.id}.png"
    page = Page(out)
    page.add("<h2>Valence and arousal over time</h2>")
    page.figure(fig, f"{result.id}.png", "valence and arousal over time", "Grey bands: frames without a face.")
    if crops_sheet.is_file():
        with atomic_path(out / FIGURES / f"{result.id}-crops.png", suffix=".png") as tmp:
            shutil.copyfile(crops_sheet, tmp)
        page.add("<h2>Face crops over time</h2>")
        page.add(
            f'<figure><img src="{FIGURES}/{esc(result.id)}-crops.png" alt="face crops"><figcaption>Crops '
            "sampled evenly over the frames with a face, labelled with their frame number.</figcaption></figure>"
        )
    page.add("<h2>What made these numbers</h2>")
    about = result.about
    rows = [
        ("video", about["video"]),
        ("frames", f"{len(result.values)} ({int(result.face.sum())} with a face)"),
        ("mean valence, arousal", f"{result.values[:, 0].mean():.3f}, {result.values[:, 1].mean():.3f}"),
        ("runs", ", ".join(about["runs"])),
        ("features", ", ".join(about["features"]) + f" (as in {about['cache']})"),
        ("post-processing", about["post_processing"]),
        ("face detector", about["detector"]),
    ]
    page.add(table(rows, row_headers=True))
    files["html"] = page.write(out / f"{result.id}.html", f"vafusion analyze: {result.id}", about["video"])
    return files
