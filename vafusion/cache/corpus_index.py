"""corpus.h5: which ids a cache holds, their frame grid (fps, T), partition, group and labels.

Every feature file records the fingerprint of this index; the trainer refuses feature files
whose fingerprint differs, so features and labels can never be silently misaligned.
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from vafusion import __version__
from vafusion.atomic import atomic_path
from vafusion.cache import checksum, schema
from vafusion.fs import make_dir, require_writable, write_error
from vafusion.errors import VafusionError


@dataclass(frozen=True, eq=False)
class VideoEntry:
    """One annotated person track (Aff-Wild2 'video id') on its video's frame grid."""

    id: str
    fps: float
    n_frames: int
    partition: str
    group: str
    labels: np.ndarray | None = None  # (n_frames, 2) float32; NaN = no label; None = unlabelled

    def __post_init__(self) -> None:
        if self.partition not in schema.PARTITIONS:
            raise ValueError(f"{self.id}: partition {self.partition!r} not in {schema.PARTITIONS}")
        if self.labels is not None and self.labels.shape != (self.n_frames, 2):
            raise ValueError(f"{self.id}: labels shape {self.labels.shape} != ({self.n_frames}, 2)")


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
        """sha256 over ids, fps, T, partition, group and the label bytes of every entry.

        Computed once per index (it hashes every label: ~0.1 s at Aff-Wild2 scale); an index
        is not changed after it is built.
        """
        h = hashlib.sha256()
        for e in self.entries:
            meta = schema.canonical_json([e.id, float(e.fps), int(e.n_frames), e.partition, e.group])
            h.update(meta.encode("ascii"))
            if e.labels is None:
                h.update(b"<unlabelled>")
            else:
                h.update(np.ascontiguousarray(e.labels, dtype="<f4").tobytes())
        return h.hexdigest()


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
        raise write_error(path, e) from None
    return path


def _write(path: Path, index: CorpusIndex, source: str) -> None:
    str_dtype = h5py.string_dtype("utf-8")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs["format"] = schema.CORPUS_FORMAT
        f.attrs["format_version"] = schema.FORMAT_VERSION
        f.attrs["fingerprint"] = index.fingerprint
        f.attrs["vafusion_version"] = __version__
        f.attrs["created"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
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
                    e.id, schema.LABELS_GROUP, data)


def read_corpus_index(cache_dir: str | Path) -> CorpusIndex:
    """Read and check corpus.h5; every problem is one VafusionError naming the file and the fix."""
    path = Path(cache_dir) / schema.CORPUS_FILE
    if not path.is_file():
        raise VafusionError(
            f"{path}: no corpus index here; is {cache_dir} a cache written by `vafusion extract`?"
        )
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
            entries = []
            for i, vid in enumerate(ids):
                labels = labels_group[vid][()] if vid in labels_group else None
                entries.append(
                    VideoEntry(vid, float(fps[i]), int(n_frames[i]), partition[i], group[i], labels)
                )
            stored = f.attrs.get("fingerprint", "")
    except VafusionError:
        raise
    except (OSError, KeyError, ValueError, RuntimeError) as e:
        raise VafusionError(
            f"{path}: unreadable or incomplete corpus index ({str(e).splitlines()[0] if str(e) else e!r}); "
            f"copy it again, or re-run `vafusion extract` to rewrite it"
        ) from None
    index = CorpusIndex(tuple(entries))
    if index.fingerprint != stored:
        damaged = _damaged_labels(path)
        what = (f"the labels of {len(damaged)} id(s) do not match their checksums ({', '.join(map(repr, damaged[:3]))}"
                f"{' ...' if len(damaged) > 3 else ''})" if damaged else "content does not match its fingerprint")
        raise VafusionError(f"{path}: {what}; the file was altered or damaged: copy it again or re-extract")
    return index


def _damaged_labels(path: Path) -> list[str]:
    """Ids whose labels dataset no longer matches its checksum (only looked for once the fingerprint failed)."""
    with h5py.File(path, "r") as f:
        group = f[schema.LABELS_GROUP]
        return [vid for vid in sorted(group) if checksum.mismatch(vid, schema.LABELS_GROUP, group[vid].id, group[vid][()])]
