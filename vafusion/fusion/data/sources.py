"""Where the feature rows of a loaded cache live: in RAM, or in the cache files (streamed).

Why two: loading everything into RAM is the fastest way to train when the cache fits, but a
laptop with 8-16 GB cannot hold an Aff-Wild2 cache (11.7 GiB of float16 features). A
streamed feature keeps nothing of the features in the process: each video's uncompressed,
contiguous dataset is a read-only view of the file's pages (``FeatureFile.map_features``), so
the OS page cache does the caching and the process's anonymous memory does not grow with the
cache; compressed or chunked datasets are read per window through HDF5. Both give the same
float16 rows, so batches are bit-identical whichever is used.

Rows are addressed as in :class:`~vafusion.fusion.data.loading.LoadedCache`: video ``i`` owns the
absolute rows ``offsets[i]:offsets[i + 1]``.

Which one :func:`~vafusion.fusion.data.loading.load_cache` uses: ``stream=True``/``False``, else the
choice set by :func:`loading` (the CLI's ``--stream``/``--in-memory``), else
:func:`stream_by_default`: streamed when the features to load take more than half of the
memory available now.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor

from vafusion.cache.reader import FeatureFile
from vafusion.errors import VafusionError
from vafusion.runtime import STREAM

CHECK_CHUNK = 1 << 16  # float16 values per step of the non-finite scan (fits in L2)
_F16_EXP = 0x7C00  # float16 exponent bits: all set <=> inf or NaN
MEMORY_SHARE = 0.5
"""Features taking more than this share of MemAvailable are streamed by default."""


def find_nonfinite(block: np.ndarray, scratch: np.ndarray | None = None) -> bool:
    """True if a float16 block holds inf or NaN.

    Bit test on the uint16 view, in L2-sized steps: ~8 GB/s on the benchmark machine, about
    5x ``np.isfinite`` on float16, which would also allocate a bool array as large as the
    block/2 (one-off measurements, not in benchmarks/).
    ``scratch``: a reusable uint16 buffer of ``CHECK_CHUNK`` values (one per thread).
    """
    flat = block.reshape(-1).view(np.uint16)
    if scratch is None:
        scratch = np.empty(min(CHECK_CHUNK, flat.size), dtype=np.uint16)
    for a in range(0, flat.size, CHECK_CHUNK):
        part = flat[a : a + CHECK_CHUNK]
        out = scratch[: part.size]
        np.bitwise_and(part, _F16_EXP, out=out)
        if out.max() == _F16_EXP:
            return True
    return False


def nonfinite_error(ff: FeatureFile, video_id: str) -> VafusionError:
    return VafusionError(
        f"{ff.path}: non-finite (inf/NaN) {ff.feature} values in video {video_id!r}; "
        f"the file is damaged or was not written by vafusion: re-extract {ff.feature}"
    )


def as_tensor(rows: np.ndarray) -> Tensor:
    """``torch.from_numpy`` that also takes the read-only views of mapped files, silently (nothing writes to them)."""
    if rows.flags.writeable:
        return torch.from_numpy(rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.from_numpy(rows)


class FeatureSource(ABC):
    """The float16 rows of one feature set over the loaded ids."""

    feature: str
    dim: int
    in_memory: bool

    @abstractmethod
    def rows(self, a: int, b: int) -> np.ndarray:
        """Absolute rows ``a:b`` as a ``(b - a, dim)`` float16 array (a view where possible; read-only)."""

    @abstractmethod
    def copy_windows(self, out: Tensor, first: Sequence[int], length: Sequence[int], stride: int = 1) -> None:
        """``out[j, :length[j]] = rows(first[j], first[j] + span)[::stride]`` converted to float32, where
        ``span = (length[j] - 1) * stride + 1`` (``stride`` 1: the contiguous rows).

        Each window lies inside one video (windows never cross videos).
        """

    def close(self) -> None:  # noqa: B027 - an optional hook, not abstract
        """Release files (nothing for data in RAM)."""


class InMemoryFeature(FeatureSource):
    """One contiguous ``(sum T, dim)`` float16 block in RAM."""

    in_memory = True

    def __init__(self, feature: str, block: np.ndarray) -> None:
        self.feature, self.block, self.dim = feature, block, int(block.shape[1])
        with torch.inference_mode(False):  # usable for training even if made under inference_mode
            self._tensor = torch.from_numpy(block)

    def rows(self, a: int, b: int) -> np.ndarray:
        return self.block[a:b]

    def copy_windows(self, out: Tensor, first: Sequence[int], length: Sequence[int], stride: int = 1) -> None:
        block = self._tensor
        for j, (a, n) in enumerate(zip(first, length)):
            out[j, :n].copy_(block[a : a + (n - 1) * stride + 1 : stride])  # one conversion per window


class StreamedFeature(FeatureSource):
    """A feature file's videos read where they lie: mapped views, or per-window HDF5 reads.

    Each video is checked the first time any of its rows is used: no inf/NaN (the same error
    as a load into RAM gives) and, with ``verify``, its stored checksums. Before every read the
    file (and its shards) must be the one opened (:meth:`FeatureFile.require_unchanged`): same
    inode, size and modification time. The file stays open until :meth:`close` (or garbage
    collection); mapped views outlive it.
    """

    in_memory = False

    def __init__(
        self, ff: FeatureFile, ids: Sequence[str], offsets: np.ndarray, masks: np.ndarray, verify: bool = False
    ) -> None:
        self.ff, self.ids, self.offsets, self.masks, self.verify = ff, list(ids), offsets, masks, verify
        self.feature, self.dim = ff.feature, ff.dim
        self._views = [ff.map_features(vid) for vid in self.ids]
        self._tensors: list[Tensor | None] = [None] * len(self.ids)
        self._checked = np.zeros(len(self.ids), dtype=bool)

    @property
    def mapped(self) -> int:
        """How many videos are read through a mapped view (the others through HDF5)."""
        return sum(v is not None for v in self._views)

    def _check(self, i: int) -> None:
        if self._checked[i]:
            return
        vid = self.ids[i]
        view = self._views[i]
        data = view if view is not None else self.ff.read_rows(vid, 0, int(self.offsets[i + 1] - self.offsets[i]))
        if find_nonfinite(data):
            raise nonfinite_error(self.ff, vid)
        if self.verify:
            self.ff.verify_checksums(vid, np.asarray(data), self.masks[self.offsets[i] : self.offsets[i + 1]])
        self._checked[i] = True

    def _pieces(self, a: int, b: int) -> Iterator[tuple[int, int, int]]:
        """``(video, start, stop)`` in video coordinates covering absolute rows ``a:b``."""
        i = int(np.searchsorted(self.offsets, a, side="right")) - 1
        while a < b:
            base, end = int(self.offsets[i]), int(self.offsets[i + 1])
            stop = min(b, end)
            if stop > a:
                yield i, a - base, stop - base
            a, i = max(a, stop), i + 1

    def _video_rows(self, i: int, start: int, stop: int) -> np.ndarray:
        self._check(i)
        view = self._views[i]
        return view[start:stop] if view is not None else self.ff.read_rows(self.ids[i], start, stop)

    def rows(self, a: int, b: int) -> np.ndarray:
        self.ff.require_unchanged()
        parts = [self._video_rows(*p) for p in self._pieces(a, b)]
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros((0, self.dim), dtype=np.float16)

    def _tensor(self, i: int) -> Tensor | None:
        """A torch view of video ``i``'s mapped rows (made once; None for HDF5-read videos)."""
        found, view = self._tensors[i], self._views[i]
        if found is None and view is not None:
            with torch.inference_mode(False):
                found = self._tensors[i] = as_tensor(view)
        return found

    def copy_windows(self, out: Tensor, first: Sequence[int], length: Sequence[int], stride: int = 1) -> None:
        self.ff.require_unchanged()  # a changed file: one line naming it, never other rows or a SIGBUS
        for j, (a, n) in enumerate(zip(first, length)):
            for i, start, stop in self._pieces(a, a + (n - 1) * stride + 1):  # one piece: one video
                self._check(i)
                source = self._tensor(i)
                if source is None:
                    source = torch.from_numpy(self.ff.read_rows(self.ids[i], start, stop))
                    start, stop = 0, stop - start
                out[j, :n].copy_(source[start:stop:stride])

    def close(self) -> None:
        self.ff.close()


# ---------------------------------------------------------------------------------------
# Which one: explicit, the block's choice (the CLI's --stream/--in-memory), or by available memory
# ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def loading(stream: bool | None) -> Iterator[None]:
    """Within the block, caches load streamed (True), into RAM (False) or by the default rule (None).

    For callers of :func:`~vafusion.fusion.runs.train.train`, ``predict`` and the like, which load
    caches deep inside; :func:`~vafusion.fusion.data.loading.load_cache` takes ``stream=`` directly.
    The choice is the context variable :data:`vafusion.runtime.STREAM`: scoped to the block and its
    thread, and handed to worker processes with the other runtime settings.
    """
    token = STREAM.set(stream)
    try:
        yield
    finally:
        STREAM.reset(token)


def loading_choice() -> bool | None:
    """The choice :func:`loading` set here (None: the default rule)."""
    return STREAM.get()


def available_memory() -> int | None:
    """Bytes of memory available now without swapping (``MemAvailable``), or None if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def stream_by_default(feature_bytes: int) -> bool:
    """The default rule: stream when the features take more than ``MEMORY_SHARE`` of the memory available now."""
    available = available_memory()
    return available is not None and feature_bytes > MEMORY_SHARE * available


def choose_stream(stream: bool | None, feature_bytes: int) -> bool:
    """``stream`` if given, else the choice of :func:`loading` in force, else :func:`stream_by_default`."""
    if stream is None:
        stream = STREAM.get()
    return stream_by_default(feature_bytes) if stream is None else bool(stream)


__all__ = [
    "MEMORY_SHARE",
    "FeatureSource",
    "InMemoryFeature",
    "StreamedFeature",
    "as_tensor",
    "available_memory",
    "choose_stream",
    "find_nonfinite",
    "loading",
    "loading_choice",
    "stream_by_default",
]
