"""Crash-safe, resumable writing of one feature set into a cache (or one shard of it).

Why per-video part files: an HDF5 file killed mid-write can be corrupt as a whole, so each
finished video is written to its own small file under ``CACHE/.parts/<stem>/``, closed, and
renamed into place. A kill loses at most the videos in flight; a rerun sees which parts are
complete (renamed files only) and extracts the rest. ``finalize`` copies the parts (and any
earlier final file) into ``<feature>.h5`` through a temporary file and a rename, marks it
complete, and removes the parts. Nothing that reads as complete can be partial.
"""

from __future__ import annotations

import datetime as _dt
import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.cache import schema
from vafusion.errors import VafusionError

_PART_SUFFIX = ".h5"
_MANIFEST = "extractor.json"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _compression_kwargs(compression: str | None) -> dict:
    """h5py dataset options: uncompressed contiguous by default, so loading runs close to disk speed (BENCHMARKS.md, 3)."""
    if compression in (None, "none"):
        return {}
    if compression == "lzf":
        return {"compression": "lzf", "shuffle": True, "chunks": True}
    if compression.startswith("gzip"):
        level = int(compression.split("-")[1]) if "-" in compression else 4
        return {"compression": "gzip", "compression_opts": level, "shuffle": True, "chunks": True}
    raise VafusionError(f"unknown compression {compression!r}; use none, lzf or gzip[-LEVEL]")


def write_video_group(
    parent: h5py.Group, video_id: str, features: np.ndarray, mask: np.ndarray, compression: str | None
) -> None:
    """Write ``videos/<id>/{features,mask}`` under ``parent`` (the one place that knows the layout)."""
    group = parent.require_group(schema.VIDEOS_GROUP).create_group(video_id)
    kw = _compression_kwargs(compression)
    if kw.get("chunks") and len(features) == 0:
        kw = {}
    group.create_dataset(schema.FEATURES_DATASET, data=features.astype(schema.FEATURE_DTYPE, copy=False), **kw)
    group.create_dataset(schema.MASK_DATASET, data=mask.astype(bool, copy=False))


class FeatureWriter:
    """Writes one feature set of one cache or shard, a video at a time.

    The extractor description (``extractor``) is hashed into the fingerprint; parts or a final
    file made by a different extractor are never mixed in: that is an error unless ``overwrite``.
    """

    def __init__(
        self,
        cache_dir: str | Path,
        feature: str,
        dim: int,
        extractor: dict,
        corpus_fingerprint: str,
        shard: tuple[int, int] = (1, 1),
        overwrite: bool = False,
        compression: str | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.feature = feature
        self.dim = int(dim)
        self.extractor = extractor
        self.fingerprint = schema.fingerprint(extractor)
        self.corpus_fingerprint = corpus_fingerprint
        self.shard = shard
        self.compression = compression
        _compression_kwargs(compression)  # validate early
        self.final_path = schema.feature_path(self.cache_dir, feature, shard)
        stem = self.final_path.name[: -len(".h5")]
        self.parts_dir = self.cache_dir / schema.PARTS_DIR / stem
        if overwrite:
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.final_path.unlink(missing_ok=True)
        self._check_or_create_parts_dir()
        self._final_ids = self._check_existing_final()

    # -- resume bookkeeping -------------------------------------------------------------
    def _check_or_create_parts_dir(self) -> None:
        manifest = self.parts_dir / _MANIFEST
        expected = {"fingerprint": self.fingerprint, "corpus_fingerprint": self.corpus_fingerprint}
        if manifest.is_file():
            found = json.loads(manifest.read_text())
            if found != expected:
                what = "extractor settings" if found.get("fingerprint") != self.fingerprint else "corpus index"
                raise VafusionError(
                    f"{self.parts_dir}: unfinished parts of {self.feature} from a run with other {what}; "
                    f"rerun with the same options to resume, or pass --overwrite to start afresh"
                )
            return
        self.parts_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps(expected))

    def _check_existing_final(self) -> set[str]:
        if not self.final_path.exists():
            return set()
        from vafusion.cache.reader import FeatureFile  # local: reader imports writer helpers

        with FeatureFile(self.final_path) as existing:
            if existing.fingerprint != self.fingerprint:
                raise VafusionError(
                    f"{self.final_path}: made by another extractor (fingerprint "
                    f"{existing.fingerprint[:12]} != {self.fingerprint[:12]}); pass --overwrite to "
                    f"replace it, or extract into another cache"
                )
            if existing.corpus_fingerprint != self.corpus_fingerprint:
                raise VafusionError(
                    f"{self.final_path}: belongs to another corpus index; pass --overwrite to replace it"
                )
            return set(existing.ids)

    def _part_path(self, video_id: str) -> Path:
        return self.parts_dir / f"{video_id}{_PART_SUFFIX}"

    def done_ids(self) -> set[str]:
        """Ids already complete: in the final file, or as a renamed (hence whole) part file."""
        parts = {p.name[: -len(_PART_SUFFIX)] for p in self.parts_dir.glob(f"*{_PART_SUFFIX}")}
        return self._final_ids | parts

    def pending(self, ids: list[str]) -> list[str]:
        done = self.done_ids()
        return [i for i in ids if i not in done]

    # -- writing ------------------------------------------------------------------------
    def write(self, video_id: str, features: np.ndarray, mask: np.ndarray) -> None:
        """Write one whole video; visible to a resume only once the rename has happened."""
        features = np.asarray(features)
        mask = np.asarray(mask, dtype=bool)
        if features.ndim != 2 or features.shape[1] != self.dim or mask.shape != (features.shape[0],):
            raise ValueError(
                f"{video_id}: features {features.shape} / mask {mask.shape} do not fit (T, {self.dim})"
            )
        if not np.isfinite(features).all():
            raise ValueError(f"{video_id}: non-finite {self.feature} values")
        path = self._part_path(video_id)
        with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
            write_video_group(f, video_id, features, mask, None)

    def finalize(self) -> Path:
        """Gather parts (and an earlier final file) into the final file; atomic rename at the end."""
        parts = sorted(self.parts_dir.glob(f"*{_PART_SUFFIX}"))
        if not parts and self.final_path.exists():
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            return self.final_path
        with atomic_path(self.final_path) as tmp, h5py.File(tmp, "w") as out:
            out.attrs["format"] = schema.FEATURE_FORMAT
            out.attrs["format_version"] = schema.FORMAT_VERSION
            out.attrs["feature"] = self.feature
            out.attrs["dim"] = self.dim
            out.attrs["dtype"] = schema.FEATURE_DTYPE
            out.attrs["extractor"] = schema.canonical_json(self.extractor)
            out.attrs["fingerprint"] = self.fingerprint
            out.attrs["corpus_fingerprint"] = self.corpus_fingerprint
            out.attrs["shard"] = f"{self.shard[0]}/{self.shard[1]}"
            out.attrs["compression"] = self.compression or "none"
            out.attrs["vafusion_version"] = __version__
            out.attrs["created"] = _now()
            out.attrs["complete"] = False
            videos = out.create_group(schema.VIDEOS_GROUP)
            sources: list[tuple[str, Path]] = []
            if self.final_path.exists():
                sources += [(vid, self.final_path) for vid in sorted(self._final_ids)]
            sources += [(p.name[: -len(_PART_SUFFIX)], p) for p in parts]
            for vid, src_path in sorted(sources):
                if vid in videos:
                    continue
                with h5py.File(src_path, "r") as src:
                    g = src[schema.VIDEOS_GROUP][vid]
                    if self.compression in (None, "none"):
                        src.copy(g, videos, name=vid)
                    else:
                        write_video_group(
                            out, vid, g[schema.FEATURES_DATASET][()], g[schema.MASK_DATASET][()], self.compression
                        )
            out.attrs["complete"] = True
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        parts_root = self.cache_dir / schema.PARTS_DIR
        if parts_root.is_dir() and not any(parts_root.iterdir()):
            parts_root.rmdir()
        self._final_ids = {vid for vid, _ in sources}
        return self.final_path
