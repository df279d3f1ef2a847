"""Crash-safe, resumable writing of one feature set into a cache (or one shard of it).

Why per-video part files: an HDF5 file killed mid-write can be corrupt as a whole, so each
finished video is written to its own small file under ``CACHE/.parts/<stem>/``, closed, and
renamed into place. A kill loses at most the videos in flight; a rerun sees which parts are
complete (renamed files only) and extracts the rest. ``finalize`` copies the parts (and any
earlier final file) into ``<feature>.h5`` through a temporary file and a rename, marks it
complete, and removes the parts. Nothing that reads as complete can be partial.

Every dataset carries its checksum (:mod:`vafusion.cache.checksum`) from the moment it is
written. One process writes a given file at a time (:class:`vafusion.cache.lock.WriteLock`);
nothing is created before something must be written, so a read-only cache with nothing left
to do is not an error.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import shutil
import uuid
from collections.abc import Mapping
from pathlib import Path

import h5py
import numpy as np

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.cache import checksum, schema
from vafusion.cache.lock import WriteLock
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, require_space, require_writable, write_error

_PART_SUFFIX = ".h5"
_MANIFEST = "extractor.json"


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def _compression_kwargs(compression: str | None) -> dict:
    """h5py dataset options: uncompressed contiguous by default, so loading runs close to disk speed
    (BENCHMARKS.md, 3)."""
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
    """Write ``videos/<id>/{features,mask}`` under ``parent`` (the one place that knows the layout),
    each with its checksum."""
    group = parent.require_group(schema.VIDEOS_GROUP).create_group(video_id)
    kw = _compression_kwargs(compression)
    if kw.get("chunks") and len(features) == 0:
        kw = {}
    for name, data, options in (
        (schema.FEATURES_DATASET, features.astype(schema.FEATURE_DTYPE, copy=False), kw),
        (schema.MASK_DATASET, mask.astype(bool, copy=False), {}),
    ):
        dataset = group.create_dataset(name, data=data, **options)
        dataset.attrs[schema.CHECKSUM_ATTR] = checksum.checksum(video_id, name, data)


def write_header(out: h5py.File, attrs: dict) -> None:
    """Root attributes of a feature file being written: ``attrs``, a fresh ``file_id``, not yet complete.

    The caller sets ``complete`` to True as its last step; the file is renamed into place after.
    """
    for key, value in attrs.items():
        out.attrs[key] = value
    out.attrs[schema.FILE_ID_ATTR] = uuid.uuid4().hex
    out.attrs["vafusion_version"] = __version__
    out.attrs["created"] = _now()
    out.attrs["complete"] = False


class FeatureWriter:
    """Writes one feature set of one cache or shard, a video at a time.

    The extractor description (``extractor``) is hashed into the fingerprint; parts or a final
    file made by a different extractor are never mixed in: that is an error unless ``overwrite``.
    The writer holds the file's write lock from construction to :meth:`finalize` (or
    :meth:`close`), so a second process writing the same file fails at once. ``split``: the
    rule that chose a shard's ids, recorded in its file (:data:`~vafusion.cache.schema.SPLIT_ATTR`).
    ``kind``: ``frame`` or ``track`` (:data:`~vafusion.cache.schema.KINDS`), recorded when known.
    ``extra``: datasets (path -> array) the final file holds beside ``videos/``, e.g. the fitted
    transform of a derived feature (``cache derive``); describe them in ``extractor`` too, so
    that the fingerprint changes with them.
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
        split: str | None = None,
        extra: Mapping[str, np.ndarray] | None = None,
        kind: str | None = None,
    ) -> None:
        schema.require_feature_name(feature, "feature")
        if kind is not None and kind not in schema.KINDS:
            raise ValueError(f"kind must be one of {', '.join(schema.KINDS)} or None, got {kind!r}")
        self.kind = kind
        self.cache_dir = make_dir(Path(cache_dir))
        self.extra = dict(extra or {})  # path in the file -> array, e.g. a derived feature's fitted transform
        self.feature = feature
        self.dim = int(dim)
        self.extractor = extractor
        self.fingerprint = schema.fingerprint(extractor)
        self.corpus_fingerprint = corpus_fingerprint
        self.shard = shard
        self.split = split
        self.compression = compression
        _compression_kwargs(compression)  # validate early
        self.final_path = schema.feature_path(self.cache_dir, feature, shard)
        stem = self.final_path.name[: -len(".h5")]
        self.parts_dir = self.cache_dir / schema.PARTS_DIR / stem
        self._lock = WriteLock(self.final_path)
        if overwrite:
            self._begin_writing()
            shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.final_path.unlink(missing_ok=True)
        elif os.access(self.cache_dir, os.W_OK):
            self._lock.acquire()  # now, so a second writer fails before any work; else when needed
        self._check_parts_manifest()
        self._final_ids = self._check_existing_final()

    def _begin_writing(self) -> None:
        """Something must be written: the folder must be writable and this process hold the lock."""
        if not self._lock.held:
            require_writable(self.cache_dir, f"{self.final_path.name} (or its parts)")
            self._lock.acquire()

    def close(self) -> None:
        """Release the write lock (finalize does; call this, or use ``with``, when giving up before it).

        A writer left open keeps its lock until it is garbage-collected or the process exits.
        """
        self._lock.release()

    def __enter__(self) -> FeatureWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- resume bookkeeping -------------------------------------------------------------
    def _manifest(self) -> dict:
        return {"fingerprint": self.fingerprint, "corpus_fingerprint": self.corpus_fingerprint}

    def _check_parts_manifest(self) -> None:
        manifest = self.parts_dir / _MANIFEST
        if not manifest.is_file():
            return
        try:
            found = json.loads(manifest.read_text())
        except (OSError, ValueError):
            found = {}
        if found != self._manifest():
            what = "extractor settings" if found.get("fingerprint") != self.fingerprint else "corpus index"
            raise VafusionError(
                f"{self.parts_dir}: unfinished parts of {self.feature} from a run with other {what}; "
                f"rerun with the same options to resume, or pass --overwrite to start afresh"
            )

    def _create_parts_dir(self) -> None:
        manifest = self.parts_dir / _MANIFEST
        if manifest.is_file():
            return
        make_dir(self.parts_dir, "parts folder")
        with atomic_path(manifest) as tmp:
            tmp.write_text(json.dumps(self._manifest()))

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

    def _parts(self) -> list[Path]:
        return sorted(self.parts_dir.glob(f"*{_PART_SUFFIX}")) if self.parts_dir.is_dir() else []

    def done_ids(self) -> set[str]:
        """Ids already complete: in the final file, or as a renamed (hence whole) part file."""
        return self._final_ids | {p.name[: -len(_PART_SUFFIX)] for p in self._parts()}

    def pending(self, ids: list[str]) -> list[str]:
        done = self.done_ids()
        return [i for i in ids if i not in done]

    def require_owned(self, owned: list[str]) -> None:
        """Refuse to continue a shard whose file or parts hold ids this shard does not own now.

        Why: they were chosen by another split (an older vafusion took every N-th id; see
        :mod:`vafusion.cache.split`) or for other shards; adding this split's ids to them would
        make shards that overlap, which only a merge would find, after all the extraction.
        """
        stray = sorted(self.done_ids() - set(owned))
        if not stray:
            return
        k, n = self.shard
        where = self.final_path if self.final_path.exists() else self.parts_dir
        raise VafusionError(
            f"{where}: holds {len(stray)} id(s) that shard {k}/{n} does not own (e.g. {stray[0]!r}): the shard "
            f"set was split by another rule (vafusion 0.1.0 took every {n}-th id; shards are now balanced by "
            f"frames); finish and merge it with the vafusion that began it, or extract every shard again with "
            f"--overwrite"
        )

    # -- writing ------------------------------------------------------------------------
    def write(self, video_id: str, features: np.ndarray, mask: np.ndarray) -> None:
        """Write one whole video; visible to a resume only once the rename has happened."""
        features = np.asarray(features)
        mask = np.asarray(mask, dtype=bool)
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"{video_id}: {self.feature} features have shape {features.shape}, expected (T, {self.dim})"
            )
        if mask.shape != (features.shape[0],):
            raise ValueError(
                f"{video_id}: {self.feature} mask has shape {mask.shape} but features have "
                f"{features.shape[0]} rows; each frame needs one of each"
            )
        if not np.isfinite(features).all():
            raise ValueError(f"{video_id}: non-finite {self.feature} values")
        self._begin_writing()
        self._create_parts_dir()
        image = io.BytesIO()  # built in memory, then one plain write: a full disk is a clean OSError
        with h5py.File(image, "w") as f:
            write_video_group(f, video_id, features, mask, None)
        path = self._part_path(video_id)
        try:
            with atomic_path(path) as tmp:
                tmp.write_bytes(image.getbuffer())
        except OSError as e:
            raise write_error(path, e) from e

    def finalize(self) -> Path:
        """Gather parts (and an earlier final file) into the final file; atomic rename at the end."""
        parts = self._parts()
        if not parts and self.final_path.exists():
            if self.parts_dir.exists() and os.access(self.parts_dir.parent, os.W_OK):
                shutil.rmtree(self.parts_dir, ignore_errors=True)
            self.close()
            return self.final_path
        self._begin_writing()
        earlier = [self.final_path] if self._final_ids else []
        require_space(self.cache_dir, sum(p.stat().st_size for p in parts + earlier), self.final_path.name)
        try:
            ids = self._write_final(parts)
        except OSError as e:
            raise write_error(self.final_path, e) from e
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        parts_root = self.cache_dir / schema.PARTS_DIR
        if parts_root.is_dir() and not any(parts_root.iterdir()):
            parts_root.rmdir()
        self._final_ids = ids
        self.close()
        return self.final_path

    def _write_final(self, parts: list[Path]) -> set[str]:
        """Write the final file in id order (so loading reads it sequentially); returns its ids.

        Videos of an earlier final file are read through :class:`FeatureFile` (never HDF5's own
        link resolution, so an earlier merged file reads only its recorded shards) and checked
        against their checksums before they are carried over.
        """
        from vafusion.cache.reader import FeatureFile  # local: reader imports writer helpers

        header = {
            "format": schema.FEATURE_FORMAT,
            "format_version": schema.FORMAT_VERSION,
            "feature": self.feature,
            "dim": self.dim,
            "dtype": schema.FEATURE_DTYPE,
            "extractor": schema.canonical_json(self.extractor),
            "fingerprint": self.fingerprint,
            "corpus_fingerprint": self.corpus_fingerprint,
            "shard": f"{self.shard[0]}/{self.shard[1]}",
            "compression": self.compression or "none",
            **({schema.SPLIT_ATTR: self.split} if self.split and self.shard[1] > 1 else {}),
            **({schema.KIND_ATTR: self.kind} if self.kind else {}),
        }
        parts_by_id = {p.name[: -len(_PART_SUFFIX)]: p for p in parts}
        earlier = FeatureFile(self.final_path) if self._final_ids - set(parts_by_id) else None
        try:
            with atomic_path(self.final_path) as tmp, h5py.File(tmp, "w") as out:
                write_header(out, header)
                for path, data in self.extra.items():  # beside videos/, each with its checksum
                    dataset = out.create_dataset(path, data=np.asarray(data))
                    dataset.attrs[schema.CHECKSUM_ATTR] = checksum.checksum("", path, np.asarray(data))
                videos = out.create_group(schema.VIDEOS_GROUP)
                for vid in sorted(self._final_ids | set(parts_by_id)):
                    if vid not in parts_by_id:
                        assert earlier is not None  # opened above whenever a finished id has no part
                        feats, mask = earlier.read(vid)
                        earlier.verify_checksums(vid, feats, mask)
                        write_video_group(out, vid, feats, mask, self.compression)
                        continue
                    with h5py.File(parts_by_id[vid], "r") as src:
                        g = src[schema.VIDEOS_GROUP][vid]
                        if self.compression in (None, "none"):
                            src.copy(g, videos, name=vid)  # datasets keep their checksum attributes
                        else:
                            write_video_group(
                                out, vid, g[schema.FEATURES_DATASET][()], g[schema.MASK_DATASET][()], self.compression
                            )
                out.attrs["complete"] = True
        finally:
            if earlier is not None:
                earlier.close()
        return self._final_ids | set(parts_by_id)
