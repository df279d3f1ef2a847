"""Where runs are on disk: the cross-validation layout, run discovery, and where ``post.json`` lives.

``vafusion cv`` trains into ``RUNS/fold-K`` (one seed) or ``RUNS/fold-K/seed-S`` (``--seeds``
above 1) and writes ``RUNS/cv.json`` and ``RUNS/post.json`` beside the folds. ``vafusion predict``
takes runs or directories of runs (``RUNS``, ``RUNS/fold-*``, ``RUNS/fold-*/seed-*`` all name the
same runs) and finds the ``post.json`` of the cross-validation they belong to: in the runs'
common parent directory, or, while that directory is itself a ``fold-K`` or ``seed-S`` folder of
the layout, in the one above it. Nothing above the cross-validation's own directory is searched,
so a stray ``post.json`` elsewhere is never picked up.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

from vafusion.errors import VafusionError
from vafusion.fusion.runs.checkpoint import BEST

POST_FILE = "post.json"
"""The post-processing ``vafusion cv`` chose (:mod:`vafusion.fusion.post.apply`), beside the folds."""
_LAYOUT_DIR = re.compile(r"(fold|seed)-\d+")


def fold_dir(runs_dir: Path, fold: int) -> Path:
    return runs_dir / f"fold-{fold}"


def seed_dir(fold_directory: Path, seed: int) -> Path:
    return fold_directory / f"seed-{seed}"


def is_run(path: Path) -> bool:
    """A run directory: one holding a best checkpoint."""
    return (path / BEST).is_file()


def find_runs(paths: Sequence[str | Path]) -> list[Path]:
    """The runs named by ``paths``: each a run directory, or a directory with runs anywhere below it.

    A run reached twice (``RUNS RUNS/fold-1``, or the same folder given twice) is an error:
    averaging it twice would silently weight it double.
    """
    runs: list[Path] = []
    seen: dict[Path, Path] = {}  # resolved run -> the argument that reached it
    for given in map(Path, paths):
        if not given.is_dir():
            raise VafusionError(f"{given}: no such run directory")
        found = [given] if is_run(given) else sorted(p.parent for p in given.rglob(BEST) if is_run(p.parent))
        if not found:
            raise VafusionError(
                f"{given}: neither a run (no {BEST}) nor a directory holding runs; "
                f"give run directories of `vafusion train` or `vafusion cv`"
            )
        for run in found:
            key = run.resolve()
            if key in seen:
                through = f"{seen[key]} and {given}" if seen[key] != given else f"{given}, given twice"
                raise VafusionError(
                    f"{run}: named twice (through {through}); give each run once, or it would count "
                    f"twice in the average"
                )
            seen[key] = given
            runs.append(run)
    return runs


def cv_root(runs: Sequence[Path]) -> Path:
    """The runs' common parent, climbing out of ``fold-K`` / ``seed-S`` folders of the cv layout."""
    root = Path(os.path.commonpath([str(r.resolve().parent) for r in runs]))
    while _LAYOUT_DIR.fullmatch(root.name) and root.parent != root:
        root = root.parent
    return root


def find_post(runs: Sequence[Path]) -> Path | None:
    """The ``post.json`` of the cross-validation ``runs`` belong to (see the module docstring), if any."""
    path = cv_root(runs) / POST_FILE
    return path if path.is_file() else None


__all__ = ["cv_root", "find_post", "find_runs", "fold_dir", "is_run", "seed_dir"]
