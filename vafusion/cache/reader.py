"""Reading feature files: validated on open, so a foreign, truncated or malformed file is one clear error.

Why the low-level calls and the checks before them: ``load_cache`` reads every video of every
feature file straight into one big block (``read_into``), which is memory-unsafe unless each
dataset's dtype, shape and storage are exactly what the buffer expects; so every video's
datasets go through :func:`vafusion.cache.check.check_video` when first opened, and every read
error becomes a :class:`VafusionError` naming the file, the id and the dataset.

For streaming (:meth:`FeatureFile.map_features`), an uncompressed contiguous dataset is handed
out as a read-only numpy view of the file's pages at the offset HDF5 reports, once
:func:`~vafusion.cache.check.check_video` has proven its dtype, shape and storage: the process
holds no copy and the OS page cache does the caching. Compressed or chunked datasets are read
per row range through HDF5 instead (:meth:`FeatureFile.read_rows`).

A merged (linked) file's external links are never followed by HDF5 (which would also search
the current directory and ``HDF5_EXT_PREFIX``): the reader opens each shard the merge
recorded (:mod:`vafusion.cache.shards`), from the merged file's folder only, and checks it is
that very file.
"""

from __future__ import annotations

import json
import mmap
import os
from pathlib import Path
from types import TracebackType
from typing import NamedTuple

import h5py
import numpy as np

from vafusion.cache import checksum, schema, shards
from vafusion.cache.check import check_video, malformed, rows_problem
from vafusion.errors import VafusionError


class _Video(NamedTuple):
    """One video's checked, open datasets, the file holding them, and their shapes."""

    features: h5py.h5d.DatasetID
    mask: h5py.h5d.DatasetID
    holder: Path
    f_shape: tuple[int, ...]
    m_shape: tuple[int, ...]


def list_features(cache_dir: str | Path) -> list[str]:
    """Names of the whole (non-shard) feature files of a cache, e.g. ``['logmel', 'resnet50']``."""
    cache_dir = Path(cache_dir)
    return sorted(
        p.name[: -len(".h5")]
        for p in cache_dir.glob("*.h5")
        if p.name != schema.CORPUS_FILE and not schema.SHARD_FILE.match(p.name) and not p.name.startswith(".")
    )


def _first_line(error: BaseException) -> str:
    return str(error).splitlines()[0] if str(error) else error.__class__.__name__


def _link_type(group: h5py.h5g.GroupID, name: bytes) -> int:
    """The link type of ``name`` in ``group`` (h5l.TYPE_*); KeyError if there is none."""
    try:
        return group.links.get_info(name).type
    except (KeyError, RuntimeError) as e:
        raise KeyError(name.decode()) from e


def _plain_name(merged: FeatureFile, name: str) -> Path:
    """A shard a merged file links to, only ever beside it (never where HDF5 would also look)."""
    if not name or name in (".", "..") or Path(name).name != name or Path(name).is_absolute():
        raise VafusionError(
            f"{merged.path}: links to {name!r}, which is not a file beside it; a cache never links "
            f"elsewhere: rerun `vafusion cache merge` on the shards"
        )
    return merged.path.parent / name


class Identity(NamedTuple):
    """What tells a file apart from a changed one: its inode (a replacement), size (a truncation) and
    modification time (a rewrite in place)."""

    device: int
    inode: int
    size: int
    mtime_ns: int

    @classmethod
    def of(cls, path: Path) -> Identity | None:
        try:
            st = os.stat(path)
        except OSError:
            return None
        return cls(st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)

    def change(self, now: Identity | None) -> str:
        """How ``now`` differs from this identity, in words."""
        if now is None:
            return "it is gone"
        if (now.device, now.inode) != (self.device, self.inode):
            return "it was replaced by another file"
        if now.size != self.size:
            return f"it was {'truncated' if now.size < self.size else 'extended'} ({self.size} -> {now.size} bytes)"
        return "it was rewritten in place (its modification time changed)"


def kind_of(recorded: object, extractor: dict) -> str | None:
    """A file's kind (:data:`~vafusion.cache.schema.KINDS`): as recorded, else, for files written before
    vafusion recorded it, what its built-in extractor's description shows: ``frame`` for one that read
    face crops, ``track`` for the built-in audio features; None where nothing says (an imported or
    derived feature, a user's extractor)."""
    if recorded is not None:
        return str(recorded)
    if "plugin" in extractor or extractor.get("model") in ("imported", "pca"):
        return None
    if extractor.get("input") == schema.KINDS["frame"]:
        return "frame"
    return "track" if "timing" in extractor else None


class FeatureFile:
    """One open feature file (read-only). Use as a context manager."""

    def __init__(self, path: str | Path, *, merged_into: Path | None = None) -> None:
        self.path = Path(path)
        self._merged_into = merged_into  # set when this file is a shard opened by a merged file
        if not self.path.is_file():
            raise VafusionError(f"{self.path}: no such feature file")
        self.identity = Identity.of(self.path)  # what require_unchanged compares with
        try:
            self._file = h5py.File(self.path, "r")
        except OSError as e:
            raise VafusionError(
                f"{self.path}: not a readable HDF5 file ({e.__class__.__name__}); it may be truncated "
                f"or still being copied: copy it again or re-extract with --overwrite"
            ) from e
        self._sources: dict[str, FeatureFile] = {}
        self._handles: dict[str, _Video] = {}
        self._maps: dict[Path, mmap.mmap] = {}  # holder file -> read-only map (map_features)
        self._ids: list[str] | None = None
        try:
            self._read_header()
            self._open_recorded_shards()
        except VafusionError:
            self.close()
            raise
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as e:
            self.close()
            raise VafusionError(
                f"{self.path}: header unreadable ({_first_line(e)}); the file is damaged: copy it "
                f"again or re-extract with --overwrite"
            ) from e

    def _read_header(self) -> None:
        attrs = self._file.attrs
        if attrs.get("format") != schema.FEATURE_FORMAT:
            raise VafusionError(f"{self.path}: not a vafusion feature file (format attribute missing or wrong)")
        version = int(attrs.get("format_version", -1))
        if version != schema.FORMAT_VERSION:
            raise VafusionError(
                f"{self.path}: format_version {version}, this vafusion reads {schema.FORMAT_VERSION}; "
                f"re-extract or use a matching vafusion version"
            )
        if not bool(attrs.get("complete", False)):
            raise VafusionError(f"{self.path}: not marked complete; the writer was interrupted: re-run extract")
        try:
            self.feature: str = str(attrs["feature"])
            self.dim: int = int(attrs["dim"])
            self.extractor: dict = json.loads(attrs["extractor"])
            self.fingerprint: str = str(attrs["fingerprint"])
            self.corpus_fingerprint: str = str(attrs["corpus_fingerprint"])
            self.shard: str = str(attrs.get("shard", "1/1"))
            self.created: str = str(attrs.get("created", ""))
            self.vafusion_version: str = str(attrs.get("vafusion_version", ""))
            self.compression: str = str(attrs.get("compression", "none"))
            self.shard_records = shards.read_records(attrs)
            self.kind: str | None = kind_of(attrs.get(schema.KIND_ATTR), self.extractor)
        except (KeyError, ValueError, TypeError) as e:
            raise VafusionError(f"{self.path}: header attribute missing or malformed ({e})") from e
        try:
            kind = _link_type(self._file.id, schema.VIDEOS_GROUP.encode())
        except KeyError as e:
            raise VafusionError(
                f"{self.path}: no '{schema.VIDEOS_GROUP}' group; the file is damaged: re-extract"
            ) from e
        if kind != h5py.h5l.TYPE_HARD:
            raise VafusionError(f"{self.path}: '{schema.VIDEOS_GROUP}' is a link, not a group; not a vafusion file")
        self._videos = self._file[schema.VIDEOS_GROUP]

    def _open_recorded_shards(self) -> None:
        if self.shard_records is None:
            return
        if self._merged_into is not None:
            raise VafusionError(f"{self.path}: a merged file cannot be a shard of {self._merged_into.name}")
        for record in self.shard_records:
            self._sources[record.file] = self._open_recorded(record)

    def _open_shard(self, name: str) -> FeatureFile:
        """The shard file ``name`` beside this merged file, with its extractor, corpus and dim."""
        path = _plain_name(self, name)
        if not path.is_file():
            raise VafusionError(
                f"{path}: missing shard of {self.path.name} (its links point to it); copy that shard "
                f"file back beside {self.path.name}"
            )
        source = FeatureFile(path, merged_into=self.path)
        if (
            source.fingerprint != self.fingerprint
            or source.corpus_fingerprint != self.corpus_fingerprint
            or source.dim != self.dim
        ):
            source.close()
            raise VafusionError(
                f"{path}: not a shard of {self.path.name} (made by another extractor or for another "
                f"corpus index); copy the original shard back, or re-extract it"
            )
        return source

    def _open_recorded(self, rec: shards.ShardRecord) -> FeatureFile:
        """Open the shard ``rec`` names, proving it is the file the merge recorded."""
        source = self._open_shard(rec.file)
        found = source.file_id
        if found != rec.file_id:
            source.close()
            raise VafusionError(
                f"{source.path}: not the shard {self.path.name} was merged from (file id {found[:12]} != "
                f"recorded {rec.file_id[:12]}): another file of that name; copy the original shard back, or "
                f"rerun `vafusion cache merge` to link the shards now present"
            )
        return source

    def _open_unrecorded(self, name: str) -> FeatureFile:
        """A link of a merged file that records no shards: only allowed where the merge kept no records.

        Files merged before records existed still read (from the merged file's folder only, with
        matching extractor and corpus fingerprints); ``cache verify`` notes that they cannot prove
        the shard's identity.
        """
        if self.shard_records is not None:
            raise VafusionError(
                f"{self.path}: links to {name}, which the merge did not record; the file was altered: "
                f"rerun `vafusion cache merge`"
            )
        return self._open_shard(name)

    # -- header -------------------------------------------------------------------------
    @property
    def attrs(self) -> dict:
        """All root attributes, as written (for copying a header, e.g. when merging shards)."""
        return dict(self._file.attrs)

    @property
    def file_id(self) -> str:
        """This file's identity as a merge records it (see :func:`vafusion.cache.shards.identity`)."""
        return shards.identity(self._file.attrs, self.ids)

    def shard_record(self) -> shards.ShardRecord:
        """What a merge of this file (a shard) records of it."""
        return shards.ShardRecord(self.path.name, self.file_id, self.fingerprint, self.shard)

    @property
    def sources(self) -> list[Path]:
        """Shard files a merged file reads (the files its links resolve to); empty for a whole file."""
        return [s.path for s in self._sources.values()]

    @property
    def ids(self) -> list[str]:
        """The video ids, sorted (read once)."""
        if self._ids is None:
            try:
                names = list(self._videos.keys())
            except (OSError, RuntimeError) as e:
                raise VafusionError(
                    f"{self.path}: the list of videos is unreadable ({_first_line(e)}); copy the file again"
                ) from e
            garbled = [n for n in names if not isinstance(n, str)]
            if garbled:
                raise VafusionError(
                    f"{self.path}: {len(garbled)} video name(s) are not valid text ({garbled[0]!r}); "
                    f"the file is damaged: copy it again"
                )
            self._ids = sorted(names)
        return list(self._ids)

    def __contains__(self, video_id: str) -> bool:
        return self._videos.id.links.exists(video_id.encode())  # the link itself: never followed

    # -- datasets -----------------------------------------------------------------------
    def _locate(self, video_id: str) -> tuple[h5py.h5g.GroupID, FeatureFile]:
        """``(videos group, file)`` that hold the video: this file, or the recorded shard its link names."""
        name = video_id.encode()
        try:
            kind = _link_type(self._videos.id, name)
        except KeyError as e:
            raise VafusionError(f"{self.path}: no video {video_id!r}") from e
        if kind == h5py.h5l.TYPE_HARD:
            return self._videos.id, self
        if kind != h5py.h5l.TYPE_EXTERNAL or self._merged_into is not None:
            raise VafusionError(
                f"{self.path}: video {video_id!r} is a link where a group was expected; not a vafusion file"
            )
        filename, target = (x.decode() for x in self._videos.id.links.get_val(name))
        if target.strip("/") != f"{schema.VIDEOS_GROUP}/{video_id}":
            raise VafusionError(
                f"{self.path}: video {video_id!r} links to {target!r} in {filename}; the file is damaged"
            )
        source = self._sources.get(filename)
        if source is None:
            source = self._open_unrecorded(filename)
            self._sources[filename] = source
        return source._locate(video_id)

    def _datasets(self, video_id: str) -> _Video:
        """One video's low-level dataset ids, checked (dtype, shape, storage), opened once per file.

        Low-level ``H5Dopen`` costs a fraction of h5py's group/dataset wrappers, which matters
        because ``load_cache`` does this for every video of every feature file. Only hard links
        are followed to other files by the reader itself (:meth:`_locate`), never by HDF5.
        """
        cached = self._handles.get(video_id)
        if cached is not None:
            return cached
        videos, holder = self._locate(video_id)
        opened = []
        for name in (schema.FEATURES_DATASET, schema.MASK_DATASET):
            try:
                dataset = h5py.h5d.open(videos, f"{video_id}/{name}".encode())
            except KeyError as e:
                raise VafusionError(f"{holder.path}: video {video_id!r} has no {name} dataset; re-extract it") from e
            except (OSError, RuntimeError) as e:
                raise VafusionError(
                    f"{holder.path}: video {video_id!r}: {name} unreadable ({_first_line(e)}); the "
                    f"file is damaged: copy it again or re-extract it"
                ) from e
            if dataset.fileno != videos.fileno:  # cheaper than asking first; the video group is a hard link
                raise VafusionError(
                    f"{holder.path}: video {video_id!r}: {name} links to another file; "
                    f"a cache never does: re-extract it"
                )
            opened.append(dataset)
        shapes = check_video(holder.path, video_id, opened[0], opened[1], self.dim)
        handles = _Video(opened[0], opened[1], holder.path, *shapes)
        self._handles[video_id] = handles
        return handles

    def n_frames(self, video_id: str) -> int:
        return self._datasets(video_id).f_shape[0]

    def rows(self, video_id: str) -> tuple[int, int]:
        """Row counts ``(features, mask)``; equal in a well-formed file (see ``check.rows_problem``)."""
        v = self._datasets(video_id)
        return v.f_shape[0], v.m_shape[0]

    def holder(self, video_id: str) -> Path:
        """The file that stores the video's data (a shard file for a merged cache)."""
        return self._datasets(video_id).holder

    def _unreadable(self, video_id: str, name: str, error: Exception) -> VafusionError:
        return VafusionError(
            f"{self.holder(video_id)}: video {video_id!r}: {name} unreadable ({_first_line(error)}); the file is "
            "damaged "
            f"(a corrupted chunk or a truncated copy): copy it again or re-extract {self.feature}"
        )

    def read(self, video_id: str) -> tuple[np.ndarray, np.ndarray]:
        """``(features float16 (T, dim), mask bool (T,))`` of one video."""
        feats, mask, holder, _, _ = self._datasets(video_id)
        problem = rows_problem(*self.rows(video_id))
        if problem:
            raise malformed(holder, video_id, problem)
        out = []
        for name, dataset in ((schema.FEATURES_DATASET, feats), (schema.MASK_DATASET, mask)):
            try:
                out.append(h5py.Dataset(dataset)[()])
            except (OSError, RuntimeError) as e:
                raise self._unreadable(video_id, name, e) from e
        return out[0], out[1]

    def read_into(self, video_id: str, features_out: np.ndarray, mask_out: np.ndarray, verify: bool = False) -> None:
        """Read straight into preallocated arrays (e.g. views of one big float16 block).

        ``verify``: also recompute the checksums stored at write time (costs a CRC pass).
        """
        feats, mask, _, f_shape, m_shape = self._datasets(video_id)
        if features_out.shape != f_shape or mask_out.shape != m_shape:
            raise ValueError(
                f"{video_id}: out arrays features {features_out.shape} / mask {mask_out.shape} do not "
                f"fit the file's features {f_shape} / mask {m_shape}"
            )
        if features_out.dtype != np.float16 or mask_out.dtype != bool:
            raise ValueError(f"{video_id}: out arrays must be float16 / bool")
        if f_shape[0] == 0:
            return
        name = schema.FEATURES_DATASET
        try:
            if not (features_out.flags.c_contiguous and mask_out.flags.c_contiguous):
                h5py.Dataset(feats).read_direct(features_out)
                name = schema.MASK_DATASET
                h5py.Dataset(mask).read_direct(mask_out)
            else:
                # Low-level reads straight into the caller's memory, safe because check_video proved
                # the file's types and shapes match: the bool mask is read as its raw bytes (1-byte
                # enum), skipping HDF5's enum conversion (measured 25 us -> 6 us per video).
                feats.read(h5py.h5s.ALL, h5py.h5s.ALL, features_out)
                name = schema.MASK_DATASET
                mask.read(h5py.h5s.ALL, h5py.h5s.ALL, mask_out.view(np.uint8), mtype=mask.get_type())
        except (OSError, RuntimeError) as e:
            raise self._unreadable(video_id, name, e) from e
        if mask_out.view(np.uint8).max() > 1:
            raise VafusionError(
                f"{self.holder(video_id)}: video {video_id!r}: mask holds values other than 0 and 1; "
                f"the file is damaged: re-extract {self.feature}"
            )
        if verify:
            self.verify_checksums(video_id, features_out, mask_out)

    def read_mask_into(self, video_id: str, mask_out: np.ndarray) -> None:
        """Read only the video's mask into a preallocated bool array (what streaming keeps in RAM)."""
        _, mask, _, _, m_shape = self._datasets(video_id)
        if mask_out.shape != m_shape or mask_out.dtype != bool or not mask_out.flags.c_contiguous:
            raise ValueError(
                f"{video_id}: mask out array {mask_out.shape} {mask_out.dtype} does not fit {m_shape} bool"
            )
        if m_shape[0] == 0:
            return
        try:  # raw bytes of the checked 1-byte enum, as in read_into
            mask.read(h5py.h5s.ALL, h5py.h5s.ALL, mask_out.view(np.uint8), mtype=mask.get_type())
        except (OSError, RuntimeError) as e:
            raise self._unreadable(video_id, schema.MASK_DATASET, e) from e
        if mask_out.view(np.uint8).max() > 1:
            raise VafusionError(
                f"{self.holder(video_id)}: video {video_id!r}: mask holds values other than 0 and 1; "
                f"the file is damaged: re-extract {self.feature}"
            )

    def _file_map(self, holder: Path) -> mmap.mmap:
        found = self._maps.get(holder)
        if found is None:
            with open(holder, "rb") as f:
                found = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            self._maps[holder] = found
        return found

    def map_features(self, video_id: str) -> np.ndarray | None:
        """The video's ``(T, dim)`` float16 features as a read-only view of the file (no copy), or None.

        None when the dataset is not stored contiguously in one piece (chunked or compressed:
        use :meth:`read_rows`). The view stays valid after :meth:`close`. The file is mapped
        once (for a merged file: the shard file the reader resolved, never HDF5's search path);
        a dataset reaching past the end of the file (a truncated copy) is an error here, where
        touching it later would kill the process with SIGBUS.
        """
        feats, _, holder, f_shape, _ = self._datasets(video_id)
        if f_shape[0] == 0:
            return np.zeros(f_shape, dtype=np.float16)
        offset = feats.get_offset()
        if offset is None:
            return None
        count = f_shape[0] * f_shape[1]
        mapped = self._file_map(holder)
        if offset + 2 * count > len(mapped):
            raise VafusionError(
                f"{holder}: video {video_id!r}: features reach past the end of the file (a truncated "
                f"copy); copy the file again or re-extract {self.feature}"
            )
        return np.frombuffer(mapped, dtype="<f2", count=count, offset=offset).reshape(f_shape)

    def read_rows(self, video_id: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of the video's features (float16), read through HDF5 (any storage)."""
        feats = self._datasets(video_id).features
        try:
            return h5py.Dataset(feats)[start:stop]
        except (OSError, RuntimeError) as e:
            raise self._unreadable(video_id, schema.FEATURES_DATASET, e) from e

    def checksum_problems(self, video_id: str, features: np.ndarray, mask: np.ndarray) -> list[str]:
        """Mismatches between data read for ``video_id`` and its stored checksums (``[]``: fine).

        Datasets written before checksums existed have nothing to compare; see
        :meth:`has_checksums`.
        """
        feats_id, mask_id = self._datasets(video_id)[:2]
        found = [
            checksum.mismatch(video_id, schema.FEATURES_DATASET, feats_id, features),
            checksum.mismatch(video_id, schema.MASK_DATASET, mask_id, mask),
        ]
        return [f for f in found if f]

    def has_checksums(self, video_id: str) -> bool:
        """Whether both datasets carry a checksum (an unreadable one counts: it is a problem, not an old file)."""
        feats_id, mask_id = self._datasets(video_id)[:2]
        try:
            return checksum.stored(feats_id) is not None and checksum.stored(mask_id) is not None
        except (OSError, RuntimeError):
            return True

    def verify_checksums(self, video_id: str, features: np.ndarray, mask: np.ndarray) -> None:
        problems = self.checksum_problems(video_id, features, mask)
        if problems:
            raise VafusionError(
                f"{self.holder(video_id)}: video {video_id!r}: {problems[0]}; copy the file again "
                f"or re-extract {self.feature}"
            )

    def require_unchanged(self) -> None:
        """Raise one VafusionError if this file (or a shard it links to) changed since it was opened.

        Why: a reader that streams rows (``train --stream``) maps the file and reads it for hours. A
        file rewritten in place would feed it other numbers silently, and touching the pages of a
        truncated file kills the process with SIGBUS; checking before each read (one ``stat`` per file
        and batch: 16 us on the loaded 2-core test machine, against milliseconds to assemble a batch)
        stops it first, with the file named. (A change between the check and the read, microseconds
        apart, is not caught.)
        """
        for ff in (self, *self._sources.values()):
            now = Identity.of(ff.path)
            if now != ff.identity:
                how = ff.identity.change(now) if ff.identity else "it could not be found when opened"
                raise VafusionError(
                    f"{ff.path}: changed while it was being read ({how}); "
                    "stopped before using its data: restore the file or re-extract it, then rerun the same command "
                    "(train --resume continues from the last finished epoch)"
                )

    def close(self) -> None:
        # The file first: h5py closes its open ids in one sweep, far cheaper than freeing them one by one.
        self._file.close()
        for source in self._sources.values():
            source.close()
        self._handles = {}
        self._maps = {}  # views handed out keep their map alive; it closes with the last of them

    def __enter__(self) -> FeatureFile:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_feature_file(cache_dir: str | Path, feature: str) -> FeatureFile:
    """Open ``CACHE/<feature>.h5``; an unknown name lists the features the cache has."""
    path = schema.feature_path(cache_dir, feature)
    if not path.is_file():
        available = list_features(cache_dir)
        raise VafusionError(
            f"{path}: feature {feature!r} is not in this cache; available: {', '.join(available) or 'none'}"
        )
    return FeatureFile(path)
