"""``vafusion cache import``: features computed elsewhere, brought onto a cache's frame grid.

A folder holds one file per video id: ``<video_id>.npy`` (a 2-D numeric array) or
``<video_id>.csv`` (comma-separated numbers, an optional header line). Either

* already on the frame grid: row k is frame k (lengths may differ from the corpus' T by
  ``tolerance`` frames: extra rows are dropped, missing ones masked), or
* with ``timestamps``: the first column is the time in seconds of each row (increasing);
  the rows go onto the grid through the shared aligner (mean over each frame's span, as
  every built-in track feature), frames outside the covered time are masked.

Rows holding a NaN become masked rows. Everything is checked before anything is written
(ids the corpus does not have, inconsistent widths, non-numeric values, lengths beyond the
tolerance: one line naming the file); then each video is written through the crash-safe
:class:`~vafusion.cache.writer.FeatureWriter`, so an interrupted import resumes. The
provenance records each file's sha256, as one digest of the ``sha256sum`` listing.

It lives in ``extract/`` because it needs the aligner, which ``cache/`` may not import.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from vafusion.cache.corpus_index import VideoEntry, read_corpus_index
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.contract import FEATURE_NAME, FLOAT16_MAX, RESERVED_NAMES
from vafusion.extract.corpus import FRAME_MISMATCH_TOLERANCE
from vafusion.hashing import sha256_file

SUFFIXES = (".npy", ".csv")


@dataclass
class ImportReport:
    path: Path
    imported: int = 0
    skipped: int = 0  # already in the cache
    warnings: list[str] = field(default_factory=list)


def _read_csv(path: Path) -> np.ndarray:
    rows: list[list[float]] = []
    with open(path, newline="") as f:
        for line_no, fields in enumerate(csv.reader(f), start=1):
            if not fields:
                continue
            try:
                rows.append([float(x) for x in fields])
            except ValueError as e:
                if line_no == 1 and not rows:  # a header
                    continue
                bad = next(x for x in fields if not _is_number(x))
                raise VafusionError(
                    f"{path}:{line_no}: non-numeric value {bad!r}; write numbers only (NaN for a missing row)"
                ) from e
    if rows and len({len(r) for r in rows}) > 1:
        raise VafusionError(f"{path}: rows have different numbers of columns; write one table")
    return np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def read_table(path: Path) -> np.ndarray:
    """A file's ``(N, columns)`` float64 table; one-line errors naming the file."""
    if path.suffix == ".csv":
        table = _read_csv(path)
    else:
        try:
            table = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise VafusionError(
                f"{path}: not a numpy array file ({str(e).splitlines()[0]}); write it with np.save"
            ) from e
        if table.dtype.kind not in "iuf":
            raise VafusionError(f"{path}: holds {table.dtype} values; write numbers (float or int)")
        table = table.astype(np.float64)
    if table.ndim != 2 or table.shape[0] == 0 or table.shape[1] == 0:
        raise VafusionError(f"{path}: expected a non-empty 2-D table (rows, columns), got shape {table.shape}")
    return table


def _on_grid(path: Path, table: np.ndarray, entry: VideoEntry, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    n, t = len(table), entry.n_frames
    if abs(n - t) > tolerance:
        raise VafusionError(
            f"{path}: {n} rows, but {entry.id} has {t} frames (tolerance {tolerance}); "
            "check the id, or pass --timestamps if the first column is time"
        )
    rows = np.zeros((t, table.shape[1]))
    rows[: min(n, t)] = table[:t]
    mask = np.arange(t) < n
    return rows, mask


def _timestamped(path: Path, table: np.ndarray, entry: VideoEntry, tolerance: int) -> tuple[np.ndarray, np.ndarray]:
    if table.shape[1] < 2:
        raise VafusionError(f"{path}: --timestamps needs a time column and at least one value column")
    times, values = table[:, 0], table[:, 1:]
    try:
        steps = align.Steps.at(times)
    except ValueError as e:
        raise VafusionError(f"{path}: first column (seconds): {e}") from e
    frame_times = entry.instants()
    slack = tolerance / entry.fps
    if times[0] < -slack or times[-1] > frame_times[-1] + slack:
        raise VafusionError(
            f"{path}: times {times[0]:g}..{times[-1]:g} s run beyond {entry.id}'s frames "
            f"(0..{frame_times[-1]:g} s, tolerance {tolerance} frames); check the id and the unit (seconds)"
        )
    import torch

    nan = np.isnan(values).any(axis=1)
    clean = np.where(nan[:, None], 0.0, values)  # a NaN would spread through the span sums
    rows = align.span_mean(torch.from_numpy(clean), steps, frame_times).double().numpy()
    touched = align.span_mean(torch.from_numpy(nan[:, None].astype(np.float64)), steps, frame_times).numpy()[:, 0]
    rows[touched > 0] = np.nan  # a frame pooled from a NaN row is a NaN row
    half = 0.5 * steps.hop
    mask = (frame_times >= times[0] - half) & (frame_times <= times[-1] + half)
    return rows, mask


def _files(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise VafusionError(f"{folder}: no such folder; pass the folder of <video_id>.npy|.csv files")
    found: dict[str, Path] = {}
    for path in sorted(p for p in folder.iterdir() if p.suffix in SUFFIXES and p.is_file()):
        if path.stem in found:
            raise VafusionError(f"{path}: {found[path.stem].name} is there too; keep one file per video id")
        found[path.stem] = path
    if not found:
        raise VafusionError(f"{folder}: no <video_id>.npy or .csv files")
    return found


def _provenance(feature: str, files: dict[str, Path], timestamps: bool, tolerance: int, width: int) -> dict:
    listing = "".join(f"{sha256_file(p)}  {p.name}\n" for p in sorted(files.values(), key=lambda p: p.name))
    return {
        "model": "imported",
        "feature": feature,
        "dim": width,
        "files": len(files),
        "sha256": hashlib.sha256(listing.encode()).hexdigest(),
        "sha256_of": "`sha256sum` lines of the files, sorted by name (LC_ALL=C), concatenated",
        "alignment": align.SPAN_MEAN + " (first column: seconds)" if timestamps else "rows on the frame grid",
        "tolerance_frames": tolerance,
        "missing": "NaN rows and frames the file does not cover: mask False",
        "timing": align.GRID_TIMING,
    }


def import_features(
    cache: str | Path,
    feature: str,
    folder: str | Path,
    *,
    timestamps: bool = False,
    tolerance: int = FRAME_MISMATCH_TOLERANCE,
    overwrite: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import ``folder``'s files as feature ``feature`` of ``cache``; resumable; see the module doc."""
    cache, folder = Path(cache), Path(folder)
    if not FEATURE_NAME.match(feature) or feature in RESERVED_NAMES:
        raise VafusionError(f"FEATURE_NAME {feature!r}: use letters, digits, _ . + - (it names the file <name>.h5)")
    index = read_corpus_index(cache)
    files = _files(folder)
    unknown = sorted(set(files) - set(index.ids))
    if unknown:
        raise VafusionError(
            f"{files[unknown[0]]}: {unknown[0]} is not a video id of {cache} "
            f"({len(unknown)} such file(s)); rename or remove them"
        )
    place = _timestamped if timestamps else _on_grid
    width: int | None = None
    for vid, path in files.items():  # everything checked before anything is written
        table = read_table(path)
        cols = table.shape[1] - (1 if timestamps else 0)
        if width is not None and cols != width:
            raise VafusionError(
                f"{path}: {cols} value columns, the other files have {width}; import one feature at a time"
            )
        width = cols
        rows, _ = place(path, table, index[vid], tolerance)
        if np.abs(np.nan_to_num(rows)).max(initial=0.0) > FLOAT16_MAX:
            raise VafusionError(f"{path}: values beyond +-{FLOAT16_MAX:g}; the cache stores float16: scale them")
    assert width is not None  # there is a file: _files refuses a folder without any
    report = ImportReport(path=cache)
    absent = [i for i in index.ids if i not in files]
    if absent:
        report.warnings.append(
            f"{len(absent)} id(s) of the corpus have no file in {folder} (e.g. {absent[0]}); "
            f"{feature} will lack them (`vafusion cache verify` lists them)"
        )
        (warn or (lambda m: None))(report.warnings[-1])
    prov = _provenance(feature, files, timestamps, tolerance, width)
    with FeatureWriter(cache, feature, width, prov, index.fingerprint, overwrite=overwrite) as writer:
        todo = writer.pending(sorted(files))
        report.skipped = len(files) - len(todo)
        for vid in tqdm(todo, desc=f"import {feature}", unit="video", disable=not progress):
            rows, mask = place(files[vid], read_table(files[vid]), index[vid], tolerance)
            mask &= ~np.isnan(rows).any(axis=1)
            rows[~mask] = 0.0
            writer.write(vid, rows.astype(np.float32), mask)
            report.imported += 1
        report.path = writer.finalize()
    return report
