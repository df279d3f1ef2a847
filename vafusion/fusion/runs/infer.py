"""A model applied to a loaded cache: per-frame predictions of some ids, as training validates and predict predicts.

Why in the runs room: training scores its validation ids with exactly the code that later
predicts the test ids (windows overlap-averaged per frame, the challenge's way), so both sides
import this one module, and the prediction room sits above the runs it reads.
A model fitted in closed form (the ridge) sees each whole video instead of windows, through the
same :func:`~vafusion.fusion.data.batches.build_batch`, so it sees exactly the features a
windowed model sees.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from vafusion.device import autocast, trim_heap
from vafusion.fusion.data.batches import build_batch, iterate_batches
from vafusion.fusion.data.loading import LoadedCache
from vafusion.fusion.data.standardize import Standardizer
from vafusion.fusion.data.windows import overlap_average, phase_windows
from vafusion.fusion.models import contract, is_closed_form
from vafusion.fusion.runs.config import FusionConfig


class _StreamsOnDemand:
    """The standardised streams and presence masks of each id, built when asked for.

    Why not a list: a model fitted in closed form (the ridge baseline) walks the videos a few times (checks,
    labels, design
    rows), and holding every video's float32 streams at once would be ~4 bytes x dims per
    frame (~18 GB at Aff-Wild2 scale) where it only keeps ``max_frames`` rows. The last
    video built is kept, so the ``zip(features, present)`` walks build each video once.
    """

    def __init__(self, loaded: LoadedCache, standardizer: Standardizer, ids: Sequence[str]) -> None:
        self.loaded, self.standardizer, self.ids = loaded, standardizer, list(ids)
        self._last: tuple[int, tuple[list[np.ndarray], list[np.ndarray]]] | None = None

    def video(self, i: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        if self._last is None or self._last[0] != i:
            pos = self.loaded.position(self.ids[i])
            t = int(self.loaded.lengths[pos])
            batch = build_batch(self.loaded, self.standardizer, np.array([[pos, 0, t]]), window=max(t, 1))
            self._last = (i, ([s[0, :t].numpy() for s in batch.streams], [p[0, :t].numpy() for p in batch.present]))
        return self._last[1]


class _StreamsView(Sequence):
    """One side (0: features, 1: presence) of a :class:`_StreamsOnDemand`, as a sequence of videos."""

    def __init__(self, source: _StreamsOnDemand, side: int) -> None:
        self.source, self.side = source, side

    def __len__(self) -> int:
        return len(self.source.ids)

    def __getitem__(self, i: int) -> list[np.ndarray]:  # type: ignore[override]  # no slices: read one by one
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source.video(i)[self.side]


def video_streams(loaded: LoadedCache, standardizer: Standardizer, ids: Sequence[str]) -> tuple[Sequence, Sequence]:
    """Per id: the standardised streams and presence masks of the whole video (numpy), built on access.

    One window spanning the video, through the same :func:`build_batch` the trainer uses, so
    a model fitted in closed form sees exactly the features a windowed model sees.
    """
    source = _StreamsOnDemand(loaded, standardizer, ids)
    return _StreamsView(source, 0), _StreamsView(source, 1)


def predict_loaded(
    model: Any,
    config: FusionConfig,
    standardizer: Standardizer,
    loaded: LoadedCache,
    ids: Sequence[str],
    device: torch.device | None = None,
    batch_size: int | None = None,
) -> dict[str, np.ndarray]:
    """``{id: (T, 2) float32}`` predictions in [-1, 1] for ``ids`` of ``loaded``.

    A module predicts windows of ``config.data`` (overlap-averaged per frame; with a stride
    (``config.training.stride``), the windows of every phase, so each frame is predicted from its own
    phase's windows); a model fitted in closed form predicts each whole video.
    """
    name = config.model.name
    if is_closed_form(model):
        feats, present = video_streams(loaded, standardizer, ids)
        said = contract.guarded(name, "predict", model.predict, feats, present)
        whole = contract.predictions(name, said, [int(loaded.lengths[loaded.position(v)]) for v in ids])
        return {vid: np.clip(p, -1.0, 1.0) for vid, p in zip(ids, whole)}
    data = config.data
    device = device or torch.device("cpu")
    stride = config.training.stride
    windows = phase_windows(loaded.offsets, data.window, data.hop, loaded.positions(ids), stride)
    width = int(windows[:, 2].max()) if len(windows) else data.window
    outputs = []
    was_training = model.training
    model.eval()
    with torch.inference_mode():
        on_gpu = device.type == "cuda"
        for batch in iterate_batches(
            loaded,
            standardizer,
            windows,
            batch_size or config.training.batch_size,
            window=width,
            prefetch=int(on_gpu),
            pin_memory=on_gpu,
            stride=stride,
        ):
            batch = batch.to(device, non_blocking=True)
            with autocast(device, config.training.amp):
                out = contract.forward(name, model, batch.streams, batch.present, batch.valid)
            outputs.append(out.float().cpu())
            trim_heap()
    model.train(was_training)
    preds = torch.cat(outputs) if outputs else torch.zeros(0, width, 2)
    per_video = overlap_average(preds, windows, loaded.lengths, stride)
    return {vid: np.clip(per_video[loaded.position(vid)], -1.0, 1.0) for vid in ids}


__all__ = ["predict_loaded", "video_streams"]
