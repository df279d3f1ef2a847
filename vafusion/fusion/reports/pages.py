"""HTML pages with figures, as the run report and the comparison page write them.

A page opens from disk with no network: inline CSS, no scripts, figures as PNG files in a
``figures/`` folder beside it, referenced by relative path. Figures are drawn on
``matplotlib.figure.Figure`` objects with an explicit Agg canvas, never through pyplot: no
global backend is switched, no window opens, and a caller's own pyplot state (e.g. in a
notebook) is left alone.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.fs import remove_stale_temporaries

FIGURES = "figures"
DPI = 100
COLOURS = {"ccc_v": "tab:blue", "ccc_a": "tab:orange", "p": "tab:green", "label": "black", "loss": "tab:red"}
SCORES = (("ccc_v", "CCC_V"), ("ccc_a", "CCC_A"), ("p", "P"))

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2em auto;
       max-width: 980px; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; word-break: break-all; }
table { border-collapse: collapse; margin: 0.6em 0; font-size: 0.92em; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.this td { background: #fff7d6; }
.note { background: #fff4e5; border-left: 4px solid #f0a020; padding: 0.6em 1em; margin: 0.8em 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
code { background: #f4f4f4; padding: 0 0.25em; }
footer { color: #888; font-size: 0.85em; margin-top: 3em; }
"""


@dataclass
class Page:
    """HTML fragments in order, plus the figure files they reference (relative to the page's folder)."""

    folder: Path
    parts: list[str] = field(default_factory=list)
    figures: list[Path] = field(default_factory=list)

    def add(self, fragment: str) -> None:
        self.parts.append(fragment)

    def figure(self, fig: Any, name: str, alt: str, caption: str) -> None:
        """Save ``fig`` as ``figures/name`` beside the page and show it here by relative path."""
        path = self.folder / FIGURES / name
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp, dpi=DPI, format="png")
        rel = Path(FIGURES) / name
        self.figures.append(rel)
        self.add(
            f'<figure><img src="{esc(rel.as_posix())}" alt="{esc(alt)}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>"
        )

    def write(self, path: Path, title: str, subtitle: str) -> Path:
        """The whole document (title, subtitle, parts, footer) to ``path``, atomically."""
        created = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
        document = "\n".join(
            [
                "<!DOCTYPE html>",
                '<html lang="en"><head><meta charset="utf-8">',
                '<meta name="viewport" content="width=device-width, initial-scale=1">',
                f"<title>{esc(title)}</title>",
                f"<style>{_CSS}</style>",
                "</head><body>",
                f"<h1>{esc(title)}</h1>",
                f'<p class="sub">{esc(subtitle)}</p>',
                *self.parts,
                f"<footer>Written by vafusion {esc(__version__)} on {esc(created)}. Figures: <code>{FIGURES}/</code> "
                f"next to this file.</footer>",
                "</body></html>",
                "",
            ]
        )
        with atomic_path(path) as tmp:
            tmp.write_text(document, encoding="utf-8")
        return path


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def num(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return esc(value)
    return "NaN" if math.isnan(x) else f"{x:.{digits}f}"


def seconds_text(seconds: float | None) -> str:
    """A run's training time for tables: ``41 s``, ``12.5 min``, ``3.2 h``; ``—`` when not recorded."""
    if seconds is None:
        return "—"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def table(
    rows: Iterable[Sequence[Any]],
    header: Sequence[str] | None = None,
    numeric: Sequence[int] = (),
    highlight: int | None = None,
    row_headers: bool = False,
) -> str:
    """Rows of already-formatted cells (escaped here); ``numeric`` columns are right-aligned;
    ``row_headers``: the first cell of each row is a ``<th>`` (key-value tables)."""
    out = ["<table>"]
    if header:
        out.append("<tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>")
    for i, row in enumerate(rows):
        cls = ' class="this"' if i == highlight else ""
        cells = "".join(
            f"<th>{esc(c)}</th>"
            if row_headers and j == 0
            else f'<td class="num">{esc(c)}</td>'
            if j in numeric
            else f"<td>{esc(c)}</td>"
            for j, c in enumerate(row)
        )
        out.append(f"<tr{cls}>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def note(text: str) -> str:
    return f'<p class="note">{text}</p>'  # callers escape what they interpolate


def new_figure(width: float, height: float, layout: Literal["tight"] | None = "tight") -> Any:
    """A Figure on an explicit Agg canvas (no pyplot: no global backend, no GUI). ``layout=None`` for a figure
    that places its axes itself: "tight" measures every label by drawing the figure once more before saving,
    which is most of the cost of a figure of many small panels."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout)
    FigureCanvasAgg(fig)
    return fig


def clear_figures(folder: Path, names: Sequence[str], prefixes: Sequence[str] = ()) -> None:
    """Remove earlier copies of a page's figures, so a page never sits next to figures it does not show
    (and temporary files of a killed writer there and beside the page)."""
    for path in (folder / FIGURES).glob("*.png"):
        if path.name in names or path.name.startswith(tuple(prefixes)):
            path.unlink(missing_ok=True)
    remove_stale_temporaries(folder / FIGURES)
    remove_stale_temporaries(folder)


def score_chart(page: Page, rows: Sequence[dict[str, Any]], name: str, title: str, caption: str) -> None:
    """Grouped bars of CCC_V, CCC_A and P per row (``row["name"]`` under each group).

    A row with ``ccc_v_std`` (etc.) gets error bars of ± that std, and its bars show the mean.
    """
    n = len(rows)
    fig = new_figure(max(8.0, 0.9 * n + 2), 3.4)
    ax = fig.subplots()
    x = np.arange(n)
    for j, (key, label) in enumerate(SCORES):
        values = [float(r[key]) for r in rows]
        errors = [float(r.get(f"{key}_std", 0.0)) for r in rows]
        bars = ax.bar(
            x + (j - 1) * 0.27,
            values,
            width=0.27,
            color=COLOURS[key],
            label=label,
            yerr=errors if any(errors) else None,
            capsize=2,
            error_kw={"lw": 0.8},
        )
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=1)
    # Long names wrap onto several lines instead of running into their neighbours.
    names = [textwrap.fill(str(r["name"]), width=max(12, int(110 / n)), break_long_words=False) for r in rows]
    ax.set_xticks(x, names, rotation=20 if n > 8 else 0, ha="right" if n > 8 else "center", fontsize=8)
    values = [float(r[k]) + s * float(r.get(f"{k}_std", 0.0)) for r in rows for k, _ in SCORES for s in (-1, 1)]
    ax.set_ylim(min(0.0, min(values) - 0.05), max(1.0, max(values) + 0.08))
    ax.axhline(0, color="grey", lw=0.8)
    ax.set(ylabel="CCC", title=title)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    ax.grid(axis="y", alpha=0.3)
    page.figure(fig, name, title, caption)


__all__ = [
    "COLOURS",
    "FIGURES",
    "SCORES",
    "Page",
    "clear_figures",
    "esc",
    "new_figure",
    "note",
    "num",
    "score_chart",
    "seconds_text",
    "table",
]
