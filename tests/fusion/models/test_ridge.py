"""The ridge baseline: linear recovery, context averaging, pickle-free state, clipping, subsampling."""

from __future__ import annotations

import numpy as np
import pytest

from vafusion.errors import VafusionError
from vafusion.fusion.models.ridge import RidgeBaseline, design_matrix
from vafusion.fusion.signal import context_average


def _videos(rng: np.random.Generator, lengths=(120, 80, 200), dims=(6, 4), p_absent=0.0):
    feats, pres = [], []
    for T in lengths:
        p = [rng.random(T) >= p_absent for _ in dims]
        f = [rng.standard_normal((T, d)).astype(np.float32) * pi[:, None] for d, pi in zip(dims, p)]
        feats.append(f)
        pres.append(p)
    return feats, pres


def test_recovers_a_linear_mapping_and_ignores_nan_labels():
    rng = np.random.default_rng(0)
    feats, pres = _videos(rng)
    w = rng.standard_normal((2, 10)) * 0.2
    labels = [np.concatenate(f, axis=1) @ w.T + np.array([0.1, -0.2]) for f in feats]
    labels[0][:30, 0] = np.nan  # a valence gap: arousal of those frames still counts
    labels[1][5:9] = np.nan
    model = RidgeBaseline([6, 4], alpha=1e-3).fit(feats, pres, labels)
    np.testing.assert_allclose(model.coef_[:, :10], w, atol=1e-4)
    np.testing.assert_allclose(model.intercept_, [0.1, -0.2], atol=1e-4)
    preds = model.predict(feats, pres)
    assert [p.shape for p in preds] == [(T, 2) for T in (120, 80, 200)]
    assert all(p.dtype == np.float32 for p in preds)
    truth = np.concatenate([f[0] @ w[:, :6].T + f[1] @ w[:, 6:].T + [0.1, -0.2] for f in feats])
    np.testing.assert_allclose(np.concatenate(preds), np.clip(truth, -1, 1), atol=1e-4)


def test_absent_frames_contribute_only_through_the_presence_column():
    rng = np.random.default_rng(1)
    feats, pres = _videos(rng, p_absent=0.3)
    x = design_matrix(feats[0], pres[0], context=1)
    assert x.shape == (120, 6 + 4 + 2)
    garbage = [f.copy() for f in feats[0]]
    for f, p in zip(garbage, pres[0]):
        f[~p] = 1e6  # meaningless values where the modality is absent
    np.testing.assert_array_equal(design_matrix(garbage, pres[0], context=1), x)
    np.testing.assert_array_equal(x[:, 10], pres[0][0].astype(np.float32))
    np.testing.assert_array_equal(
        design_matrix(garbage, pres[0], context=5), design_matrix(feats[0], pres[0], context=5)
    )


def test_context_average_on_a_known_sequence():
    x = np.arange(6, dtype=np.float32)[:, None] * np.array([[1.0, 10.0]], dtype=np.float32)
    present = np.array([1, 1, 0, 1, 1, 1], dtype=bool)
    mean, frac = context_average(x, present, context=3)  # window = previous, own, next frame
    # frame 0: {0, 1}; 1: {0, 1, (2 absent)}; 2: {1, 3}; 3: {(2), 3, 4}; 4: {3, 4, 5}; 5: {4, 5}
    np.testing.assert_allclose(mean[:, 0], [0.5, 0.5, 2.0, 3.5, 4.0, 4.5])
    np.testing.assert_allclose(mean[:, 1], 10 * mean[:, 0])
    np.testing.assert_allclose(frac, [1.0, 2 / 3, 2 / 3, 2 / 3, 1.0, 1.0])
    # even context: one more frame after than before ([t-1, t+2])
    mean4, frac4 = context_average(x, present, context=4)
    np.testing.assert_allclose(mean4[:, 0], [1 / 2 * (0 + 1), (0 + 1 + 3) / 3, (1 + 3 + 4) / 3, 4.0, 4.0, 4.5])
    np.testing.assert_allclose(frac4, [2 / 3, 3 / 4, 3 / 4, 3 / 4, 1.0, 1.0])
    # a subset of rows gives the same values as the full computation
    m_rows, f_rows = context_average(x, present, context=3, rows=np.array([4, 0]))
    np.testing.assert_allclose(m_rows, mean[[4, 0]])
    np.testing.assert_allclose(f_rows, frac[[4, 0]])
    # context 1 = the frame itself, absent frames zeroed
    m1, f1 = context_average(x, present, context=1)
    np.testing.assert_allclose(m1[:, 0], [0, 1, 0, 3, 4, 5])
    np.testing.assert_allclose(f1, present.astype(np.float32))
    # no present frame in the window: mean 0, fraction 0
    m0, f0 = context_average(x, np.zeros(6, dtype=bool), context=3)
    assert not m0.any() and not f0.any()


def test_context_is_used_by_fit_and_predict():
    rng = np.random.default_rng(2)
    T = 300
    f = (rng.standard_normal((T, 1)) * 0.3).astype(np.float32)  # labels stay inside [-1, 1]
    smooth = np.convolve(f[:, 0], np.ones(5) / 5, mode="same")  # centred 5-frame mean, zero-padded
    labels = np.stack([smooth, -smooth], axis=1)
    labels[:2] = labels[-2:] = np.nan  # the edges differ (truncated window vs zero padding)
    p = [np.ones(T, dtype=bool)]
    plain = RidgeBaseline([1], alpha=1e-3, context=1).fit([[f]], [p], [labels])
    ctx = RidgeBaseline([1], alpha=1e-3, context=5).fit([[f]], [p], [labels])
    err = lambda m: np.nanmean((m.predict([[f]], [p])[0] - labels) ** 2)  # noqa: E731
    assert err(ctx) < 1e-8 < 1e-3 < err(plain)


def test_state_dict_round_trip_without_pickle(tmp_path):
    rng = np.random.default_rng(3)
    feats, pres = _videos(rng, p_absent=0.2)
    labels = [np.tanh(np.stack([f[0][:, 0], f[1][:, 1]], axis=1)) for f in feats]
    model = RidgeBaseline([6, 4], alpha=3.0, context=3).fit(feats, pres, labels)
    assert (model.alpha, model.context) == (3.0, 3)
    state = model.state_dict()
    assert set(state) >= {"coef_", "intercept_", "alpha", "context"}
    np.savez(tmp_path / "ridge.npz", **state)
    loaded = RidgeBaseline([6, 4])  # the options come back from the state
    with np.load(tmp_path / "ridge.npz", allow_pickle=False) as data:
        loaded.load_state_dict(dict(data))
    assert (loaded.alpha, loaded.context) == (3.0, 3)
    for a, b in zip(model.predict(feats, pres), loaded.predict(feats, pres)):
        np.testing.assert_array_equal(a, b)


def test_state_dict_through_a_weights_only_torch_checkpoint(tmp_path):
    import torch

    rng = np.random.default_rng(4)
    feats, pres = _videos(rng)
    labels = [np.tanh(f[0][:, :2]) for f in feats]
    model = RidgeBaseline([6, 4], alpha=1.0).fit(feats, pres, labels)
    as_tensors = {k: torch.as_tensor(v) for k, v in model.state_dict().items()}
    torch.save({"ridge": as_tensors}, tmp_path / "ckpt.pt")
    loaded = RidgeBaseline([6, 4])
    loaded.load_state_dict(torch.load(tmp_path / "ckpt.pt", weights_only=True)["ridge"])
    for a, b in zip(model.predict(feats, pres), loaded.predict(feats, pres)):
        np.testing.assert_array_equal(a, b)


def test_predictions_are_clipped():
    rng = np.random.default_rng(5)
    feats, pres = _videos(rng, lengths=(200,))
    labels = [np.concatenate(feats[0], axis=1)[:, :2] * 3.0]  # far outside [-1, 1]
    preds = RidgeBaseline([6, 4], alpha=1e-3).fit(feats, pres, labels).predict(feats, pres)[0]
    assert preds.min() == -1.0 and preds.max() == 1.0
    assert np.all(np.abs(preds) <= 1.0)


def test_max_frames_subsamples_reproducibly():
    rng = np.random.default_rng(6)
    feats, pres = _videos(rng, lengths=(400, 300))
    labels = [np.concatenate(f, axis=1)[:, [0, 7]] * 0.3 + rng.standard_normal((len(f[0]), 2)) * 0.1 for f in feats]
    a = RidgeBaseline([6, 4], alpha=1.0, max_frames=150).fit(feats, pres, labels, seed=7)
    b = RidgeBaseline([6, 4], alpha=1.0, max_frames=150).fit(feats, pres, labels, seed=7)
    c = RidgeBaseline([6, 4], alpha=1.0, max_frames=150).fit(feats, pres, labels, seed=8)
    full = RidgeBaseline([6, 4], alpha=1.0).fit(feats, pres, labels)
    assert a.n_fit_frames == 150 and full.n_fit_frames == 700
    np.testing.assert_array_equal(a.coef_, b.coef_)
    assert not np.array_equal(a.coef_, c.coef_)
    np.testing.assert_allclose(a.coef_[0, 0], 0.3, atol=0.05)  # still finds the mapping


def test_user_errors():
    rng = np.random.default_rng(7)
    feats, pres = _videos(rng)
    labels = [np.full((len(f[0]), 2), np.nan) for f in feats]
    with pytest.raises(VafusionError, match="no labelled frame"):
        RidgeBaseline([6, 4]).fit(feats, pres, labels)
    with pytest.raises(VafusionError, match="before fit"):
        RidgeBaseline([6, 4]).predict(feats, pres)
    model = RidgeBaseline([6, 4]).fit(feats, pres, [np.zeros((len(f[0]), 2)) for f in feats])
    wrong = [[f[0][:, :5], f[1]] for f in feats]
    with pytest.raises(VafusionError, match="widths"):
        model.predict(wrong, pres)
    with pytest.raises(VafusionError, match="do not fit"):
        RidgeBaseline([6, 5]).load_state_dict(model.state_dict())
    with pytest.raises(ValueError, match="alpha >= 0"):
        RidgeBaseline([6, 4], alpha=-1.0)
