"""What both passes share about feeding a backbone: decoding workers and fixed batch shapes."""

from __future__ import annotations

import os

import torch


def worker_init(_: int) -> None:
    """Decoder workers need one thread each: the backbone in the main process wants the cores."""
    torch.set_num_threads(1)


def default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def pad_batch(x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Pad a short (last) batch to the full size by repeating its last row.

    Why: kernels may pick other algorithms for other batch shapes, which changes the last bits
    of the results; with one shape, a video's rows do not depend on which other videos shared
    its batches, so a resumed run writes exactly what a clean run writes.
    """
    if len(x) == batch_size:
        return x
    return torch.cat([x, x[-1:].expand(batch_size - len(x), *x.shape[1:])])
