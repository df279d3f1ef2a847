"""The one checker of feature files: what ``load_cache`` refuses is what ``cache verify`` reports.

Two levels, both cheap (no data is read):

- :func:`check_video`: one video's datasets are what the format says (features ``(T, dim)``
  float16, mask ``(T,)`` one-byte bool, data stored in this file). The reader runs it before
  any raw read, so a malformed file can never write past a buffer (an int64 mask read into a
  one-byte-per-frame buffer was a SIGBUS) or be read as something else.
- :func:`corpus_agreement`: a feature file agrees with corpus.h5 (corpus fingerprint, ids,
  frame counts), so features and labels cannot be misaligned.

The content checks (checksums, finite values) read the data; ``cache verify`` runs them on
everything, ``load_cache`` on what it loads.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from vafusion.cache import schema
from vafusion.cache.corpus_index import CorpusIndex
from vafusion.errors import VafusionError


class FeatureFile(Protocol):
    """What the corpus checks read of an open feature file (the reader's
    :class:`~vafusion.cache.reader.FeatureFile` is one): the checker sits below the reader,
    which runs :func:`check_video` on every video it opens."""

    path: Path
    feature: str
    corpus_fingerprint: str
    extractor: dict  # the provenance: says whether the file was extracted, imported or derived

    @property
    def ids(self) -> list[str]: ...

    def rows(self, video_id: str) -> tuple[int, int]: ...

    def holder(self, video_id: str) -> Path: ...


_SHOW = 3  # items named in a message before "and N more"
_FOREIGN_STORAGE = {h5py.h5d.VIRTUAL: "virtual"}


def few(items: Sequence[str], show: int = _SHOW) -> str:
    """``'a', 'b', 'c' and 4 more``."""
    shown = ", ".join(repr(i) for i in items[:show])
    return shown + (f" and {len(items) - show} more" if len(items) > show else "")


Shape = tuple[int, ...]


def _storage_problem(name: str, dataset: h5py.h5d.DatasetID) -> str | None:
    plist = dataset.get_create_plist()
    layout = plist.get_layout()
    if layout in _FOREIGN_STORAGE or plist.get_external_count():
        kind = _FOREIGN_STORAGE.get(layout, "external")
        return f"{name} data is stored in other files ({kind} storage), which vafusion never writes"
    return None


def rows_problem(features_rows: int, mask_rows: int, frames: int | None = None) -> str | None:
    """A video whose features and mask disagree on the frame count, naming which one is off.

    ``frames``: T of the corpus index, when known. Features and mask that agree with each other
    but not with T are a corpus mismatch, reported by :func:`corpus_agreement`.
    """
    if features_rows == mask_rows:
        return None
    if frames is None:
        return f"mask has {mask_rows} rows but features have {features_rows}; each frame needs one of each"
    t = f"T={frames} in {schema.CORPUS_FILE}"
    if features_rows == frames:
        return f"mask has {mask_rows} rows, but {t} and features have {features_rows}"
    if mask_rows == frames:
        return f"features have {features_rows} rows, but {t} and the mask has {mask_rows}"
    return f"features have {features_rows} rows and the mask {mask_rows}, but {t}"


_FLOAT16 = h5py.h5t.IEEE_F16LE
_BOOL = h5py.h5t.py_create(np.dtype(bool))  # the 1-byte enum {FALSE: 0, TRUE: 1} h5py writes for bool


def video_problem(
    features: h5py.h5d.DatasetID, mask: h5py.h5d.DatasetID, dim: int, f_shape: Shape, m_shape: Shape
) -> str | None:
    """What is wrong with one video's datasets (dtype, rank, dim, storage), naming what differs.

    None if they are well-formed. Row counts are compared by :func:`rows_problem`. Exact HDF5
    type equality, not numpy's view of it: an int64-based enum {FALSE, TRUE} reads as numpy
    bool but holds 8 bytes per frame. The storage check is cheap for the default layout (a
    contiguous dataset in this file has a file offset); ~25 us per video in all.
    """
    if len(f_shape) != 2 or f_shape[1] != dim:
        return f"features have shape {f_shape}, expected (T, {dim})"
    if not features.get_type().equal(_FLOAT16):
        return f"features are {features.dtype}, expected float16 (little-endian)"
    if len(m_shape) != 1:
        return f"mask has shape {m_shape}, expected ({f_shape[0]},)"
    if not mask.get_type().equal(_BOOL):
        return f"mask is {mask.dtype} of {mask.get_type().get_size()} byte(s), expected 1-byte bool"
    return (
        (features.get_offset() is None and _storage_problem(schema.FEATURES_DATASET, features))
        or (mask.get_offset() is None and _storage_problem(schema.MASK_DATASET, mask))
        or None
    )


def check_video(
    path: Path, video_id: str, features: h5py.h5d.DatasetID, mask: h5py.h5d.DatasetID, dim: int
) -> tuple[Shape, Shape]:
    """Raise one VafusionError naming file, id and what differs if the datasets are malformed.

    Returns the shapes ``(features, mask)`` (each costs an HDF5 call: callers keep them).
    """
    f_shape, m_shape = features.shape, mask.shape
    problem = video_problem(features, mask, dim, f_shape, m_shape)
    if problem:
        raise malformed(path, video_id, problem)
    return f_shape, m_shape


def malformed(path: Path, video_id: str, problem: str) -> VafusionError:
    return VafusionError(
        f"{path}: video {video_id!r}: {problem}; the file is damaged or was not written by vafusion: "
        f"re-extract it (or copy it again)"
    )


@dataclass
class Agreement:
    """How one feature file disagrees with corpus.h5 (empty lists: it agrees)."""

    path: Path
    corpus: list[str] = field(default_factory=list)  # fingerprint, missing ids, frame counts
    malformed: list[str] = field(default_factory=list)  # per-video check_video failures (whole messages)
    malformed_ids: set[str] = field(default_factory=set)

    @property
    def ok(self) -> bool:
        return not (self.corpus or self.malformed)


def corpus_agreement(ff: FeatureFile, index: CorpusIndex, ids: Sequence[str]) -> Agreement:
    """Compare ``ff`` with the corpus index for ``ids``: fingerprint, presence and frame count of each."""
    result = Agreement(ff.path)
    if ff.corpus_fingerprint != index.fingerprint:
        result.corpus.append(
            f"made for another corpus index (corpus fingerprint {ff.corpus_fingerprint[:12]} != "
            f"{index.fingerprint[:12]} of {schema.CORPUS_FILE})"
        )
    present = set(ff.ids)
    missing = [vid for vid in ids if vid not in present]
    if missing:
        result.corpus.append(f"lacks {len(missing)} id(s): {few(missing)}")
    wrong = []
    for vid in ids:
        if vid not in present:
            continue
        frames = index[vid].n_frames
        try:
            t, mask_rows = ff.rows(vid)
            problem = rows_problem(t, mask_rows, frames)
            if problem:
                raise malformed(ff.holder(vid), vid, problem)
        except VafusionError as e:
            result.malformed.append(str(e))
            result.malformed_ids.add(vid)
            continue
        if t != frames:
            wrong.append(f"{vid} ({t} != {frames})")
    if wrong:
        result.corpus.append(
            f"frame counts differ from {schema.CORPUS_FILE} for {len(wrong)} id(s): {', '.join(wrong[:_SHOW])}"
            + (f" and {len(wrong) - _SHOW} more" if len(wrong) > _SHOW else "")
        )
    return result


def require_agreement(cache_dir: Path, index: CorpusIndex, files: Sequence[FeatureFile], ids: Sequence[str]) -> None:
    """What ``load_cache`` runs before reading: one VafusionError for everything that would go wrong."""
    results = [corpus_agreement(ff, index, ids) for ff in files]
    for r in results:
        if r.malformed:
            more = (
                f"; {len(r.malformed) - 1} more video(s) of {r.path.name} are malformed too"
                if len(r.malformed) > 1
                else ""
            )
            raise VafusionError(r.malformed[0] + more)
    bad = [(ff, r) for ff, r in zip(files, results) if r.corpus]
    if bad:
        remedies = dict.fromkeys(remake(cache_dir, [f for f, _ in bad if made_by(f) == how]) for how in REMAKE)
        raise VafusionError(
            "; ".join(f"{r.path}: " + ", ".join(r.corpus) for _, r in bad)
            + f"; features and labels would be misaligned: {'; '.join(filter(None, remedies))}, "
            f"or use them with the cache they were made for"
        )


REMAKE = ("imported", "pca", "extracted")
"""How a feature file came to be, as :func:`made_by` tells it; each is made again by its own command."""


def made_by(ff: FeatureFile) -> str:
    """``imported`` (cache import), ``pca`` (cache derive) or ``extracted``, from the file's provenance."""
    model = ff.extractor.get("model") if isinstance(ff.extractor, dict) else None
    return model if model in ("imported", "pca") else "extracted"


def remake(cache_dir: Path, files: Sequence[FeatureFile]) -> str:
    """The command that makes ``files`` (all made the same way) again for this corpus index; '' for none."""
    if not files:
        return ""
    names = ",".join(ff.feature for ff in files)
    how = made_by(files[0])
    if how == "imported":
        return (
            f"import {names} again with a file per id (vafusion cache import {cache_dir} FEATURE_NAME DIR --overwrite)"
        )
    if how == "pca":
        return (
            f"derive {names} again (vafusion cache derive {cache_dir} --from FEATURE --pca K --name NAME --overwrite)"
        )
    return (
        f"re-extract {names} for this corpus index "
        f"(vafusion extract --cache {cache_dir} --features {names} --overwrite ...)"
    )
