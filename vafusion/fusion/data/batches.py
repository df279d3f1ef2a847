"""Windows gathered into standardised float32 batches, recycled, optionally built ahead in a thread.

Why: ``build_batch`` copies each window's contiguous float16 rows straight into a (B, W, d)
float32 output (conversion on the fly), so only the rows of the batch are ever converted;
masks and labels are gathered through absolute frame indices
(:func:`~vafusion.fusion.data.windows.frame_indices`, clipped, with a validity mask).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass
from queue import Empty, Full, Queue
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vafusion.fusion.data.loading import LoadedCache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import frame_indices


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
    stride: int = 1,
) -> Batch:
    """Gather windows into a standardised float32 batch (frame ``j`` of a window: ``start + j * stride``).

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
    idx_np, valid_np = frame_indices(loaded.offsets, rows, width, stride)
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
        source.copy_windows(out, first, length, stride)
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
    stride: int = 1,
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
            yield build_batch(loaded, standardizer, rows, window=width, pool=pool, pin_memory=pin, stride=stride)

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


__all__ = ["Batch", "BufferPool", "build_batch", "iterate_batches"]
