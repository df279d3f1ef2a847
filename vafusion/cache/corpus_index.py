"""corpus.h5: which ids a cache holds, their frame grid (fps, T), partition, group and labels.

Every feature file records the fingerprint of this index; the trainer refuses feature files
whose fingerprint differs, so features and labels can never be silently misaligned.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.cache import checksum, schema
from vafusion.errors import VafusionError
from vafusion.fs import make_dir, require_writable, write_error


def grid_instants(fps: float, n_frames: int) -> np.ndarray:
    """Instants t = (k - 1) / fps of frames k = 1..n_frames of a constant-rate video, float64 seconds."""
    return np.arange(n_frames, dtype=np.float64) / float(fps)


@dataclass(frozen=True, eq=False)
class VideoEntry:
    """One annotated person track (Aff-Wild2 'video id') on its video's frame grid.

    Row k is video frame k. Its instant is (k - 1) / fps, except for a variable-frame-rate
    video, whose frames' own instants (seconds from frame 1, from the timestamps) are
    ``frame_times``; :meth:`instants` gives either.
    """

    id: str
    fps: float
    n_frames: int
    partition: str
    group: str
    labels: np.ndarray | None = None  # (n_frames, 2) float32; NaN = no label; None = unlabelled
    frame_times: np.ndarray | None = None  # (n_frames,) float64 increasing; None = the constant-rate grid

    def __post_init__(self) -> None:
        if self.partition not in schema.PARTITIONS:
            raise ValueError(f"{self.id}: partition {self.partition!r} not in {schema.PARTITIONS}")
        if self.labels is not None and self.labels.shape != (self.n_frames, 2):
            raise ValueError(f"{self.id}: labels shape {self.labels.shape} != ({self.n_frames}, 2)")
        t = self.frame_times
        if t is not None and (t.shape != (self.n_frames,) or not np.isfinite(t).all() or (np.diff(t) <= 0).any()):
            raise ValueError(f"{self.id}: frame_times must be {self.n_frames} finite, increasing instants")

    def instants(self) -> np.ndarray:
        """The instant (seconds) of every frame: ``frame_times``, or the constant-rate grid."""
        return self.frame_times if self.frame_times is not None else grid_instants(self.fps, self.n_frames)


@dataclass
class CorpusIndex:
    """The sorted list of entries of a cache; ``fingerprint`` identifies it exactly."""

    entries: tuple[VideoEntry, ...]
    _by_id: dict[str, VideoEntry] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.entries = tuple(sorted(self.entries, key=lambda e: e.id))
        self._by_id = {e.id: e for e in self.entries}
        if len(self._by_id) != len(self.entries):
            raise ValueError("duplicate ids in corpus index")

    @property
    def ids(self) -> list[str]:
        return [e.id for e in self.entries]

    def __getitem__(self, video_id: str) -> VideoEntry:
        return self._by_id[video_id]

    def __contains__(self, video_id: object) -> bool:
        return video_id in self._by_id

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[VideoEntry]:
        return iter(self.entries)

    def by_partition(self, partition: str) -> list[VideoEntry]:
        return [e for e in self.entries if e.partition == partition]

    @functools.cached_property
    def fingerprint(self) -> str:
        """sha256 over ids, fps, T, partition, group, the label bytes and (variable frame rate only)
        the frame instants of every entry.

        Computed once per index (it hashes every label: ~0.1 s at Aff-Wild2 scale); an index
        is not changed after it is built. A constant-rate entry hashes exactly as before frame
        instants existed, so the fingerprints of existing caches stay valid.
        """
        h = hashlib.sha256()
        for e in self.entries:
            meta = schema.canonical_json([e.id, float(e.fps), int(e.n_frames), e.partition, e.group])
            h.update(meta.encode("ascii"))
            if e.labels is None:
                h.update(b"<unlabelled>")
            else:
                h.update(np.ascontiguousarray(e.labels, dtype="<f4").tobytes())
            if e.frame_times is not None:
                h.update(b"<frame_times>" + np.ascontiguousarray(e.frame_times, dtype="<f8").tobytes())
        return h.hexdigest()

    def differences(self, other: CorpusIndex) -> list[str]:
        """How ``other`` differs from this index, per id (for an error that says what changed)."""
        added = sorted(set(other.ids) - set(self.ids))
        gone = sorted(set(self.ids) - set(other.ids))
        out = [f"{len(added)} id(s) new (e.g. {added[0]})"] if added else []
        out += [f"{len(gone)} id(s) gone (e.g. {gone[0]})"] if gone else []
        for e in self.entries:
            o = other._by_id.get(e.id)
            what = [] if o is None else _entry_differences(e, o)
            if what:
                out.append(f"{e.id}: other {', '.join(what)}")
        return out


def _entry_differences(a: VideoEntry, b: VideoEntry) -> list[str]:
    def same(x: np.ndarray | None, y: np.ndarray | None) -> bool:
        if x is None or y is None:
            return x is y
        return np.array_equal(x, y, equal_nan=True)

    checks = {
        "fps": a.fps == b.fps,
        "frame count": a.n_frames == b.n_frames,
        "partition": a.partition == b.partition,
        "group": a.group == b.group,
        "labels": same(a.labels, b.labels),
        "frame instants (variable frame rate)": same(a.frame_times, b.frame_times),
    }
    return [name for name, ok in checks.items() if not ok]


def write_corpus_index(cache_dir: str | Path, index: CorpusIndex, source: str = "") -> Path:
    """Write corpus.h5 atomically (temporary file, then rename): a kill never leaves half of it.

    Each labels dataset carries its checksum, so a damaged file names the id whose labels changed.
    """
    cache_dir = make_dir(Path(cache_dir))
    path = cache_dir / schema.CORPUS_FILE
    require_writable(cache_dir, schema.CORPUS_FILE)
    try:
        _write(path, index, source)
    except OSError as e:
        raise write_error(path, e) from e
    return path


def _write(path: Path, index: CorpusIndex, source: str) -> None:
    str_dtype = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = schema.CORPUS_FORMAT
        f.attrs["format_version"] = schema.FORMAT_VERSION
        f.attrs["fingerprint"] = index.fingerprint
        f.attrs["vafusion_version"] = __version__
        f.attrs["created"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
        f.attrs["source"] = source
        f.create_dataset("ids", data=np.array(index.ids, dtype=object), dtype=str_dtype)
        f.create_dataset("fps", data=np.array([e.fps for e in index], dtype=np.float64))
        f.create_dataset("n_frames", data=np.array([e.n_frames for e in index], dtype=np.int64))
        f.create_dataset("partition", data=np.array([e.partition for e in index], dtype=object), dtype=str_dtype)
        f.create_dataset("group", data=np.array([e.group for e in index], dtype=object), dtype=str_dtype)
        labels = f.create_group(schema.LABELS_GROUP)
        for e in index:
            if e.labels is not None:
                data = e.labels.astype(np.float32)
                labels.create_dataset(e.id, data=data).attrs[schema.CHECKSUM_ATTR] = checksum.checksum(
                    e.id, schema.LABELS_GROUP, data
                )
        timed = {e.id: e.frame_times for e in index if e.frame_times is not None}
        if timed:  # the group is absent when every id is constant-rate
            times = f.create_group(schema.FRAME_TIMES_GROUP)
            for video_id, frame_times in timed.items():
                data = frame_times.astype(np.float64)
                times.create_dataset(video_id, data=data).attrs[schema.CHECKSUM_ATTR] = checksum.checksum(
                    video_id, schema.FRAME_TIMES_GROUP, data
                )


def read_corpus_index(cache_dir: str | Path) -> CorpusIndex:
    """Read and check corpus.h5; every problem is one VafusionError naming the file and the fix."""
    path = Path(cache_dir) / schema.CORPUS_FILE
    if not path.is_file():
        raise VafusionError(f"{path}: no corpus index here; is {cache_dir} a cache written by `vafusion extract`?")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != schema.CORPUS_FORMAT:
                raise VafusionError(f"{path}: not a vafusion corpus index (format attribute missing or wrong)")
            version = int(f.attrs.get("format_version", -1))
            if version != schema.FORMAT_VERSION:
                raise VafusionError(
                    f"{path}: corpus index format_version {version}, this vafusion reads "
                    f"{schema.FORMAT_VERSION}; re-extract or use a matching vafusion version"
                )
            ids = [s.decode() if isinstance(s, bytes) else s for s in f["ids"][()]]
            fps = f["fps"][()]
            n_frames = f["n_frames"][()]
            partition = [s.decode() if isinstance(s, bytes) else s for s in f["partition"][()]]
            group = [s.decode() if isinstance(s, bytes) else s for s in f["group"][()]]
            labels_group = f[schema.LABELS_GROUP]
            times_group = f.get(schema.FRAME_TIMES_GROUP, {})
            entries = []
            for i, vid in enumerate(ids):
                labels = labels_group[vid][()] if vid in labels_group else None
                times = np.asarray(times_group[vid][()], dtype=np.float64) if vid in times_group else None
                entries.append(VideoEntry(vid, float(fps[i]), int(n_frames[i]), partition[i], group[i], labels, times))
            stored = f.attrs.get("fingerprint", "")
    except VafusionError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise VafusionError(
            f"{path}: unreadable or incomplete corpus index ({str(e).splitlines()[0] if str(e) else e!r}); "
            f"copy it again, or re-run `vafusion extract` to rewrite it"
        ) from e
    index = CorpusIndex(tuple(entries))
    if index.fingerprint != stored:
        damaged = _damaged(path)
        what = (
            "; ".join(
                f"the {kind} of {len(ids)} id(s) do not match their checksums "
                f"({', '.join(map(repr, ids[:3]))}{' ...' if len(ids) > 3 else ''})"
                for kind, ids in damaged.items()
            )
            or "content does not match its fingerprint"
        )
        raise VafusionError(f"{path}: {what}; the file was altered or damaged: copy it again or re-extract")
    return index


def _damaged(path: Path) -> dict[str, list[str]]:
    """Ids whose labels (frame instants) no longer match their checksum (looked for once the fingerprint failed)."""
    kinds = {schema.LABELS_GROUP: "labels", schema.FRAME_TIMES_GROUP: "frame instants"}
    with h5py.File(path, "r") as f:
        out = {}
        for name, kind in kinds.items():
            group = f.get(name, {})
            ids = sorted(vid for vid in group if checksum.mismatch(vid, name, group[vid].id, group[vid][()]))
            if ids:
                out[kind] = ids
        return out
