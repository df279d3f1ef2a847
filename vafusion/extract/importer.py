"""``vafusion cache import``: features computed elsewhere, brought onto a cache's frame grid.

A folder holds one file per video id: ``<video_id>.npy`` (a 2-D numeric array) or
``<video_id>.csv`` (comma-separated plain decimal numbers, an optional header line: see
:data:`HEADERS`; a UTF-8 BOM is ignored; pandas' unnamed index column is dropped; a blank or
ragged line is refused, since it would move every later row). Either

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
from vafusion.cache.schema import require_feature_name
from vafusion.cache.writer import FeatureWriter
from vafusion.errors import VafusionError
from vafusion.extract import align
from vafusion.extract.contract import FLOAT16_MAX
from vafusion.extract.corpus import FRAME_MISMATCH_TOLERANCE
from vafusion.hashing import sha256_file
from vafusion.numbers import decimal

SUFFIXES = (".npy", ".csv")


@dataclass
class ImportReport:
    path: Path
    imported: int = 0
    skipped: int = 0  # already in the cache
    warnings: list[str] = field(default_factory=list)


HEADERS = ("auto", "yes", "no")
"""``--header``: whether line 1 of a CSV file names the columns. ``auto``: it does when one of its
fields is not a number; a line 1 of only the column numbers ``0,1,...`` (what pandas writes for
unnamed columns) could be either, and is refused until ``yes`` or ``no`` says which."""

_INDEX_NAMES = ("", "Unnamed: 0")  # what pandas writes over (and reads back from) its index column


def _number(text: str) -> float | None:
    """A CSV field as a number; an empty field is a missing value (pandas writes NaN so)."""
    return float("nan") if not text.strip() else decimal(text.strip(), special=True)


def _lines(path: Path) -> list[tuple[int, list[str]]]:
    """``(line number, fields)`` of every line up to the last non-blank one; a BOM is not part of line 1."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(enumerate(csv.reader(f), start=1))
    except (UnicodeDecodeError, csv.Error) as e:
        raise VafusionError(f"{path}: not a CSV text file ({e}); write UTF-8 comma-separated numbers") from e
    while lines and not "".join(lines[-1][1]).strip():
        lines.pop()  # blank lines at the end move no row
    return lines


def _has_header(path: Path, fields: list[str], header: str) -> bool:
    if header != "auto":
        return header == "yes"
    if any(_number(x) is None for x in fields):
        return True
    numbered = [str(i) for i in range(len(fields))]
    if fields[0] in _INDEX_NAMES and len(fields) > 1 and fields[1:] == numbered[:-1]:
        return True  # pandas' to_csv(index=True): an unnamed index column, then the column numbers
    if fields == numbered:
        raise VafusionError(
            f"{path}:1: reads {','.join(fields)}: the column names pandas writes, or a first row of data? "
            "pass --header yes (line 1 names the columns) or --header no (line 1 is frame 1)"
        )
    return False


def _read_csv(path: Path, header: str = "auto") -> np.ndarray:
    """The numbers of a CSV file, one row per line; blank or ragged lines are refused, naming the line.

    Why so strict: row k is frame k, so a line dropped or taken as a header shifts every later row.
    """
    lines = _lines(path)
    if not lines:
        return np.zeros((0, 0))
    names = lines.pop(0)[1] if _has_header(path, lines[0][1], header) else None
    rows: list[list[float]] = []
    for line_no, fields in lines:
        if not "".join(fields).strip():
            raise VafusionError(
                f"{path}:{line_no}: blank line; remove it (each line is one row: a blank one would move every "
                "row after it)"
            )
        width = len(names) if names is not None else len(rows[0]) if rows else len(fields)
        if len(fields) != width:
            raise VafusionError(
                f"{path}:{line_no}: {len(fields)} values where the {'header has' if names else 'lines above have'} "
                f"{width}; write one table (the same number of values on every line)"
            )
        values = [_number(x) for x in fields]
        if None in values:
            bad = fields[values.index(None)]
            raise VafusionError(
                f"{path}:{line_no}: non-numeric value {bad!r}; write plain decimal numbers only "
                "(NaN or an empty field for a missing value)"
            )
        rows.append(values)  # type: ignore[arg-type]
    table = np.asarray(rows, dtype=np.float64).reshape(len(rows), -1)
    return _without_index(path, table, names)


def _without_index(path: Path, table: np.ndarray, names: list[str] | None) -> np.ndarray:
    """Drop pandas' index column (``to_csv(index=True)``: an unnamed first column counting 0, 1, 2 ...)."""
    if names is None or not names or names[0] not in _INDEX_NAMES or table.shape[1] < 2:
        return table
    if not np.array_equal(table[:, 0], np.arange(len(table))):
        raise VafusionError(
            f"{path}:1: the first column has no name but is not pandas' row index (0, 1, 2 ...); name it, "
            "or write the file with to_csv(index=False)"
        )
    return table[:, 1:]


def read_table(path: Path, header: str = "auto") -> np.ndarray:
    """A file's ``(N, columns)`` float64 table; one-line errors naming the file (and line)."""
    if path.suffix == ".csv":
        table = _read_csv(path, header)
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
    if len(table) < 2:
        raise VafusionError(
            f"{path}: one timestamped row; --timestamps needs at least two rows (their spacing is the time a "
            "row covers): import it on the frame grid (without --timestamps) or write more rows"
        )
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
    header: str = "auto",
    tolerance: int = FRAME_MISMATCH_TOLERANCE,
    kind: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> ImportReport:
    """Import ``folder``'s files as feature ``feature`` of ``cache``; resumable; see the module doc.

    ``kind``: ``frame`` or ``track`` when known (recorded in the file; not in the fingerprint)."""
    cache, folder = Path(cache), Path(folder)
    require_feature_name(feature, "FEATURE_NAME")
    if header not in HEADERS:
        raise VafusionError(f"--header {header}: one of {', '.join(HEADERS)}")
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
        table = read_table(path, header)
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
    if header != "auto":  # only then: imports made before --header keep their fingerprints
        prov["header"] = header
    with FeatureWriter(cache, feature, width, prov, index.fingerprint, overwrite=overwrite, kind=kind) as writer:
        todo = writer.pending(sorted(files))
        report.skipped = len(files) - len(todo)
        for vid in tqdm(todo, desc=f"import {feature}", unit="video", disable=not progress):
            rows, mask = place(files[vid], read_table(files[vid], header), index[vid], tolerance)
            mask &= ~np.isnan(rows).any(axis=1)
            rows[~mask] = 0.0
            writer.write(vid, rows.astype(np.float32), mask)
            report.imported += 1
        report.path = writer.finalize()
    return report
