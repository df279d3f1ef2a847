"""CCC as the ABAW challenge computes it, and the 1 - CCC training loss."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vafusion.fusion.metrics import ccc, ccc_loss, score


def _numpy_ccc(p: np.ndarray, t: np.ndarray) -> float:
    """Straight from the definition, population moments."""
    mp, mt = p.mean(), t.mean()
    cov = ((p - mp) * (t - mt)).mean()
    return 2 * cov / (p.var() + t.var() + (mp - mt) ** 2)


def test_ccc_matches_direct_formula_on_random_data() -> None:
    rng = np.random.default_rng(0)
    for _ in range(5):
        t = rng.uniform(-1, 1, 500)
        p = 0.6 * t + rng.normal(0, 0.3, 500) + 0.1
        assert ccc(p, t) == pytest.approx(_numpy_ccc(p, t), abs=1e-12)
        assert ccc(torch.from_numpy(p).float(), torch.from_numpy(t).float()) == pytest.approx(
            _numpy_ccc(p, t), abs=1e-6
        )


def test_ccc_hand_computed() -> None:
    # pred [1,2,3], target [2,4,6]: means 2 and 4; var_p = (1+0+1)/3 = 2/3, var_t = (4+0+4)/3 = 8/3,
    # cov = ((-1)(-2) + 0 + (1)(2))/3 = 4/3; CCC = (8/3) / (2/3 + 8/3 + (2-4)^2) = (8/3)/(22/3) = 4/11
    assert ccc([1.0, 2.0, 3.0], [2.0, 4.0, 6.0]) == pytest.approx(4 / 11, abs=1e-12)


def test_ccc_perfect_and_degenerate() -> None:
    t = np.linspace(-1, 1, 50)
    assert ccc(t, t) == pytest.approx(1.0)
    assert ccc(-t, t) == pytest.approx(-1.0)
    # denominator 0: constant and equal -> documented 0.0, never NaN
    assert ccc(np.zeros(10), np.zeros(10)) == 0.0
    assert ccc(np.zeros(3), np.full(3, np.nan)) == 0.0
    # constant prediction against varying target: cov 0 -> 0
    assert ccc(np.full(50, 0.3), t) == pytest.approx(0.0, abs=1e-12)


def test_ccc_ignores_nan_targets() -> None:
    rng = np.random.default_rng(1)
    t = rng.uniform(-1, 1, 100)
    p = t + rng.normal(0, 0.2, 100)
    t_nan = t.copy()
    t_nan[::3] = np.nan
    p_wild = p.copy()
    p_wild[::3] = 1e6  # predictions at unlabelled frames must not matter
    keep = ~np.isnan(t_nan)
    assert ccc(p_wild, t_nan) == pytest.approx(_numpy_ccc(p[keep], t[keep]), abs=1e-12)


def test_score_is_mean_of_both_cccs() -> None:
    t = np.linspace(-1, 1, 20)
    s = score(t, t, np.zeros(20), t)
    assert s["ccc_v"] == pytest.approx(1.0)
    assert s["ccc_a"] == pytest.approx(0.0)
    assert s["p"] == pytest.approx(0.5)


def test_loss_zero_for_perfect_prediction_and_matches_metric() -> None:
    rng = np.random.default_rng(2)
    target = torch.from_numpy(rng.uniform(-1, 1, (3, 20, 2)).astype(np.float32))
    valid = torch.ones(3, 20, dtype=torch.bool)
    assert ccc_loss(target.clone(), target, valid).item() == pytest.approx(0.0, abs=1e-6)
    pred = target + torch.from_numpy(rng.normal(0, 0.5, (3, 20, 2)).astype(np.float32))
    valid[1, 15:] = False
    target[0, :5, 1] = float("nan")
    keep_v = valid.numpy()
    keep_a = keep_v & ~np.isnan(target[..., 1].numpy())
    expected = (
        1
        - (
            ccc(pred[..., 0].numpy()[keep_v], target[..., 0].numpy()[keep_v])
            + ccc(pred[..., 1].numpy()[keep_a], target[..., 1].numpy()[keep_a])
        )
        / 2
    )
    assert ccc_loss(pred, target, valid).item() == pytest.approx(expected, abs=1e-5)


def _loss_and_grad(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, **kw) -> tuple[float, torch.Tensor]:
    pred = pred.clone().requires_grad_(True)
    loss = ccc_loss(pred, target, valid, **kw)
    loss.backward()
    return loss.item(), pred.grad


def test_loss_finite_on_constant_inputs() -> None:
    valid = torch.ones(2, 8, dtype=torch.bool)
    for pred_value, target_value in [(0.0, 0.0), (0.5, 0.5), (0.1, -0.3)]:
        value, grad = _loss_and_grad(torch.full((2, 8, 2), pred_value), torch.full((2, 8, 2), target_value), valid)
        assert np.isfinite(value)
        assert torch.isfinite(grad).all()


def test_loss_all_nan_labels_gives_zero_and_no_grad() -> None:
    valid = torch.ones(2, 8, dtype=torch.bool)
    target = torch.full((2, 8, 2), float("nan"))
    value, grad = _loss_and_grad(torch.randn(2, 8, 2), target, valid, mse_weight=0.5)
    assert value == 0.0
    assert torch.equal(grad, torch.zeros_like(grad))
    # one dimension without labels: contributes 0, its gradient is 0, the other still learns
    target = torch.randn(2, 8, 2)
    target[..., 1] = float("nan")
    value, grad = _loss_and_grad(torch.randn(2, 8, 2), target, valid)
    assert np.isfinite(value) and 0.0 < value <= 1.0  # (1 - ccc_v + 0) / 2
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[..., 1], torch.zeros_like(grad[..., 1]))
    assert grad[..., 0].abs().sum() > 0
    # nothing valid at all
    value, grad = _loss_and_grad(torch.randn(2, 8, 2), torch.randn(2, 8, 2), torch.zeros(2, 8, dtype=torch.bool))
    assert value == 0.0 and torch.isfinite(grad).all()


def test_loss_ignores_nan_targets_and_padding_in_gradients() -> None:
    rng = np.random.default_rng(3)
    target = torch.from_numpy(rng.uniform(-1, 1, (2, 10, 2)).astype(np.float32))
    target[0, 3:6] = float("nan")
    valid = torch.ones(2, 10, dtype=torch.bool)
    valid[1, 7:] = False
    _, grad = _loss_and_grad(torch.randn(2, 10, 2), target, valid)
    assert torch.isfinite(grad).all()
    assert torch.equal(grad[0, 3:6], torch.zeros(3, 2))
    assert torch.equal(grad[1, 7:], torch.zeros(3, 2))


def test_mse_term() -> None:
    target = torch.linspace(-1, 1, 20).reshape(1, 10, 2)
    pred = target + 0.5
    valid = torch.ones(1, 10, dtype=torch.bool)
    base = ccc_loss(pred, target, valid).item()
    with_mse = ccc_loss(pred, target, valid, mse_weight=2.0).item()
    assert with_mse == pytest.approx(base + 2.0 * 0.25, abs=1e-5)
