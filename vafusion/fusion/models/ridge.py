"""The reference baseline: a per-frame ridge regression on (optionally time-averaged) features.

Every fusion run is compared to it: if a TCN with attention cannot beat a linear map of
the same standardised features, something is wrong with the run, not with linearity.

Design matrix, one row per frame, for streams ``i = 0..n-1``::

    [ feat_0 (d_0) | feat_1 (d_1) | ... | presence_0 | presence_1 | ... ]

- ``feat_i`` are the stream's standardised features with absent frames set to exactly 0
  (whatever the caller passed there), so an absent modality contributes only through its
  presence column, which the ridge can weight on its own.
- With ``context = c > 1`` both are averaged over a centred window of ``c`` frames
  (``(c - 1) // 2`` frames before, ``c - 1 - (c - 1) // 2`` after; truncated at the video's
  ends): ``feat_i`` becomes the mean over the window's *present* frames (0 if none) and
  ``presence_i`` the fraction of the window's frames that are present. ``c = 1`` is the
  plain per-frame matrix. Computed per video with cumulative sums (float64, in column
  blocks to bound memory): :func:`vafusion.fusion.signal.context_average`.

Fitting: rows are the frames with at least one finite label; each dimension (valence,
arousal) is fitted on the rows where *its* label is finite (one 2-output fit when both are
finite everywhere, the usual case). At most ``max_frames`` rows are used, drawn uniformly
without replacement by a ``seed``-ed RNG *before* the matrix is built, so memory is
bounded by ``max_frames x width`` float32 (about 1.8 GB for 200k x 2240) plus at most one
more copy of that size during the fit.

Predictions are ``X @ coef_.T + intercept_`` clipped to [-1, 1]; the fitted state is plain
arrays and numbers (:meth:`RidgeBaseline.state_dict`), never a pickled estimator.

It is the built-in ``ridge`` of the model registry and the example of a model *fitted in
closed form*: not a ``torch.nn.Module`` but an object with ``fit`` / ``predict`` over whole
videos and a plain ``state_dict`` / ``load_state_dict``, which the trainer fits once instead
of taking gradient steps (see :mod:`vafusion.fusion.models`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from vafusion.errors import VafusionError
from vafusion.fusion.signal import context_average  # the centred window post-processing uses too

__all__ = ["RidgeBaseline", "context_average", "design_matrix"]

_PREDICT_ROWS = 32_768  # frames per design-matrix chunk when predicting: bounds memory on long videos


def design_matrix(
    features: Sequence[np.ndarray], present: Sequence[np.ndarray], context: int, rows: np.ndarray | None = None
) -> np.ndarray:
    """One video's ridge input ``(len(rows), sum(d_i) + n_streams)`` float32 (layout: module doc)."""
    means, fractions = zip(*(context_average(f, p, context, rows) for f, p in zip(features, present)))
    return np.concatenate([*means, np.stack(fractions, axis=1)], axis=1)


def _labelled_rows(
    features_per_video: Sequence[Sequence[np.ndarray]], labels_per_video: Sequence[np.ndarray]
) -> list[np.ndarray]:
    """Per video, the frame indices with at least one finite label (the rows a fit may use); labels
    of another length than the features mean an inconsistent cache, named before any fitting."""
    labelled = []
    for v, (feats, labels) in enumerate(zip(features_per_video, labels_per_video)):
        labels = np.asarray(labels)
        if labels.shape != (len(feats[0]), 2):
            raise VafusionError(
                f"ridge baseline: video {v} has labels of shape {labels.shape}, features of "
                f"{len(feats[0])} frames; the cache is inconsistent"
            )
        labelled.append(np.flatnonzero(np.isfinite(labels).any(axis=1)))
    return labelled


def _scalar(value: Any) -> float:
    return float(np.asarray(value).reshape(()))


class RidgeBaseline:
    """The reference baseline: a per-frame ridge regression, fitted in closed form."""

    option_help: ClassVar[dict[str, str]] = {
        "alpha": "L2 penalty of the ridge regression",
        "context": "frames averaged (centred, presence-aware) before the per-frame ridge; 1 = none",
        "max_frames": "labelled frames the ridge is fitted on at most (a seeded uniform subsample)",
    }
    option_space: ClassVar[dict[str, dict[str, Any]]] = {
        "alpha": {"low": 0.01, "high": 1000.0, "log": True},
        "context": {"choices": [1, 5, 13, 25, 51]},
    }

    def __init__(
        self, dims: Sequence[int], *, alpha: float = 10.0, context: int = 1, max_frames: int = 200_000
    ) -> None:
        self.dims = [int(d) for d in dims]
        self.alpha, self.context, self.max_frames = float(alpha), int(context), int(max_frames)
        if not self.dims or any(d < 1 for d in self.dims):
            raise ValueError(f"dims must be a non-empty list of positive widths, got {self.dims}")
        if self.alpha < 0 or self.context < 1 or self.max_frames < 1:
            raise ValueError(
                f"need alpha >= 0, context >= 1, max_frames >= 1, got alpha={self.alpha} "
                f"context={self.context} max_frames={self.max_frames}"
            )
        self.coef_: np.ndarray | None = None  # (2, width)
        self.intercept_: np.ndarray | None = None  # (2,)
        self.n_fit_frames = 0

    # ------------------------------------------------------------------ helpers
    def _check(
        self, features_per_video: Sequence[Sequence[np.ndarray]], present_per_video: Sequence[Sequence[np.ndarray]]
    ) -> None:
        if len(features_per_video) != len(present_per_video):
            raise ValueError(f"{len(features_per_video)} videos of features but {len(present_per_video)} of masks")
        for v, (feats, pres) in enumerate(zip(features_per_video, present_per_video)):
            dims = [int(np.shape(f)[1]) for f in feats]
            if dims != self.dims or len(pres) != len(feats):
                raise VafusionError(
                    f"ridge baseline: video {v} has streams of widths {dims} ({len(pres)} masks), "
                    f"expected {self.dims}; use the feature sets the baseline was fitted on"
                )
            lengths = {len(f) for f in feats} | {len(p) for p in pres}
            if len(lengths) != 1:
                raise VafusionError(
                    f"ridge baseline: video {v} has streams of different lengths {sorted(lengths)}; "
                    f"the cache is inconsistent"
                )

    # ------------------------------------------------------------------ fit / predict
    def fit(
        self,
        features_per_video: Sequence[Sequence[np.ndarray]],
        present_per_video: Sequence[Sequence[np.ndarray]],
        labels_per_video: Sequence[np.ndarray],
        *,
        seed: int = 0,
    ) -> RidgeBaseline:
        """Fit on the labelled frames (subsampled to ``max_frames`` by a ``seed``-ed RNG); returns ``self``."""
        if not features_per_video:
            raise VafusionError("ridge baseline: no training video; check the partition / fold selection")
        self._check(features_per_video, present_per_video)
        if len(labels_per_video) != len(features_per_video):
            raise ValueError(f"{len(features_per_video)} videos of features but {len(labels_per_video)} of labels")
        labelled = self._subsample(_labelled_rows(features_per_video, labels_per_video), seed)
        X, Y = self._design(features_per_video, present_per_video, labels_per_video, labelled)
        coef, intercept = self._solve(X, Y)  # X is centred in place there: only its length is used after
        self.coef_ = coef.astype(np.float32)
        self.intercept_ = intercept.astype(np.float32)
        self.n_fit_frames = len(X)
        return self

    def _subsample(self, labelled: list[np.ndarray], seed: int) -> list[np.ndarray]:
        """At most ``max_frames`` of the pooled labelled frames, drawn uniformly *before* any design row is
        built (memory stays bounded by ``max_frames``); per video, in frame order."""
        counts = np.array([len(r) for r in labelled], dtype=np.int64)
        total = int(counts.sum())
        if total == 0:
            raise VafusionError("ridge baseline: no labelled frame in the training partition; check the annotations")
        if total <= self.max_frames:
            return labelled
        pick = np.sort(np.random.default_rng(seed).choice(total, size=self.max_frames, replace=False))
        bounds = np.concatenate([[0], np.cumsum(counts)])
        cuts = np.searchsorted(pick, bounds)  # pick[cuts[v]:cuts[v+1]] fall in video v
        return [r[pick[c0:c1] - a] for r, a, c0, c1 in zip(labelled, bounds[:-1], cuts[:-1], cuts[1:])]

    def _design(
        self,
        features_per_video: Sequence[Sequence[np.ndarray]],
        present_per_video: Sequence[Sequence[np.ndarray]],
        labels_per_video: Sequence[np.ndarray],
        labelled: list[np.ndarray],
    ) -> tuple[np.ndarray, np.ndarray]:
        """``(X, Y)`` float32 of the chosen frames: X is the one full copy of the training data, filled
        video by video so no per-video matrix outlives its rows."""
        n = sum(len(r) for r in labelled)
        width = sum(self.dims) + len(self.dims)
        X = np.empty((n, width), dtype=np.float32)
        Y = np.empty((n, 2), dtype=np.float32)
        at = 0
        for feats, pres, labels, rows in zip(features_per_video, present_per_video, labels_per_video, labelled):
            if len(rows):
                X[at : at + len(rows)] = design_matrix(feats, pres, self.context, rows)
                Y[at : at + len(rows)] = np.asarray(labels)[rows]
                at += len(rows)
        return X, Y

    def _solve(self, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """float64 ``(coef (2, width), intercept (2,))``: one 2-output ridge when every label is finite (the
        usual case), else one fit per dimension on the rows where *its* label is finite."""
        from sklearn.linear_model import Ridge  # import here: predicting needs no scikit-learn

        finite = np.isfinite(Y)
        coef = np.zeros((2, X.shape[1]), dtype=np.float64)
        intercept = np.zeros(2, dtype=np.float64)
        if finite.all():
            # copy_X=False: scikit-learn centres X in place instead of copying it; X is not needed afterwards
            model = Ridge(alpha=self.alpha, copy_X=False).fit(X, Y)
            coef[:], intercept[:] = model.coef_, model.intercept_
            return coef, intercept
        for j in range(2):
            rows = finite[:, j]
            if not rows.any():
                name = ("valence", "arousal")[j]
                raise VafusionError(
                    f"ridge baseline: no finite {name} label in the training frames; check the annotations"
                )
            Xj = X[rows]  # the second copy, freed before the next dimension
            model = Ridge(alpha=self.alpha, copy_X=False).fit(Xj, Y[rows, j])
            coef[j], intercept[j] = model.coef_, model.intercept_
            del Xj
        return coef, intercept

    def predict(
        self, features_per_video: Sequence[Sequence[np.ndarray]], present_per_video: Sequence[Sequence[np.ndarray]]
    ) -> list[np.ndarray]:
        """One ``(T, 2)`` float32 array per video, valence and arousal clipped to [-1, 1]."""
        if self.coef_ is None or self.intercept_ is None:
            raise VafusionError("ridge baseline: predict before fit; fit it or load a fitted state")
        self._check(features_per_video, present_per_video)
        out = []
        for feats, pres in zip(features_per_video, present_per_video):
            T = len(feats[0])
            y = np.empty((T, 2), dtype=np.float32)
            for r0 in range(0, T, _PREDICT_ROWS):
                rows = np.arange(r0, min(r0 + _PREDICT_ROWS, T))
                y[rows] = design_matrix(feats, pres, self.context, rows) @ self.coef_.T + self.intercept_
            out.append(np.clip(y, -1.0, 1.0))
        return out

    # ------------------------------------------------------------------ state without pickle
    def state_dict(self) -> dict[str, np.ndarray | float]:
        """Plain arrays and numbers: storable with ``np.savez`` or (as tensors) in a torch checkpoint."""
        if self.coef_ is None or self.intercept_ is None:
            raise VafusionError("ridge baseline: nothing to save before fit")
        return {
            "coef_": self.coef_.copy(),
            "intercept_": self.intercept_.copy(),
            "alpha": self.alpha,
            "context": float(self.context),
            "dims": np.asarray(self.dims, dtype=np.int64),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Inverse of :meth:`state_dict`; values may be numpy arrays, torch tensors or numbers."""
        missing = {"coef_", "intercept_", "alpha", "context", "dims"} - set(state)
        if missing:
            raise VafusionError(
                f"ridge baseline state lacks {sorted(missing)}; the run directory is damaged or from another version"
            )
        dims = [int(d) for d in np.asarray(state["dims"]).reshape(-1)]
        coef = np.asarray(state["coef_"], dtype=np.float32)
        width = sum(dims) + len(dims)
        if dims != self.dims or coef.shape != (2, width):
            raise VafusionError(
                f"ridge baseline state: dims {dims} and coef_ {coef.shape} do not fit a ridge for dims {self.dims} "
                f"(coef_ (2, {sum(self.dims) + len(self.dims)})); the run directory is damaged"
            )
        self.alpha, self.context = _scalar(state["alpha"]), int(round(_scalar(state["context"])))
        self.coef_ = coef.copy()
        self.intercept_ = np.asarray(state["intercept_"], dtype=np.float32).reshape(2).copy()
