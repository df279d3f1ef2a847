"""Reading the label files of a corpus: Aff-Wild2 VA annotation files and test lists.

Parsing is kept apart from discovery (:mod:`vafusion.extract.corpus`) so that a file's
format rules, and the one-line error that names its file and line, live in one place.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from vafusion.affwild2 import ANNOTATION_HEADER, NO_LABEL, VIDEO_EXTENSIONS
from vafusion.errors import VafusionError


class AnnotationFormatError(VafusionError):
    """A malformed annotation file; ``line`` is 1-based (the header is line 1)."""

    def __init__(self, path: str | Path, line: int, reason: str) -> None:
        self.path = Path(path)
        self.line = line
        self.reason = reason
        super().__init__(
            f"{path}:{line}: {reason}; expected the header 'valence,arousal' then one "
            f"'valence,arousal' row per frame with values in [-1, 1] or -5 (no label)"
        )


def _parse_rows(path: Path, rows: list[str]) -> np.ndarray:
    """(len(rows), 2) float64; the first bad row raises AnnotationFormatError with its line."""
    try:  # fast path: numpy's C parser; any surprise falls back to the exact slow path
        values = np.loadtxt(rows, delimiter=",", comments=None, dtype=np.float64, ndmin=2)
        if values.shape == (len(rows), 2):
            return values
    except ValueError:
        pass
    values = np.empty((len(rows), 2), dtype=np.float64)
    for i, row in enumerate(rows):
        line = i + 2
        parts = row.split(",")
        if not row.strip():
            raise AnnotationFormatError(path, line, "empty row")
        if len(parts) != 2:
            raise AnnotationFormatError(
                path, line, f"{len(parts)} values in {row.strip()[:40]!r}, expected 2 (valence,arousal)"
            )
        try:
            values[i, 0] = float(parts[0])
            values[i, 1] = float(parts[1])
        except ValueError as e:
            raise AnnotationFormatError(path, line, f"non-numeric value in {row.strip()[:40]!r}") from e
    return values


def _label_rows(path: Path) -> list[str]:
    """The rows after the checked header, trailing blank lines dropped (BOM and CRLF tolerated)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise AnnotationFormatError(path, 1, "not a UTF-8 text file") from e
    except OSError as e:
        raise AnnotationFormatError(path, 1, f"cannot read the file ({e.strerror or e})") from e
    lines = text.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if not lines:
        raise AnnotationFormatError(path, 1, "empty file")
    header = tuple(part.strip().lower() for part in lines[0].strip().split(","))
    if header != ANNOTATION_HEADER:
        raise AnnotationFormatError(path, 1, f"header {lines[0].strip()[:40]!r} is not 'valence,arousal'")
    rows = lines[1:]
    if not rows:
        raise AnnotationFormatError(path, 2, "no label rows after the header")
    return rows


def read_annotation(path: str | Path) -> np.ndarray:
    """Read an Aff-Wild2 VA annotation file as (T, 2) float32 labels, NaN = no label.

    Tolerates a UTF-8 BOM, CRLF line ends, whitespace around values and trailing blank
    lines. A row with -5 in either column becomes NaN in both: Aff-Wild2 marks frames
    without a valid annotation that way, and half a label is not a label. Anything else
    malformed raises :class:`AnnotationFormatError` naming the file and line.
    """
    path = Path(path)
    values = _parse_rows(path, _label_rows(path))
    ok = ((values >= -1.0) & (values <= 1.0)) | (values == NO_LABEL)
    if not ok.all():
        r, c = np.argwhere(~ok)[0]
        value = values[r, c]
        what = "not a finite number" if not np.isfinite(value) else "outside [-1, 1] and not -5"
        raise AnnotationFormatError(path, int(r) + 2, f"{ANNOTATION_HEADER[c]} {value:g} is {what}")
    labels = values.astype(np.float32)
    labels[(values == NO_LABEL).any(axis=1)] = np.nan
    return labels


def read_test_list(path: str | Path) -> list[str]:
    """Ids of a test list: one per line; blank lines and ``#`` comments skipped; a video
    extension (``name.mp4``) is dropped so a list of file names also works."""
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise VafusionError(
            f"{path}: cannot read the test list ({e}); pass a UTF-8 text file with one id per line"
        ) from e
    ids: list[str] = []
    for line in text.splitlines():
        name = line.strip()
        if not name or name.startswith("#"):
            continue
        stem, ext = os.path.splitext(name)
        if ext.lower() in VIDEO_EXTENSIONS:
            name = stem
        if name not in ids:
            ids.append(name)
    return ids
