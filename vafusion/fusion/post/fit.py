"""Choosing the post-processing of each dimension on out-of-fold predictions, honestly.

Input: the out-of-fold (OOF) predictions of ``vafusion cv`` (:mod:`vafusion.fusion.post.oof`):
every labelled train/validation id predicted by the fold that validated it (the mean of
that fold's seeds), i.e. by models that never trained on it. Test ids are never part of it.

Candidates, per dimension (valence and arousal separately): one setting of each step of a
sequence (:mod:`.steps`, named in :mod:`.registry`), every combination of their grids. By
default a smoothing, then a shift: no smoothing, or a centred ``mean`` or ``median`` over each
window of :data:`~.steps.WINDOWS_S` seconds, combined with each shift of :data:`~.steps.SHIFTS_S`
(-1 s to +1 s in steps of 1/30 s). A candidate is scored by CCC over all labelled OOF frames
pooled, the challenge's way.

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
per candidate serves the full-data choice and every nested choice. When the last step only
delays (a shift), all its settings are scored at once per setting of the steps before it.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from vafusion.errors import VafusionError
from vafusion.fusion.post.apply import DIMENSIONS, DimPost, Post
from vafusion.fusion.post.oof import RunPredictions
from vafusion.fusion.post.registry import DEFAULT_STEPS, step_class, step_name
from vafusion.fusion.post.steps import SHIFT_STEP_S, SHIFTS_S, Step


@dataclass
class _Video:
    """One video's OOF frames of one dimension."""

    pred: np.ndarray  # (T,) float32 predictions
    mask: np.ndarray  # (T,) float64: 1 where labelled
    target: np.ndarray  # (T,) float64: the label where labelled, else 0
    fps: float
    fold: int  # position of its fold among the folds


@dataclass(frozen=True)
class _Grid:
    """The candidates of a sequence of steps: every setting of the steps before the last (``prefixes``)
    times every setting of the last (``last``); candidate (j, h) in that order, the identity (0, 0)."""

    kinds: tuple[type[Step], ...]
    prefixes: tuple[tuple[Step, ...], ...]
    last: tuple[Step, ...]

    @classmethod
    def of(cls, steps: Sequence[str | type[Step]]) -> _Grid:
        kinds = tuple(step_class(s) for s in steps)
        if not kinds:
            raise VafusionError("--post-steps: name at least one post-processing step")
        grids = [k.grid() for k in kinds]
        for kind, grid in zip(kinds, grids):
            if not grid or not grid[0].identity:
                raise VafusionError(
                    f"post-processing step {step_name(kind)}: its grid must start with the setting that "
                    f"changes nothing (the fit prefers it at equal scores)"
                )
        return cls(kinds, tuple(itertools.product(*grids[:-1])), tuple(grids[-1]))

    @property
    def delays(self) -> np.ndarray | None:
        """Seconds of each last setting when the last step only delays (scored by correlation), else None."""
        seconds = [c.delay_seconds() for c in self.last]
        return None if any(s is None for s in seconds) else np.array(seconds, dtype=np.float64)

    def candidate(self, j: int, h: int) -> DimPost:
        """Candidate (j, h), each step as post.json records it."""
        steps = (*self.prefixes[j], self.last[h])
        return DimPost(tuple(dataclasses.replace(cast(Any, s), **s.params()) for s in steps))  # steps are dataclasses


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


def _prefixed(v: _Video, prefix: tuple[Step, ...]) -> np.ndarray:
    x = v.pred
    for step in prefix:
        x = step.apply(x, v.fps)
    return np.asarray(x).astype(np.float64)


def _delayed_sums(v: _Video, x: np.ndarray, delays: np.ndarray) -> np.ndarray:
    """``(H, 3)`` Σp, Σp², Σpt of ``x`` delayed by each of ``delays`` seconds, over the video's labelled frames.

    The sums for every delay at once are correlations of the edge-padded values with the label
    mask and the labels (a delay of k frames is lag k): three correlations, not one pass per delay.
    """
    pad = int(np.ceil(np.abs(delays).max() * v.fps)) + 1  # >= every |delay| in frames at this fps
    lags = pad - np.rint(delays * v.fps).astype(np.int64)  # correlation index of each delay
    p = np.pad(x, pad, mode="edge")
    # np.correlate(p, w, "valid")[n] = sum_t p[n + t] w[t]; values delayed by k: p[t - k + pad]
    stats = np.stack(
        [np.correlate(p, v.mask, "valid"), np.correlate(p * p, v.mask, "valid"), np.correlate(p, v.target, "valid")],
        axis=-1,
    )
    return stats[lags]


def _applied_sums(v: _Video, x: np.ndarray, last: tuple[Step, ...]) -> np.ndarray:
    """``(H, 3)`` Σp, Σp², Σpt of each setting of the last step applied to ``x``, over the labelled frames."""
    out = np.empty((len(last), 3))
    for h, step in enumerate(last):
        y = np.asarray(step.apply(x, v.fps), dtype=np.float64)
        out[h] = y @ v.mask, (y * y) @ v.mask, y @ v.target
    return out


def _sums(videos: list[_Video], n_folds: int, grid: _Grid) -> np.ndarray:
    """``(J, H, F, 3)``: per candidate (j, h) and fold f, Σp, Σp², Σpt over the fold's labelled frames."""
    out = np.zeros((len(grid.prefixes), len(grid.last), n_folds, 3))
    delays = grid.delays
    frames = sum(len(v.pred) for v in videos)
    for j, prefix in enumerate(
        tqdm(
            grid.prefixes,
            desc="post-processing",
            unit="setting",
            leave=False,
            disable=None if frames > 500_000 else True,
        )
    ):
        for v in videos:
            x = _prefixed(v, prefix)
            out[j, :, v.fold] += _delayed_sums(v, x, delays) if delays is not None else _applied_sums(v, x, grid.last)
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


@dataclass
class DimensionFit:
    """One dimension's result: the choice, whether it is applied, the CCCs behind it, the last step's curves."""

    best: DimPost  # the candidate with the best pooled OOF CCC (the choice for the test set)
    applied: bool  # the nested gain is positive
    scores: dict[str, Any]  # frames, ccc_before, ccc_in_sample, ccc_nested, gain_in_sample, gain_nested, per_fold
    # when the last step only delays: CCC over its settings (sorted by seconds: "x") with the steps
    # before it at no change ("none") and at their best ("best"); else empty
    curves: dict[str, np.ndarray]


def _fit_dimension(videos: list[_Video], folds: list[int], grid: _Grid) -> DimensionFit:
    sums, label_sums = _sums(videos, len(folds), grid), _label_sums(videos, len(folds))  # (J, H, F, 3), (F, 3)

    def ccc(p_sums: np.ndarray, t_sums: np.ndarray) -> np.ndarray:
        return _ccc(t_sums[0], p_sums[..., 0], p_sums[..., 1], p_sums[..., 2], t_sums[1], t_sums[2])

    total, total_labels = sums.sum(axis=2), label_sums.sum(axis=0)
    scores_grid = ccc(total, total_labels)  # (J, H): pooled CCC of every candidate over all folds
    best = _choose(scores_grid)
    nested_sums, per_fold = np.zeros(3), []
    for f, fold in enumerate(folds):
        jf, hf = _choose(ccc(total - sums[:, :, f], total_labels - label_sums[f]))  # fold f's frames unseen
        nested_sums += sums[jf, hf, f]
        per_fold.append(
            {
                "fold": fold,
                **grid.candidate(jf, hf).to_dict(),
                "ccc_before": float(ccc(sums[0, 0, f], label_sums[f])),
                "ccc_after": float(ccc(sums[jf, hf, f], label_sums[f])),
            }
        )
    before, in_sample, nested = (
        float(scores_grid[0, 0]),
        float(scores_grid[best]),
        float(ccc(nested_sums, total_labels)),
    )
    scores = {
        "frames": int(total_labels[0]),
        "ccc_before": before,
        "ccc_in_sample": in_sample,
        "ccc_nested": nested,
        "gain_in_sample": in_sample - before,
        "gain_nested": nested - before,
        "per_fold": per_fold,
    }
    return DimensionFit(grid.candidate(*best), nested > before, scores, _curves(grid, scores_grid, best[0]))


def _curves(grid: _Grid, scores: np.ndarray, best_prefix: int) -> dict[str, np.ndarray]:
    delays = grid.delays
    if delays is None:
        return {}
    order = np.argsort(delays)
    return {"x": delays[order], "none": scores[0, order], "best": scores[best_prefix, order]}


@dataclass
class PostFit:
    """The post-processing ``predict`` applies, and how it was chosen (see the module docstring)."""

    post: Post  # the best candidate of each dimension where applied, else the one that changes nothing
    dimensions: dict[str, DimensionFit]
    folds: list[int]
    ids: int
    steps: tuple[type[Step], ...]  # the sequence fitted, in order

    def details(self) -> dict[str, Any]:
        """What ``post.json`` and ``cv.json`` record besides the choice."""
        per_dim = {
            name: {"best": d.best.to_dict(), "applied": d.applied, **d.scores} for name, d in self.dimensions.items()
        }
        procedure = (
            "per dimension, the candidate (one setting of each step, in order) with the best CCC over all "
            "out-of-fold frames pooled; gain_nested: each fold scored with the choice made on the other folds; "
            "applied only where gain_nested > 0"
        )
        return {
            "fit": {
                "procedure": procedure,
                "steps": [step_name(s) for s in self.steps],
                "folds": self.folds,
                "ids": self.ids,
                "grid": {step_name(s): s.grid_summary() for s in self.steps},
                **per_dim,
            }
        }


def fit_post(per_fold: Mapping[int, RunPredictions], steps: Sequence[str | type[Step]] = DEFAULT_STEPS) -> PostFit:
    """Choose each dimension's post-processing on the out-of-fold predictions ``{fold: its ids' predictions}``.

    ``steps``: the sequence to fit, in order (registered names, ``package.module:Class``, or step classes).
    """
    if len(per_fold) < 2:
        raise VafusionError("post-processing is chosen out of fold: it needs the predictions of at least 2 folds")
    grid = _Grid.of(steps)
    folds = sorted(per_fold)
    fits = {name: _fit_dimension(_videos(per_fold, dim), folds, grid) for dim, name in enumerate(DIMENSIONS)}
    unchanged = grid.candidate(0, 0)
    post = Post(**{name: fit.best if fit.applied else unchanged for name, fit in fits.items()})
    return PostFit(post, fits, folds, sum(len(r.ids) for r in per_fold.values()), grid.kinds)


__all__ = ["SHIFTS_S", "SHIFT_STEP_S", "DimensionFit", "PostFit", "fit_post"]
