"""Choosing the post-processing of each dimension on out-of-fold predictions, honestly.

Input: the out-of-fold (OOF) predictions of ``vafusion cv`` (:mod:`vafusion.fusion.post.oof`):
every labelled train/validation id predicted by the fold that validated it (the mean of
that fold's seeds), i.e. by models that never trained on it. Test ids are never part of it.

Candidates, per dimension (valence and arousal separately): no smoothing, or a centred
``mean`` or ``median`` over each window of :data:`WINDOWS_S` seconds; combined with each
shift of :data:`SHIFTS_S` (-1 s to +1 s in steps of 1/30 s; see
:mod:`vafusion.fusion.post.apply` for what the numbers mean). A candidate is scored by CCC
over all labelled OOF frames pooled, the challenge's way.

The procedure, and why it is honest:

- **Choice for the test set** (``post.json``): the candidate with the best pooled CCC over
  all folds' OOF frames.
- **Gain reported** (nested leave-one-fold-out): for each fold k, the candidate is chosen on
  the other folds' OOF frames only and applied to fold k's; the CCC pooled over all folds of
  these predictions, minus the CCC without post-processing, is the gain one can expect on
  unseen videos: no frame influences the choice that scores it. The in-sample gain (choice
  and score on the same frames) is reported too, and is optimistic.
- **Applied only where the nested gain is positive**: a dimension whose nested gain is not
  positive is left as predicted (``applied: false`` in ``post.json``).

Two caveats. Each run's best epoch was chosen on its own validation frames, so OOF scores
are slightly optimistic about the model itself (equally for every candidate). And the test
predictions average every fold's runs, a larger ensemble than one fold's seeds and so a
little smoother already: the chosen window may be slightly longer than the test set's best.

CCC is computed from per-fold sums (n, Σp, Σp², Σpt, Σt, Σt²), so one pass over the frames
per candidate serves the full-data choice and every nested choice.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from tqdm import tqdm

from vafusion.errors import VafusionError
from vafusion.fusion.post.apply import DIMENSIONS, DimPost, Post, smooth
from vafusion.fusion.post.oof import RunPredictions

WINDOWS_S = (0.1, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
SHIFT_STEP_S = 1 / 30
MAX_SHIFT_S = 1.0
_STEPS = int(round(MAX_SHIFT_S / SHIFT_STEP_S))
# 0 first, then +-1, +-2 ... steps: at equal scores the smaller shift wins (argmax keeps the first)
SHIFTS_S = tuple(s * k * SHIFT_STEP_S for k in range(_STEPS + 1) for s in ((1,) if k == 0 else (1, -1)))
# no smoothing first: at equal scores it wins
SMOOTHINGS = (("mean", 0.0), *tuple((m, w) for w in WINDOWS_S for m in ("mean", "median")))


@dataclass
class _Video:
    """One video's OOF frames of one dimension."""

    pred: np.ndarray  # (T,) float32 predictions
    mask: np.ndarray  # (T,) float64: 1 where labelled
    target: np.ndarray  # (T,) float64: the label where labelled, else 0
    fps: float
    fold: int  # position of its fold among the folds


def _videos(per_fold: Mapping[int, RunPredictions], dim: int) -> list[_Video]:
    """The videos with at least one label in ``dim``, each tagged with its fold's position."""
    out = []
    for f, fold in enumerate(sorted(per_fold)):
        run = per_fold[fold]
        for pred, lab, rate in zip(run.predictions, run.labels, run.fps):
            labelled = np.isfinite(lab[:, dim])
            if labelled.any():
                out.append(
                    _Video(
                        np.asarray(pred[:, dim], dtype=np.float32),
                        labelled.astype(np.float64),
                        np.where(labelled, lab[:, dim], 0.0).astype(np.float64),
                        float(rate),
                        f,
                    )
                )
    return out


def _label_sums(videos: list[_Video], n_folds: int) -> np.ndarray:
    """``(F, 3)``: per fold n, Σt, Σt² over its labelled frames."""
    out = np.zeros((n_folds, 3))
    for v in videos:
        out[v.fold] += v.mask.sum(), v.target.sum(), v.target @ v.target
    return out


def _sums(videos: list[_Video], n_folds: int) -> np.ndarray:
    """``(J, H, F, 3)``: per smoothing j, shift h and fold f, Σp, Σp², Σpt over the fold's labelled frames.

    Per video, the sums for every shift at once are correlations of the edge-padded smoothed
    predictions with the label mask and the labels (a shift of k frames is lag k), so the cost
    is one smoothing plus three correlations per video and smoothing, not one pass per shift.
    """
    out = np.zeros((len(SMOOTHINGS), len(SHIFTS_S), n_folds, 3))
    shifts = np.array(SHIFTS_S)
    for j, (method, window) in enumerate(
        tqdm(
            SMOOTHINGS,
            desc="post-processing",
            unit="smoothing",
            leave=False,
            disable=None if sum(len(v.pred) for v in videos) > 500_000 else True,
        )
    ):
        for v in videos:
            pad = int(np.ceil(MAX_SHIFT_S * v.fps)) + 1  # >= every |shift| in frames at this fps
            lags = pad - np.rint(shifts * v.fps).astype(np.int64)  # correlation index of each shift
            p = np.pad(
                smooth(v.pred, DimPost(method, window).frames(v.fps)[0], method).astype(np.float64), pad, mode="edge"
            )
            # np.correlate(p, w, "valid")[n] = sum_t p[n + t] w[t]; predictions delayed by k: p[t - k + pad]
            stats = np.stack(
                [
                    np.correlate(p, v.mask, "valid"),
                    np.correlate(p * p, v.mask, "valid"),
                    np.correlate(p, v.target, "valid"),
                ],
                axis=-1,
            )
            out[j, :, v.fold] += stats[lags]
    return out


def _ccc(
    n: np.ndarray, sp: np.ndarray, spp: np.ndarray, spt: np.ndarray, st: np.ndarray, stt: np.ndarray
) -> np.ndarray:
    """CCC with population moments from sums (broadcasting); 0 where undefined, as :func:`metrics.ccc`."""
    n = np.asarray(n, dtype=np.float64)
    safe = np.where(n > 0, n, 1.0)
    mp, mt = sp / safe, st / safe
    denom = (spp / safe - mp**2) + (stt / safe - mt**2) + (mp - mt) ** 2
    ok = (n > 0) & (denom > 0)
    return np.where(ok, 2.0 * (spt / safe - mp * mt) / np.where(ok, denom, 1.0), 0.0)


def _choose(scores: np.ndarray) -> tuple[int, int]:
    """(smoothing, shift) of the best score; the first in candidate order at a tie."""
    j, h = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return int(j), int(h)


def _candidate(j: int, h: int) -> DimPost:
    method, window = SMOOTHINGS[j]
    return DimPost(method, window, round(SHIFTS_S[h], 6))


@dataclass
class DimensionFit:
    """One dimension's result: the choice, whether it is applied, the CCCs behind it, the CCC-by-shift curves."""

    best: DimPost  # the candidate with the best pooled OOF CCC (the choice for the test set)
    applied: bool  # the nested gain is positive
    scores: dict[str, Any]  # frames, ccc_before, ccc_in_sample, ccc_nested, gain_in_sample, gain_nested, per_fold
    curves: dict[str, np.ndarray]  # CCC over SHIFTS_S (sorted by seconds: "shift_s") for "none" and "best"


def _fit_dimension(videos: list[_Video], folds: list[int]) -> DimensionFit:
    sums, label_sums = _sums(videos, len(folds)), _label_sums(videos, len(folds))  # (J, H, F, 3), (F, 3)

    def ccc(p_sums: np.ndarray, t_sums: np.ndarray) -> np.ndarray:
        return _ccc(t_sums[0], p_sums[..., 0], p_sums[..., 1], p_sums[..., 2], t_sums[1], t_sums[2])

    total, total_labels = sums.sum(axis=2), label_sums.sum(axis=0)
    grid = ccc(total, total_labels)  # (J, H): pooled CCC of every candidate over all folds
    best = _choose(grid)
    nested_sums, per_fold = np.zeros(3), []
    for f, fold in enumerate(folds):
        jf, hf = _choose(ccc(total - sums[:, :, f], total_labels - label_sums[f]))  # fold f's frames unseen
        nested_sums += sums[jf, hf, f]
        choice = _candidate(jf, hf)
        per_fold.append(
            {
                "fold": fold,
                "method": choice.method,
                "window_s": choice.window_s,
                "shift_s": choice.shift_s,
                "ccc_before": float(ccc(sums[0, 0, f], label_sums[f])),
                "ccc_after": float(ccc(sums[jf, hf, f], label_sums[f])),
            }
        )
    before, in_sample, nested = float(grid[0, 0]), float(grid[best]), float(ccc(nested_sums, total_labels))
    scores = {
        "frames": int(total_labels[0]),
        "ccc_before": before,
        "ccc_in_sample": in_sample,
        "ccc_nested": nested,
        "gain_in_sample": in_sample - before,
        "gain_nested": nested - before,
        "per_fold": per_fold,
    }
    order = np.argsort(SHIFTS_S)
    curves = {"shift_s": np.array(SHIFTS_S)[order], "none": grid[0, order], "best": grid[best[0], order]}
    return DimensionFit(_candidate(*best), nested > before, scores, curves)


@dataclass
class PostFit:
    """The post-processing ``predict`` applies, and how it was chosen (see the module docstring)."""

    post: Post  # the best candidate of each dimension where applied, else none
    dimensions: dict[str, DimensionFit]
    folds: list[int]
    ids: int

    def details(self) -> dict[str, Any]:
        """What ``post.json`` and ``cv.json`` record besides the choice."""
        per_dim = {
            name: {
                "best": {"method": d.best.method, "window_s": d.best.window_s, "shift_s": d.best.shift_s},
                "applied": d.applied,
                **d.scores,
            }
            for name, d in self.dimensions.items()
        }
        grid = {
            "methods": ["mean", "median"],
            "windows_s": list(WINDOWS_S),
            "shift_step_s": SHIFT_STEP_S,
            "max_shift_s": MAX_SHIFT_S,
        }
        procedure = (
            "per dimension, the smoothing and shift with the best CCC over all out-of-fold frames pooled; "
            "gain_nested: each fold scored with the choice made on the other folds; applied only where "
            "gain_nested > 0"
        )
        return {"fit": {"procedure": procedure, "folds": self.folds, "ids": self.ids, "grid": grid, **per_dim}}


def fit_post(per_fold: Mapping[int, RunPredictions]) -> PostFit:
    """Choose each dimension's post-processing on the out-of-fold predictions ``{fold: its ids' predictions}``."""
    if len(per_fold) < 2:
        raise VafusionError("post-processing is chosen out of fold: it needs the predictions of at least 2 folds")
    folds = sorted(per_fold)
    fits = {name: _fit_dimension(_videos(per_fold, dim), folds) for dim, name in enumerate(DIMENSIONS)}
    post = Post(**{name: fit.best if fit.applied else DimPost() for name, fit in fits.items()})
    return PostFit(post, fits, folds, sum(len(r.ids) for r in per_fold.values()))


__all__ = ["MAX_SHIFT_S", "SHIFTS_S", "SHIFT_STEP_S", "SMOOTHINGS", "WINDOWS_S", "DimensionFit", "PostFit", "fit_post"]
