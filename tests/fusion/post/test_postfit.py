"""Choosing post-processing out of fold: it recovers a known delay and a smoothing on a synthetic task,
keeps the predictions as they are when nothing helps, scores candidates exactly as applying them would,
and never lets a fold's own frames choose the post-processing that scores it (nested)."""

from __future__ import annotations

import sys
import types
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest

from tests.toy_cache import smooth_curve
from vafusion.errors import VafusionError
from vafusion.fusion.metrics import ccc
from vafusion.fusion.post.fit import SHIFT_STEP_S, fit_post
from vafusion.fusion.post.oof import RunPredictions
from vafusion.fusion.post.steps import Shift, Smooth, Step


def _task(
    delays_s=(0.3, 0.1), noise=(0.3, 0.3), folds=3, videos=4, frames=500, seed=0, white=False
) -> dict[int, RunPredictions]:
    """Per fold, videos at 25 or 30 fps whose predictions lead their labels by ``delays_s`` (a label lag)
    plus white noise; ``white``: labels without temporal structure, predictions 0.8 x labels + 0.05."""
    rng = np.random.default_rng(seed)
    out = {}
    for fold in range(1, folds + 1):
        preds, labels, fps = [], [], []
        for v in range(videos):
            rate = 30.0 if v % 2 else 25.0
            lag = [int(round(d * rate)) for d in delays_s]
            if white:
                lab = rng.uniform(-0.8, 0.8, size=(frames, 2)).astype(np.float32)
                pred = 0.8 * lab + 0.05
            else:
                curves = [smooth_curve(rng, frames + k) for k in lag]
                lab = np.stack([c[:frames] for c in curves], axis=1)
                # the model sees the stimulus: its prediction at t is the label annotated k frames later
                pred = np.stack([c[k : k + frames] for c, k in zip(curves, lag)], axis=1)
                pred = pred + np.asarray(noise) * rng.normal(size=pred.shape)
            lab = lab.copy()
            lab[rng.integers(0, frames - 20) :][:20] = np.nan  # frames without a label
            preds.append(pred.astype(np.float32))
            labels.append(lab)
            fps.append(rate)
        out[fold] = RunPredictions([f"f{fold}v{v}" for v in range(videos)], np.array(fps), preds, labels)
    return out


def _pooled(per_fold, post=None, dim=0) -> float:
    preds, trues = [], []
    for run in per_fold.values():
        for pred, lab, rate in zip(run.predictions, run.labels, run.fps):
            preds.append(pred[:, dim] if post is None else post.apply(pred[:, dim], rate))
            trues.append(lab[:, dim])
    return ccc(np.concatenate(preds), np.concatenate(trues))


def test_recovers_each_dimensions_delay_and_smooths_the_noise():
    task = _task()
    fit = fit_post(task)
    for name, delay in (("valence", 0.3), ("arousal", 0.1)):
        d = fit.dimensions[name]
        smoothing, shift = d.best.steps
        assert shift.shift_s == pytest.approx(delay, abs=SHIFT_STEP_S + 1e-9)
        assert smoothing.window_s > 0  # white noise on smooth labels: smoothing pays
        assert d.scores["gain_nested"] > 0.05 and d.applied
        assert d.scores["gain_in_sample"] >= d.scores["gain_nested"] - 1e-12
        assert getattr(fit.post, name) == d.best
    assert fit.post.valence.steps[1] != fit.post.arousal.steps[1]  # chosen per dimension


def test_scores_equal_applying_the_choice_to_every_frame():
    task = _task(seed=4)
    fit = fit_post(task)
    for dim, name in enumerate(("valence", "arousal")):
        d = fit.dimensions[name]
        assert d.scores["ccc_before"] == pytest.approx(_pooled(task, dim=dim), abs=1e-9)
        assert d.scores["ccc_in_sample"] == pytest.approx(_pooled(task, d.best, dim), abs=1e-9)
        frames = sum(int(np.isfinite(lab[:, dim]).sum()) for r in task.values() for lab in r.labels)
        assert d.scores["frames"] == frames


def test_keeps_predictions_as_they_are_when_nothing_helps():
    fit = fit_post(_task(white=True))
    for d in fit.dimensions.values():
        assert d.best.identity and d.scores["gain_in_sample"] == 0.0
        assert not d.applied and d.scores["gain_nested"] <= 0.0
    assert fit.post.valence.identity and fit.post.arousal.identity


def test_a_folds_nested_choice_ignores_its_own_frames():
    task = _task(seed=2)
    changed = dict(task)
    run = task[1]  # fold 1's predictions now lag differently and carry other noise
    changed[1] = RunPredictions(run.ids, run.fps, [np.roll(p, 9, axis=0) * 0.7 for p in run.predictions], run.labels)
    before, after = fit_post(task), fit_post(changed)
    for name in ("valence", "arousal"):
        first, second = before.dimensions[name].scores["per_fold"], after.dimensions[name].scores["per_fold"]
        assert first[0]["steps"] == second[0]["steps"]  # chosen on folds 2 and 3 only
        assert first[0]["ccc_before"] != second[0]["ccc_before"]  # ...and scored on fold 1's new frames


def test_needs_two_folds():
    with pytest.raises(VafusionError, match="at least 2 folds"):
        fit_post({1: _task(folds=1)[1]})


@dataclass(frozen=True)
class Gain(Step):
    """A step of one's own: the values times ``factor`` (a plug-in of the post-processing registry)."""

    factor: float = 1.0
    title: ClassVar[str] = "gain"

    @classmethod
    def grid(cls) -> tuple[Step, ...]:
        return tuple(cls(f) for f in (1.0, 0.5, 0.8, 1.25, 2.0))

    @property
    def identity(self) -> bool:
        return self.factor == 1.0

    def apply(self, x: np.ndarray, fps: float) -> np.ndarray:
        return x * self.factor

    def describe(self) -> str:
        return f"gain x{self.factor:g}"


@dataclass(frozen=True)
class Delay(Shift):
    """A shift the fit must score one setting at a time (it does not declare itself a delay)."""

    def delay_seconds(self) -> None:
        return None


def test_any_sequence_of_steps_is_fitted_and_a_step_of_ones_own_comes_by_module_path():
    task = _task(seed=5)
    for dim in (0, 1):  # predictions at half the labels' scale: a gain of 2 should win
        for run in task.values():
            for pred in run.predictions:
                pred[:, dim] *= 0.5
    fit = fit_post(task, steps=(f"{__name__}:Gain", "shift"))
    for name in ("valence", "arousal"):
        gain, shift = fit.dimensions[name].best.steps
        assert isinstance(gain, Gain) and gain.factor == 2.0 and isinstance(shift, Shift)
    details = fit.details()["fit"]
    assert details["steps"] == [f"{__name__}:Gain", "shift"]
    assert details["valence"]["best"]["steps"][0] == {"step": f"{__name__}:Gain", "factor": 2.0}
    alone = fit_post(task, steps=[Smooth])  # one step, given as a class: no shift curve
    assert [type(s) for s in alone.dimensions["valence"].best.steps] == [Smooth]
    assert alone.dimensions["valence"].curves == {}


def test_a_delay_is_scored_by_correlation_as_applying_it_would_score_it():
    task = _task(seed=6)
    fast, slow = fit_post(task), fit_post(task, steps=("smooth", Delay))
    for name in ("valence", "arousal"):
        a, b = fast.dimensions[name], slow.dimensions[name]
        assert [s.params() for s in a.best.steps] == [s.params() for s in b.best.steps]
        for key in ("ccc_before", "ccc_in_sample", "ccc_nested"):
            assert a.scores[key] == pytest.approx(b.scores[key], abs=1e-9)


def test_a_step_must_start_its_grid_with_no_change_and_be_a_step():
    @dataclass(frozen=True)
    class Backwards(Gain):
        @classmethod
        def grid(cls) -> tuple[Step, ...]:
            return (cls(2.0), cls(1.0))

    with pytest.raises(VafusionError, match="its grid must start with the setting that changes nothing"):
        fit_post(_task(), steps=(Backwards,))
    with pytest.raises(VafusionError, match=r"not a post-processing step \(a dataclass with grid\(\)"):
        fit_post(_task(), steps=(f"{__name__}:_task",))
    with pytest.raises(VafusionError, match="unknown post-processing step"):
        fit_post(_task(), steps=("smooth", "sift"))


def test_the_readmes_step_of_ones_own_is_fitted(monkeypatch):
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text()
    section = readme[readme.index("## Post-processing steps") :]
    code = section[section.index("```python\n") + len("```python\n") :]
    module = types.ModuleType("readme_steps")
    monkeypatch.setitem(sys.modules, "readme_steps", module)
    exec(code[: code.index("```")], module.__dict__)
    fit = fit_post(_task(seed=7), steps=("smooth", "readme_steps:Gain", "shift"))
    steps = fit.dimensions["arousal"].best.steps
    assert [type(s).__name__ for s in steps] == ["Smooth", "Gain", "Shift"]
    assert fit.dimensions["arousal"].best.describe().count(",") == 2
