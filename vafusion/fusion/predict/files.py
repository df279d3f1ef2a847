"""The per-video prediction files of ``predict --out DIR``, written as one set.

Why a set: DIR is what gets zipped and submitted, so a predict killed midway must not leave
some per-video files that look like a whole answer, and files of an earlier prediction (other
ids, other runs) must never mix in. The files and ``predictions.json`` (the manifest: runs,
cache, post-processing, ids, files) are written into a temporary folder beside DIR
(``.DIR.tmp-<pid>``), which is renamed to DIR once complete: DIR holds a whole set or nothing
new. A DIR holding an earlier set (its manifest) is replaced as a whole; a DIR holding anything
else is refused, so nothing of the user's is deleted. Leftovers of a killed predict (hidden
``.DIR.tmp-<pid>`` folders beside DIR) are removed by the next one.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vafusion import __version__
from vafusion.atomic import temporary_name
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, remove_stale_temporaries, write_error

HEADER = "valence,arousal"
MANIFEST = "predictions.json"


def check_out_dir(out_dir: Path) -> None:
    """Refuse, before any work, an ``--out`` that is a file or a folder holding other things than a prediction set."""
    if out_dir.exists() and not out_dir.is_dir():
        raise VafusionError(f"--out {out_dir}: a file; give a directory for the <video_id>.txt files (or --sample)")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / MANIFEST).is_file():
        raise VafusionError(
            f"--out {out_dir}: holds other files (no {MANIFEST} of an earlier `vafusion predict`); "
            f"give a new or empty directory, so that no file of another set is mixed in"
        )
    blocker = next((p for p in out_dir.parents if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise VafusionError(
            f"--out {out_dir}: cannot create it: {blocker} is a file, not a folder; choose another path"
        )


def write_prediction_file(path: Path, pred: np.ndarray) -> None:
    """Annotation format: header ``valence,arousal`` then one clipped row per frame (plain write: into
    the private temporary folder of a set)."""
    with open(path, "w") as f:
        f.write(HEADER + "\n")
        np.savetxt(f, np.clip(pred, -1.0, 1.0), fmt="%.6f", delimiter=",")


def write_prediction_set(out_dir: Path, preds: Mapping[str, np.ndarray], about: Mapping[str, Any]) -> list[Path]:
    """``out_dir/<id>.txt`` for every id of ``preds`` and ``out_dir/predictions.json`` (``about`` plus the
    files), all or nothing (see the module docstring); returns the files' final paths."""
    check_out_dir(out_dir)
    parent = make_dir(out_dir.parent if str(out_dir.parent) else Path("."), "output folder")
    remove_stale_temporaries(parent, out_dir.name)
    tmp = temporary_name(out_dir)
    files = [f"{vid}.txt" for vid in preds]
    manifest = {
        **about,
        "ids": list(preds),
        "files": files,
        "vafusion_version": __version__,
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        tmp.mkdir()
        for vid, name in zip(preds, files):
            write_prediction_file(tmp / name, preds[vid])
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        _move_into_place(tmp, out_dir)
    except OSError as e:
        raise write_error(out_dir, e) from e
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # only still there after an error
    return [out_dir / name for name in files]


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished folder to ``out_dir``; an earlier set there is moved aside first, then deleted."""
    if not out_dir.exists():
        os.replace(tmp, out_dir)
        return
    old = tmp.with_name(tmp.name + ".old")
    os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


__all__ = ["HEADER", "MANIFEST", "check_out_dir", "write_prediction_file", "write_prediction_set"]
