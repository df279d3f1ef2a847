"""A feature cache in RAM or streamed from its files, standardised lazily, cut into windows by index arithmetic.

Why this shape: stage 2 trains many small models from the same cache, so the cache is
read once (close to disk speed, straight into one float16 block per feature set, no per-video
copies), or, when it does not fit, read where it lies (:mod:`vafusion.fusion.sources`), and
everything after that is index arithmetic on rows:

- ``LoadedCache``: per feature ``sources[k]`` (rows (sum T, dim) float16, in RAM or streamed)
  and ``masks[k]`` (sum T,) bool, ``labels`` (sum T, 2) float32 (NaN = no label), ``offsets``
  (N + 1,) so video ``i`` owns rows ``offsets[i]:offsets[i + 1]``. Masks and labels (9 bytes a
  frame) are always in RAM.
- ``Standardizer``: per-feature mean/std of the training ids' present frames (float64
  accumulators over chunks; never a float32 copy of the cache); applied per batch.
- ``make_windows``: rows ``[video, start, length]``; ``build_batch`` copies each window's
  contiguous rows straight into a (B, W, d) float32 output (conversion on the fly), so only
  the rows of the batch are ever converted; masks and labels are gathered through absolute
  frame indices (``offsets[video] + start + arange(W)``, clipped, with a validity mask).
- ``overlap_average`` / ``partition_score``: window predictions back to per-frame
  predictions, scored over the whole partition as the ABAW challenge does.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty, Full, Queue
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from vafusion.cache import schema
from vafusion.cache.check import few, require_agreement
from vafusion.cache.corpus_index import CorpusIndex, read_corpus_index
from vafusion.cache.reader import FeatureFile, open_feature_file
from vafusion.errors import VafusionError
from vafusion.fusion.metrics import score
from vafusion.fusion.sources import (
    CHECK_CHUNK,
    FeatureSource,
    InMemoryFeature,
    StreamedFeature,
    as_tensor,
    choose_stream,
    find_nonfinite,
    nonfinite_error,
)

_STATS_CHUNK = 1 << 21  # float32 values per step of the statistics pass (8 MiB buffer)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


@dataclass(eq=False)
class LoadedCache:
    """Feature sets, masks and labels of some ids of a cache, in ``ids`` order (features in RAM or streamed)."""

    cache_dir: Path
    index: CorpusIndex
    ids: list[str]
    features: tuple[str, ...]
    dims: tuple[int, ...]
    sources: list[FeatureSource]  # per feature: its (sum T, dim) float16 rows, in RAM or streamed
    masks: list[np.ndarray]  # per feature: (sum T,) bool (face / audio present)
    offsets: np.ndarray  # (N + 1,) int64
    labels: np.ndarray  # (sum T, 2) float32, NaN = no label
    extractors: dict[str, dict] = field(default_factory=dict)  # feature -> extractor description
    feature_fingerprints: dict[str, str] = field(default_factory=dict)  # feature -> fingerprint
    _position: dict[str, int] = field(init=False, repr=False)
    _torch: tuple[list[Tensor], Tensor] | None = field(init=False, repr=False, default=None)

    def __post_init__(self) -> None:
        self._position = {vid: i for i, vid in enumerate(self.ids)}

    @property
    def data(self) -> list[np.ndarray]:
        """Per feature the (sum T, dim) float16 block in RAM; only for a cache loaded into RAM."""
        if not self.in_memory:
            raise AttributeError("a streamed cache has no blocks in RAM; read rows with sources[k].rows(a, b)")
        return [s.block for s in self.sources]  # type: ignore[attr-defined]

    @property
    def in_memory(self) -> bool:
        return all(s.in_memory for s in self.sources)

    @property
    def lengths(self) -> np.ndarray:
        """(N,) int64 frame counts T of the loaded ids."""
        return np.diff(self.offsets)

    @property
    def n_frames(self) -> int:
        return int(self.offsets[-1])

    @property
    def corpus_fingerprint(self) -> str:
        return self.index.fingerprint

    @property
    def feature_bytes(self) -> int:
        """Bytes of the float16 features of the loaded ids (held in RAM unless streamed)."""
        return self.n_frames * sum(self.dims) * 2

    def position(self, video_id: str) -> int:
        """Row of ``video_id`` in ``ids`` / ``offsets`` (the ``video`` column of windows)."""
        try:
            return self._position[video_id]
        except KeyError:
            raise KeyError(f"{video_id!r} is not loaded (loaded: {len(self.ids)} ids)") from None

    def positions(self, ids: Sequence[str]) -> np.ndarray:
        return np.array([self.position(i) for i in ids], dtype=np.int64)

    def rows(self, video_id: str) -> slice:
        i = self.position(video_id)
        return slice(int(self.offsets[i]), int(self.offsets[i + 1]))

    def tensors(self) -> tuple[list[Tensor], Tensor]:
        """Zero-copy torch views ``(masks, labels)`` (made once)."""
        if self._torch is None:
            with torch.inference_mode(False):  # usable for training even if made under inference_mode
                self._torch = ([torch.from_numpy(m) for m in self.masks], torch.from_numpy(self.labels))
        return self._torch

    def close(self) -> None:
        """Close the files a streamed cache reads (a cache in RAM holds none). Also done when collected."""
        for source in self.sources:
            source.close()


def load_cache(
    cache_dir: str | Path,
    features: Sequence[str],
    ids: Sequence[str] | None = None,
    *,
    index: CorpusIndex | None = None,
    progress: bool = True,
    verify_checksums: bool = False,
    stream: bool | None = None,
) -> LoadedCache:
    """Read corpus.h5 and the named feature files of ``cache_dir``, checked: features into RAM, or streamed.

    ``ids`` (default: every id of the index) fixes the order of ``LoadedCache.ids``. Pass an
    already read ``index`` to skip reading corpus.h5 again. Before anything big is read, the
    cache's one checker (:func:`vafusion.cache.check.require_agreement`, also behind
    ``cache verify``) proves every dataset well-formed and every feature file in agreement with
    the index (corpus fingerprint, ids, frame counts); inf/NaN features are an error naming
    the feature and the id. ``verify_checksums`` also recomputes the checksums stored at write
    time (a CRC pass over the data; ``cache verify`` does this for a whole cache once, e.g.
    after copying it).

    ``stream``: False reads each video straight into its rows of the feature's float16 block,
    in file (sorted id) order, so the read is sequential; True keeps only masks and labels in
    RAM and reads feature rows from the files when a batch needs them
    (:class:`~vafusion.fusion.sources.StreamedFeature`: each video is checked for inf/NaN, and
    its checksums with ``verify_checksums``, when first used); None: the choice of
    :func:`vafusion.fusion.sources.loading`, else streamed when the features take more than
    half of the memory available now.
    """
    cache_dir = Path(cache_dir)
    features = _requested_features(cache_dir, features)
    if index is None:
        index = read_corpus_index(cache_dir)
    ids = _requested_ids(cache_dir, index, ids)
    offsets = _row_offsets(index, ids)
    files = _open_agreeing(cache_dir, index, features, ids)
    streamed = False
    try:
        labels = _frame_labels(index, ids, offsets)
        streamed = choose_stream(stream, int(offsets[-1]) * sum(ff.dim for ff in files) * 2)
        read = _open_streamed if streamed else _read_into_ram
        sources, masks = read(files, ids, offsets, verify_checksums, progress)
        return LoadedCache(
            cache_dir=cache_dir,
            index=index,
            ids=ids,
            features=features,
            dims=tuple(ff.dim for ff in files),
            sources=sources,
            masks=masks,
            offsets=offsets,
            labels=labels,
            extractors={ff.feature: ff.extractor for ff in files},
            feature_fingerprints={ff.feature: ff.fingerprint for ff in files},
        )
    except BaseException:
        streamed = False  # close every file below
        raise
    finally:
        if not streamed:  # a cache in RAM needs its files no more; a streamed one reads them later
            for ff in files:
                ff.close()


def _requested_features(cache_dir: Path, features: str | Sequence[str]) -> tuple[str, ...]:
    """The feature names as a tuple (one name may come as a plain string); none, or one named twice,
    is the caller's mistake, named before any file is opened."""
    if isinstance(features, str):
        features = [features]
    features = tuple(features)
    if not features:
        raise VafusionError(f"{cache_dir}: no feature sets requested; name at least one (--features)")
    if len(set(features)) != len(features):
        raise VafusionError(f"--features {','.join(features)}: a feature set is named twice; name each once")
    return features


def _requested_ids(cache_dir: Path, index: CorpusIndex, ids: Sequence[str] | None) -> list[str]:
    """The ids to load, in the caller's order (default: the index's); an id the index lacks is named
    here, before the feature files are checked, so the message points at the id list."""
    ids = index.ids if ids is None else list(ids)
    if len(set(ids)) != len(ids):
        raise ValueError("load_cache: duplicate ids requested")
    unknown = [vid for vid in ids if vid not in index]
    if unknown:
        raise VafusionError(
            f"{cache_dir / schema.CORPUS_FILE}: no id(s) {few(unknown)} in this cache's corpus index; "
            f"check the id list, or extract a cache that includes them"
        )
    return ids


def _row_offsets(index: CorpusIndex, ids: list[str]) -> np.ndarray:
    """(N + 1,) int64 first rows of the ids laid end to end: video ``i`` owns ``offsets[i]:offsets[i + 1]``."""
    lengths = np.array([index[vid].n_frames for vid in ids], dtype=np.int64)
    offsets = np.zeros(len(ids) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    return offsets


def _open_agreeing(cache_dir: Path, index: CorpusIndex, features: tuple[str, ...], ids: list[str]) -> list[FeatureFile]:
    """Open the feature files and prove them in agreement with the index before anything big is read;
    on any failure the files opened so far are closed again."""
    files: list[FeatureFile] = []
    try:
        for name in features:
            files.append(open_feature_file(cache_dir, name))
        require_agreement(cache_dir, index, files, ids)
    except BaseException:
        for ff in files:
            ff.close()
        raise
    return files


def _frame_labels(index: CorpusIndex, ids: list[str], offsets: np.ndarray) -> np.ndarray:
    """(sum T, 2) float32 labels in the rows of ``offsets``; NaN for ids without annotations."""
    labels = np.full((int(offsets[-1]), 2), np.nan, dtype=np.float32)
    for i, vid in enumerate(ids):
        entry_labels = index[vid].labels
        if entry_labels is not None:
            labels[offsets[i] : offsets[i + 1]] = entry_labels
    return labels


def _open_streamed(
    files: list[FeatureFile], ids: list[str], offsets: np.ndarray, verify: bool, progress: bool
) -> tuple[list[FeatureSource], list[np.ndarray]]:
    """Masks into RAM; features left in the (open) files, read when used."""
    sources: list[FeatureSource] = []
    masks: list[np.ndarray] = []
    for ff in files:
        mask = np.empty(int(offsets[-1]), dtype=bool)
        for i in tqdm(range(len(ids)), desc=f"opening {ff.feature}", unit="video", disable=None if progress else True):
            ff.read_mask_into(ids[i], mask[offsets[i] : offsets[i + 1]])
        sources.append(StreamedFeature(ff, ids, offsets, mask, verify=verify))
        masks.append(mask)
    return sources, masks


def _read_into_ram(
    files: list[FeatureFile], ids: list[str], offsets: np.ndarray, verify: bool, progress: bool
) -> tuple[list[FeatureSource], list[np.ndarray]]:
    """Every video of every file straight into its rows of one float16 block per feature, scanned for inf/NaN."""
    total = int(offsets[-1])
    sources: list[FeatureSource] = []
    masks: list[np.ndarray] = []
    read_order = sorted(range(len(ids)), key=lambda i: ids[i])  # files store ids sorted
    bar = tqdm(
        total=sum(ff.dim for ff in files) * 2 * total,
        unit="B",
        unit_scale=True,
        desc="loading features",
        disable=None if progress else True,
    )
    # The inf/NaN scan of a video runs in a second thread while the next video is read:
    # both h5py reads and numpy loops release the GIL, so the scan costs no wall time
    # when a core is free (it would otherwise add ~30% to a load from the page cache).
    scans: deque[tuple[FeatureFile, str, Future[bool]]] = deque()

    def check_scans(wait: bool) -> None:
        while scans and (wait or scans[0][2].done()):
            ff, vid, scan = scans.popleft()
            if scan.result():
                raise nonfinite_error(ff, vid)

    scratch = np.empty(CHECK_CHUNK, dtype=np.uint16)  # only the one scan thread uses it
    with bar, ThreadPoolExecutor(max_workers=1, thread_name_prefix="vafusion-scan") as scanner:
        for ff in files:
            block = np.empty((total, ff.dim), dtype=np.float16)
            mask = np.empty(total, dtype=bool)
            for i in read_order:
                a, b = int(offsets[i]), int(offsets[i + 1])
                vid = ids[i]
                ff.read_into(vid, block[a:b], mask[a:b], verify=verify)
                scans.append((ff, vid, scanner.submit(find_nonfinite, block[a:b], scratch)))
                check_scans(wait=False)
                bar.update((b - a) * ff.dim * 2)
            sources.append(InMemoryFeature(ff.feature, block))
            masks.append(mask)
        check_scans(wait=True)
    return sources, masks


# ---------------------------------------------------------------------------------------
# Standardisation
# ---------------------------------------------------------------------------------------


def _merged_ranges(offsets: np.ndarray, positions: np.ndarray) -> list[tuple[int, int]]:
    """Row ranges of the given videos, adjacent ones merged (fewer, longer chunks)."""
    ranges: list[tuple[int, int]] = []
    for i in sorted(int(p) for p in positions):
        a, b = int(offsets[i]), int(offsets[i + 1])
        if a == b:
            continue
        if ranges and ranges[-1][1] == a:
            ranges[-1] = (ranges[-1][0], b)
        else:
            ranges.append((a, b))
    return ranges


def _masked_moments(
    source: FeatureSource, mask: np.ndarray, ranges: list[tuple[int, int]]
) -> tuple[int, np.ndarray, np.ndarray]:
    """``(n, mean, M2)`` (float64) of the rows of ``source`` in ``ranges`` where ``mask``.

    Chunks (~8 MB) are converted into one reused float32 buffer, centred on their own mean
    (so no catastrophic cancellation) and merged with Chan's parallel update in float64. The
    chunks are the same whether the rows are in RAM or streamed (same statistics, bit for
    bit), and only one chunk is ever held: memory stays bounded for a cache of any size.
    """
    dim = source.dim
    rows = max(1, _STATS_CHUNK // dim)
    buffer = torch.empty((rows, dim), dtype=torch.float32)
    n_total = 0
    mean = np.zeros(dim, dtype=np.float64)
    m2 = np.zeros(dim, dtype=np.float64)
    for a, b in ranges:
        for c in range(a, b, rows):
            d = min(c + rows, b)
            sel = mask[c:d]
            n = int(sel.sum())
            if n == 0:
                continue
            chunk = source.rows(c, d)
            part = chunk if n == d - c else chunk[sel]
            x = buffer[:n]
            x.copy_(as_tensor(part))
            # float32 cascade sums of float16 values are exact to ~1e-7 relative; centring on
            # the chunk mean first keeps the sum of squares free of cancellation
            centre = x.sum(dim=0) / n
            chunk_m2 = x.sub_(centre).square_().sum(dim=0).double().numpy()
            chunk_mean = centre.double().numpy()
            delta = chunk_mean - mean
            n_new = n_total + n
            mean += delta * (n / n_new)
            m2 += chunk_m2 + delta**2 * (n_total * n / n_new)
            n_total = n_new
    return n_total, mean, m2


class Standardizer:
    """Per-feature mean/std of the training frames; applied per batch, stored with the model.

    Statistics come from the training ids only (validation must not leak into the model)
    and from frames whose mask is True (absent faces/audio are not data). A dimension with
    std < ``min_std`` (e.g. a dead ReLU unit) gets std 1 instead of a huge scale; a feature
    with no present training frame gets mean 0, std 1. A feature whose provenance asks for a
    shared scale (``schema.STANDARDIZE_KEY``; ``cache derive --pca`` does) gets one std for all
    its dims, the root mean of their variances.
    """

    def __init__(self, features: Sequence[str], mean: Sequence[np.ndarray], std: Sequence[np.ndarray]) -> None:
        self.features = tuple(features)
        self.mean = [np.asarray(m, dtype=np.float32).reshape(-1) for m in mean]
        self.std = [np.asarray(s, dtype=np.float32).reshape(-1) for s in std]
        if not (len(self.features) == len(self.mean) == len(self.std)):
            raise ValueError("Standardizer: one mean and one std per feature")
        for name, m, s in zip(self.features, self.mean, self.std):
            if m.shape != s.shape:
                raise ValueError(f"Standardizer: {name} mean {m.shape} != std {s.shape}")
            if not (np.isfinite(m).all() and np.isfinite(s).all() and (s > 0).all()):
                raise ValueError(f"Standardizer: {name} statistics must be finite with std > 0")
        # per batch: x * inv_std + shift == (x - mean) / std, one fused pass
        self._inv_std = [torch.from_numpy((1.0 / s).astype(np.float32)) for s in self.std]
        self._shift = [-(torch.from_numpy(m) * inv) for m, inv in zip(self.mean, self._inv_std)]

    @classmethod
    def fit(cls, loaded: LoadedCache, ids: Sequence[str], min_std: float = 1e-6) -> Standardizer:
        """Statistics over the present frames of ``ids`` (the training ids) of ``loaded``."""
        ranges = _merged_ranges(loaded.offsets, loaded.positions(ids))
        means, stds = [], []
        for name, source, mask in zip(loaded.features, loaded.sources, loaded.masks):
            n, mean, m2 = _masked_moments(source, mask, ranges)
            if n == 0:
                means.append(np.zeros(source.dim, np.float32))
                stds.append(np.ones(source.dim, np.float32))
                continue
            std = np.sqrt(np.maximum(m2 / n, 0.0))
            if loaded.extractors.get(name, {}).get(schema.STANDARDIZE_KEY) == schema.STANDARDIZE_SHARED:
                # principal components: one scale for all dims keeps their relative variances, where
                # unit variance per dim would blow the near-empty trailing components up to the signal's size
                std[:] = np.sqrt(np.mean(std.astype(np.float64) ** 2))
            std[std < min_std] = 1.0
            means.append(mean.astype(np.float32))
            stds.append(std.astype(np.float32))
        return cls(loaded.features, means, stds)

    def state_dict(self) -> dict[str, np.ndarray]:
        """``{"<feature>.mean": (dim,), "<feature>.std": (dim,)}`` float32, in feature order.

        (For a ``torch.load(weights_only=True)`` checkpoint store them as tensors:
        ``torch.from_numpy``; :meth:`from_state_dict` accepts either.)
        """
        state: dict[str, np.ndarray] = {}
        for name, m, s in zip(self.features, self.mean, self.std):
            state[f"{name}.mean"] = m.copy()
            state[f"{name}.std"] = s.copy()
        return state

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> Standardizer:
        names: list[str] = []
        for key in state:
            name, _, kind = key.rpartition(".")
            if kind not in ("mean", "std") or not name:
                raise ValueError(f"Standardizer state: unexpected key {key!r}")
            if name not in names:
                names.append(name)

        def arr(key: str) -> np.ndarray:
            if key not in state:
                raise ValueError(f"Standardizer state: missing {key!r}")
            value = state[key]
            if isinstance(value, Tensor):
                value = value.detach().cpu().numpy()
            return np.asarray(value, dtype=np.float32)

        return cls(names, [arr(f"{n}.mean") for n in names], [arr(f"{n}.std") for n in names])

    def check(self, loaded: LoadedCache) -> None:
        """The loaded cache has the same feature sets, in the same order and dims."""
        dims = tuple(m.size for m in self.mean)
        if self.features != loaded.features or dims != loaded.dims:
            raise VafusionError(
                f"{loaded.cache_dir}: features {list(loaded.features)} (dims {list(loaded.dims)}) do not match "
                f"the model's {list(self.features)} (dims {list(dims)}); load the cache with the model's features"
            )


# ---------------------------------------------------------------------------------------
# Windows and batches
# ---------------------------------------------------------------------------------------


def make_windows(
    lengths: Sequence[int] | np.ndarray | None = None,
    window: int = 300,
    hop: int = 200,
    *,
    offsets: Sequence[int] | np.ndarray | None = None,
    videos: Sequence[int] | np.ndarray | None = None,
) -> np.ndarray:
    """``(n_windows, 3)`` int64 rows ``[video, start, length]`` covering every frame.

    Per video of T frames (give ``lengths``, or ``offsets`` of N + 1): starts 0, hop, 2 hop,
    ... and a last window right-aligned at T - window so the end is covered (not repeated if
    already aligned); all of length ``window``. A video with T <= window gets one window
    [0, T) (the batch pads it to W and masks the padding). T = 0 gives no window.
    ``videos`` restricts the windows to those video positions (e.g. the training ids).
    """
    if not 1 <= hop <= window:
        raise ValueError(f"make_windows: need 1 <= hop <= window (else frames go uncovered), got {window}, {hop}")
    if (lengths is None) == (offsets is None):
        raise ValueError("make_windows: give exactly one of lengths or offsets")
    t = np.diff(np.asarray(offsets, dtype=np.int64)) if lengths is None else np.asarray(lengths, dtype=np.int64)
    video = np.arange(t.size, dtype=np.int64)
    if videos is not None:
        video = np.asarray(videos, dtype=np.int64).reshape(-1)
        t = t[video]
    keep = t > 0
    video, t = video[keep], t[keep]
    extra = np.maximum(t - window, 0)
    count = 1 + -(-extra // hop)  # 1 + ceil((T - window) / hop)
    first = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(int(count.sum()), dtype=np.int64) - first
    last_start = np.repeat(extra, count)
    starts = np.minimum(k * hop, last_start)
    length = np.repeat(np.minimum(t, window), count)
    return np.stack([np.repeat(video, count), starts, length], axis=1)


def windows_with_labels(loaded: LoadedCache, windows: np.ndarray) -> np.ndarray:
    """The windows holding at least one frame with a finite label (the others train nothing)."""
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    labelled = np.isfinite(loaded.labels).any(axis=1)
    cum = np.zeros(labelled.size + 1, dtype=np.int64)
    np.cumsum(labelled, out=cum[1:])
    a = loaded.offsets[windows[:, 0]] + windows[:, 1]
    return windows[cum[a + windows[:, 2]] > cum[a]]


@dataclass
class Batch:
    streams: list[Tensor]  # per feature: (B, W, d_i) float32 standardised; 0 where present is False
    present: list[Tensor]  # per feature: (B, W) bool, cache mask AND inside the video
    valid: Tensor  # (B, W) bool, frame inside the video
    labels: Tensor  # (B, W, 2) float32, NaN = no label (also NaN on padding)
    windows: Tensor  # (B, 3) long [video_idx, start, length] — for overlap-averaging

    def to(self, device: torch.device | str, non_blocking: bool = False) -> Batch:
        def move(t: Tensor) -> Tensor:
            return t.to(device, non_blocking=non_blocking)

        return Batch(
            streams=[move(s) for s in self.streams],
            present=[move(p) for p in self.present],
            valid=move(self.valid),
            labels=move(self.labels),
            windows=move(self.windows),
        )


def frame_indices(offsets: np.ndarray, windows: np.ndarray, width: int) -> tuple[np.ndarray, np.ndarray]:
    """``(idx, valid)`` both (B, W): absolute rows of each window frame, and inside-video flags.

    Padding positions point at the window's last real frame (any row of the same video would
    do: they are masked), so a gather never leaves the video or the block.
    """
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    step = np.arange(width, dtype=np.int64)
    length = windows[:, 2:3]
    valid = step < length
    base = offsets[windows[:, 0]] + windows[:, 1]
    idx = base[:, None] + np.minimum(step, np.maximum(length - 1, 0))
    return idx, valid


class BufferPool:
    """Reuses the big float32 stream buffers of earlier batches once nothing refers to them.

    Why: a fresh (16, 300, 2048) float32 buffer is 39 MB of new pages, and the page faults
    of touching them cost more than the gather and standardisation themselves (one-off
    measurement, B=16, W=300, 2048+128+64: ~3x faster recycled than fresh). A buffer is handed out again only
    when no tensor anywhere (a view, an
    autograd saved tensor, a numpy alias) still uses its storage, so reuse can never
    overwrite data someone holds; without the storage use count (other torch builds) it
    simply allocates. Holds at most ``slots`` buffers per shape.
    """

    def __init__(self, slots: int = 2) -> None:
        self.slots = slots
        self._buffers: dict[tuple[int, ...], list[Tensor]] = {}

    @staticmethod
    def _unused(buffer: Tensor) -> bool:
        use_count = getattr(torch._C, "_storage_Use_Count", None)
        if use_count is None:
            return False
        return use_count(buffer.untyped_storage()._cdata) == 1

    def take(self, shape: tuple[int, ...]) -> Tensor:
        """A float32 tensor of ``shape`` (contents undefined): a free kept buffer, or a new one.

        Always a fresh view: a view holds its own reference to the storage, which is what
        :meth:`_unused` counts (the same tensor object held twice would count once).
        """
        kept = self._buffers.setdefault(tuple(shape), [])
        for buffer in kept:
            if self._unused(buffer):
                return buffer.view(shape)
        buffer = torch.empty(shape, dtype=torch.float32)
        if len(kept) < self.slots:
            kept.append(buffer)
        return buffer.view(shape)


def build_batch(
    loaded: LoadedCache,
    standardizer: Standardizer,
    windows_rows: np.ndarray,
    *,
    window: int | None = None,
    pool: BufferPool | None = None,
    pin_memory: bool = False,
) -> Batch:
    """Gather windows into a standardised float32 batch.

    ``window`` (W) defaults to the longest row; give the common window size when the
    predictions of many batches will be stacked for :func:`overlap_average`. A window is a
    contiguous run of float16 rows (in RAM, or a mapped view of the cache file when streamed),
    so each is copied (and converted to float32) straight into its slot of the output: no
    float16 intermediate, one ``copy_`` per window and feature (~5 us each). Then one fused pass ``x * (1/std)
    - mean/std`` over the output,
    and the absent/padding rows are zeroed. Masks and labels (small) use one index_select.
    ``pool`` (see :class:`BufferPool`; :func:`iterate_batches` uses one) recycles outputs.
    ``pin_memory`` (needs CUDA) puts every tensor of the batch in page-locked memory.
    """
    standardizer.check(loaded)
    rows = np.asarray(windows_rows, dtype=np.int64).reshape(-1, 3)
    longest = int(rows[:, 2].max()) if rows.size else 0
    width = longest if window is None else int(window)
    if longest > width:
        raise ValueError(f"build_batch: a window of {longest} frames does not fit W={width}")
    bsz = rows.shape[0]
    idx_np, valid_np = frame_indices(loaded.offsets, rows, width)
    idx = torch.from_numpy(idx_np.reshape(-1))
    valid = torch.from_numpy(valid_np)
    first = (loaded.offsets[rows[:, 0]] + rows[:, 1]).tolist()
    length = rows[:, 2].tolist()
    masks_t, labels_t = loaded.tensors()
    streams, present = [], []
    for k, (source, mask) in enumerate(zip(loaded.sources, masks_t)):
        dim = source.dim
        shape = (bsz, width, dim)
        if pool is not None and not pin_memory:
            out = pool.take(shape)
        else:
            out = torch.empty(shape, dtype=torch.float32, pin_memory=pin_memory)
        source.copy_windows(out, first, length)
        flat = out.view(-1, dim)
        torch.addcmul(standardizer._shift[k], flat, standardizer._inv_std[k], out=flat)
        pres = mask.index_select(0, idx).view(bsz, width) & valid
        absent = (~pres).view(-1).nonzero().squeeze(1)
        if absent.numel():
            flat.index_fill_(0, absent, 0.0)  # also overwrites the unwritten padding rows
        streams.append(out)
        present.append(pres)
    labels = labels_t.index_select(0, idx).view(bsz, width, 2)
    labels.masked_fill_(~valid.unsqueeze(-1), float("nan"))
    batch = Batch(streams=streams, present=present, valid=valid, labels=labels, windows=torch.from_numpy(rows.copy()))
    if pin_memory:  # the small tensors; the streams were allocated pinned
        batch.present = [p.pin_memory() for p in batch.present]
        batch.valid, batch.labels, batch.windows = (t.pin_memory() for t in (batch.valid, batch.labels, batch.windows))
    return batch


def iterate_batches(
    loaded: LoadedCache,
    standardizer: Standardizer,
    windows: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int | None = None,
    generator: np.random.Generator | None = None,
    *,
    window: int | None = None,
    drop_last: bool = False,
    prefetch: int = 0,
    pin_memory: bool = False,
) -> Iterator[Batch]:
    """Batches of ``batch_size`` windows, in order or shuffled (``generator``, else ``seed``).

    All batches share W = ``window`` (default: the longest window), so predictions can be
    stacked in window order for :func:`overlap_average`. Stream buffers are recycled through
    a :class:`BufferPool` (safe: only once nothing refers to them).

    ``prefetch`` > 0 builds up to that many batches ahead in a background thread (useful on
    a GPU, where assembly would otherwise sit between steps; the torch ops release the GIL).
    ``pin_memory`` (only with CUDA available; ignored otherwise) builds batches in page-locked
    memory so ``batch.to(device, non_blocking=True)`` really overlaps with compute.
    """
    if batch_size < 1:
        raise ValueError(f"iterate_batches: batch_size must be >= 1, got {batch_size}")
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    if windows.shape[0] == 0:
        return
    width = int(windows[:, 2].max()) if window is None else int(window)
    order = np.arange(windows.shape[0])
    if shuffle:
        rng = generator if generator is not None else np.random.default_rng(seed)
        order = rng.permutation(order)
    stop = (len(order) // batch_size) * batch_size if drop_last else len(order)
    pin = bool(pin_memory) and torch.cuda.is_available()
    pool = None if pin else BufferPool(slots=2 + max(0, prefetch))  # pinned memory has torch's own cache

    def produce() -> Iterator[Batch]:
        for a in range(0, stop, batch_size):
            rows = windows[order[a : a + batch_size]]
            yield build_batch(loaded, standardizer, rows, window=width, pool=pool, pin_memory=pin)

    if prefetch <= 0:
        yield from produce()
    else:
        yield from _in_background(produce(), prefetch)


_DONE = object()


def _in_background(items: Iterator[Any], depth: int) -> Iterator[Any]:
    """Run ``items`` in a daemon thread, at most ``depth`` ahead; errors re-raised here.

    Stopping early (``break`` in the consumer) stops the thread: the producer checks a flag
    between items and never blocks on a full queue for more than 0.1 s at a time.
    """
    queue: Queue[Any] = Queue(maxsize=depth)
    stopped = threading.Event()

    def run() -> None:
        try:
            for item in items:
                while not stopped.is_set():
                    try:
                        queue.put(item, timeout=0.1)
                        break
                    except Full:
                        continue
                if stopped.is_set():
                    return
            queue.put(_DONE)
        except BaseException as e:  # noqa: BLE001 - forwarded to the consumer, which re-raises it
            queue.put(e)

    thread = threading.Thread(target=run, name="vafusion-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stopped.set()
        while thread.is_alive():
            try:
                queue.get(timeout=0.1)  # unblock a producer waiting on a full queue
            except Empty:
                pass
            thread.join(timeout=0.1)


# ---------------------------------------------------------------------------------------
# From window predictions to scores
# ---------------------------------------------------------------------------------------


def overlap_average(predictions: Any, windows: np.ndarray, lengths: Sequence[int] | np.ndarray) -> list[np.ndarray]:
    """Per video, each frame's prediction = mean over the windows covering it.

    ``predictions`` (n_windows, W, C) (C = 2: valence, arousal) in the order of ``windows``
    rows; positions past a window's length (padding) are ignored. Returns one (T_i, C)
    float32 array per video of ``lengths``; a frame no window covers is NaN. One
    ``np.bincount`` per channel over absolute frame indices: no loop over windows.
    """
    if isinstance(predictions, Tensor):
        predictions = predictions.detach().to("cpu", torch.float32).numpy()
    predictions = np.asarray(predictions)
    windows = np.asarray(windows, dtype=np.int64).reshape(-1, 3)
    if predictions.ndim != 3 or predictions.shape[0] != windows.shape[0]:
        raise ValueError(f"overlap_average: predictions {predictions.shape} do not match {windows.shape[0]} windows")
    if windows.shape[0] and int(windows[:, 2].max()) > predictions.shape[1]:
        raise ValueError(
            f"overlap_average: predictions are {predictions.shape[1]} frames wide, "
            f"a window has {int(windows[:, 2].max())}"
        )
    lengths = np.asarray(lengths, dtype=np.int64)
    offsets = np.zeros(lengths.size + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    total = int(offsets[-1])
    idx, valid = frame_indices(offsets, windows, predictions.shape[1])
    frames = idx[valid]
    counts = np.bincount(frames, minlength=total).astype(np.float64)
    channels = predictions.shape[2]
    out = np.empty((total, channels), dtype=np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        for c in range(channels):
            sums = np.bincount(frames, weights=predictions[..., c][valid].astype(np.float64), minlength=total)
            out[:, c] = sums / counts  # 0/0 = NaN for uncovered frames
    return [out[offsets[i] : offsets[i + 1]] for i in range(lengths.size)]


def partition_score(
    loaded: LoadedCache,
    per_video_predictions: Sequence[np.ndarray] | Mapping[str, np.ndarray],
    ids: Sequence[str],
) -> dict[str, Any]:
    """CCC over all frames of ``ids`` concatenated (the challenge's way), plus per-id CCCs.

    ``per_video_predictions``: a mapping id -> (T, 2), or a sequence aligned with
    ``loaded.ids`` (what :func:`overlap_average` returns for ``loaded.lengths``). Frames count
    per dimension where that label is finite. Returns ``{"ccc_v", "ccc_a", "p", "per_id":
    [{"id", "ccc_v", "ccc_a", "p", "frames"}]}`` (``frames``: frames with any finite label).
    """

    def prediction(vid: str) -> np.ndarray:
        if isinstance(per_video_predictions, Mapping):
            pred = per_video_predictions[vid]
        else:
            pred = per_video_predictions[loaded.position(vid)]
        if isinstance(pred, Tensor):
            pred = pred.detach().cpu().numpy()
        pred = np.asarray(pred)
        t = int(loaded.index[vid].n_frames)
        if pred.shape != (t, 2):
            raise ValueError(f"partition_score: prediction for {vid!r} is {pred.shape}, expected ({t}, 2)")
        return pred

    preds, trues, per_id = [], [], []
    for vid in ids:
        pred = prediction(vid)
        true = loaded.labels[loaded.rows(vid)]
        preds.append(pred)
        trues.append(true)
        frames = int(np.isfinite(true).any(axis=1).sum())
        per_id.append({"id": vid, **score(pred[:, 0], true[:, 0], pred[:, 1], true[:, 1]), "frames": frames})
    if not preds:
        return {"ccc_v": 0.0, "ccc_a": 0.0, "p": 0.0, "per_id": per_id}
    pred_all, true_all = np.concatenate(preds), np.concatenate(trues)
    return {**score(pred_all[:, 0], true_all[:, 0], pred_all[:, 1], true_all[:, 1]), "per_id": per_id}


__all__ = [
    "Batch",
    "BufferPool",
    "LoadedCache",
    "Standardizer",
    "build_batch",
    "frame_indices",
    "iterate_batches",
    "load_cache",
    "make_windows",
    "overlap_average",
    "partition_score",
    "windows_with_labels",
]
