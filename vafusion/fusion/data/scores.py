"""Per-frame predictions of a partition scored the challenge's way: CCC over all its frames pooled.

Why pooled: the ABAW challenge computes one CCC over every frame of the test set, not a mean
of per-video CCCs; per-id scores come along for the report's table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from torch import Tensor

from vafusion.fusion.data.loading import LoadedCache
from vafusion.fusion.metrics import score


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


__all__ = ["partition_score"]
