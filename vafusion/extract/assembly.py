"""Per-video assembly of extractor rows, handed whole to a writer thread.

Both passes produce rows out of video order (frame batches span videos; track rows may
arrive batch by batch); an :class:`Assembler` collects them per video and submits each
finished video to the writer thread, so HDF5 writes never block compute. Each video is
written as its own part file (see :mod:`vafusion.cache.writer`), which is what makes a
kill -9 cost only the videos in flight.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vafusion.cache.writer import FeatureWriter


@dataclass
class Failure:
    """What failed: one video of a feature, or (``video_id`` None) the whole feature."""

    video_id: str | None
    feature: str
    reason: str

    def __str__(self) -> str:
        return (
            f"{self.video_id} [{self.feature}]: {self.reason}" if self.video_id else f"[{self.feature}]: {self.reason}"
        )


FLOAT16_ZERO = float(np.finfo(np.float16).smallest_subnormal) / 2
"""Magnitudes below this are stored as 0 by a float16 cache (the rounding of half the smallest subnormal)."""

UNDERFLOW_SHARE = 0.01
"""Warn when at least this share of a feature's present rows is stored as all zeros by float16."""


@dataclass
class Outcome:
    """One feature's result in a pass: videos written, failures, and whether it stopped early.

    ``vanished``: present rows with values, every one of them too small for float16 (stored as
    zeros, the mask saying present), of ``present`` rows; ``largest``: the largest such value.
    """

    written: int
    failures: list[Failure]
    aborted: bool
    present: int = 0
    vanished: int = 0
    largest: float = 0.0

    def underflow(self, feature: str) -> str | None:
        """A warning when the cache's float16 turns too many present rows into zeros, else None."""
        if not self.vanished or self.vanished < UNDERFLOW_SHARE * self.present:
            return None
        return (
            f"{feature}: {self.vanished} of {self.present} present rows are stored as zeros with the mask saying "
            f"present: every value is below {FLOAT16_ZERO:.1e} in magnitude (the largest {self.largest:.1e}), which "
            f"float16, the cache's type, rounds to 0; scale the extractor's output, then extract again with --overwrite"
        )


class Assembler:
    """Collects one feature's rows per video and hands whole videos to the writer thread."""

    def __init__(self, writer: FeatureWriter, pool: ThreadPoolExecutor, on_done: Callable[[str], None]):
        self.writer = writer
        self.pool = pool
        self.on_done = on_done
        self.rows: dict[str, np.ndarray] = {}
        self.mask: dict[str, np.ndarray] = {}
        self.remaining: dict[str, int] = {}
        self.failed: dict[str, str] = {}
        self.futures: list[tuple[str, Future]] = []
        self.copies: dict[str, list[str]] = {}  # video id -> ids that get exactly its rows
        self.aborted: str | None = None  # why the whole feature stopped
        self.present = self.vanished = 0  # present rows written; those float16 turns into zeros (Outcome)
        self.largest = 0.0

    def open_copy(self, video_id: str, of: str) -> bool:
        """Let ``video_id`` receive the rows of ``of`` (still being assembled), computing nothing.

        For the ``_left``/``_right`` ids of one video: same track, same frame grid, same rows.
        False when ``of`` is no longer in progress (the caller then computes the rows).
        """
        if of not in self.rows:
            return False
        self.copies.setdefault(of, []).append(video_id)
        return True

    def open(self, video_id: str, n_frames: int, mask: np.ndarray, n_rows: int) -> None:
        """Start a video with ``n_rows`` rows still to come; zero rows where ``mask`` is False."""
        self.rows[video_id] = np.zeros((n_frames, self.writer.dim), np.float32)
        self.mask[video_id] = mask
        self.remaining[video_id] = n_rows
        if n_rows == 0:
            self._finish(video_id)

    def put(self, video_id: str, row_index: np.ndarray, values: np.ndarray | None) -> None:
        """Rows of ``video_id``; ``values`` None: those rows have no usable input after all (zero, mask False)."""
        if video_id in self.failed or video_id not in self.rows:
            return
        if values is None:
            self.mask[video_id][row_index] = False
        else:
            self.rows[video_id][row_index] = values
        self.remaining[video_id] -= len(row_index)
        if self.remaining[video_id] == 0:
            self._finish(video_id)

    def fail(self, video_id: str, reason: str) -> None:
        if video_id in self.failed:
            return
        self.failed[video_id] = reason
        self.on_done(video_id)
        self.rows.pop(video_id, None)
        self.mask.pop(video_id, None)
        self.remaining.pop(video_id, None)
        for copy in self.copies.pop(video_id, []):
            self.fail(copy, reason)

    def abort(self, reason: str) -> None:
        """The extractor broke: drop every video in progress; finished ones stay written (for a resume)."""
        self.aborted = reason
        for video_id in list(self.rows):
            for vid in [video_id, *self.copies.pop(video_id, [])]:
                self.on_done(vid)
        self.rows.clear()
        self.mask.clear()
        self.remaining.clear()

    def _finish(self, video_id: str) -> None:
        feats = self.rows.pop(video_id)
        mask = self.mask.pop(video_id)
        del self.remaining[video_id]
        self._count_underflow(feats[mask], 1 + len(self.copies.get(video_id, [])))
        for vid in [video_id, *self.copies.pop(video_id, [])]:
            self.futures.append((vid, self.pool.submit(self.writer.write, vid, feats, mask)))
            self.on_done(vid)

    def _count_underflow(self, present: np.ndarray, times: int) -> None:
        peak = np.abs(present).max(axis=1, initial=0.0)
        gone = (peak > 0) & (peak <= FLOAT16_ZERO)
        self.present += times * len(present)
        self.vanished += times * int(gone.sum())
        if gone.any():
            self.largest = max(self.largest, float(peak[gone].max()))

    def wait(self) -> Outcome:
        """Wait for pending writes; a failed write is a failure of that video, not of the run."""
        failures = [Failure(v, self.writer.feature, r) for v, r in self.failed.items()]
        written = 0
        for video_id, fut in self.futures:
            try:
                fut.result()
                written += 1
            except (OSError, ValueError) as e:
                failures.append(Failure(video_id, self.writer.feature, f"write failed: {e}"))
        self.futures.clear()
        if self.aborted:
            failures.append(Failure(None, self.writer.feature, self.aborted))
        return Outcome(written, failures, self.aborted is not None, self.present, self.vanished, self.largest)
