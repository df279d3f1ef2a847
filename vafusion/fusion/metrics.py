"""Concordance correlation coefficient (CCC): the ABAW valence/arousal metric and its loss.

The challenge computes CCC with population (1/N) moments over all frames of a partition,

    CCC = 2 cov(p, t) / (var(p) + var(t) + (mean(p) - mean(t))^2),

and ranks by P = (CCC_V + CCC_A) / 2. Frames without a label (-5 in the annotation files,
NaN in the cache) are left out. :func:`ccc` and :func:`score` are that metric (float64,
numpy); :func:`ccc_loss` is the differentiable training objective 1 - CCC on a batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

# Denominators below this count as zero in the loss: keeps gradients finite when predictions
# and targets are both constant (0/0), without changing the value anywhere it is defined.
_LOSS_EPS = 1e-8


def _as_float64(x: Any) -> np.ndarray:
    if isinstance(x, Tensor):
        x = x.detach().to("cpu", torch.float64).numpy()
    return np.asarray(x, dtype=np.float64)


def ccc(pred: Any, target: Any) -> float:
    """CCC of two 1-D sequences (numpy arrays, torch tensors or lists), as ABAW computes it.

    Positions where ``target`` is NaN are ignored. When the denominator is 0 (both sequences
    constant and equal, or nothing left after ignoring NaN targets) CCC is undefined; this
    returns 0.0 then (no agreement beyond chance can be claimed), so a score never turns NaN.
    A NaN in ``pred`` at a labelled position gives NaN: that is a model bug worth seeing.
    """
    p = _as_float64(pred).reshape(-1)
    t = _as_float64(target).reshape(-1)
    if p.shape != t.shape:
        raise ValueError(f"ccc: pred has {p.size} values, target {t.size}")
    keep = ~np.isnan(t)
    if not keep.all():
        p, t = p[keep], t[keep]
    if p.size == 0:
        return 0.0
    mp, mt = p.mean(), t.mean()
    dp, dt = p - mp, t - mt
    var_p = float(np.mean(dp * dp))
    var_t = float(np.mean(dt * dt))
    cov = float(np.mean(dp * dt))
    denom = var_p + var_t + float(mp - mt) ** 2
    if denom == 0.0:
        return 0.0
    return 2.0 * cov / denom


def score(pred_v: Any, true_v: Any, pred_a: Any, true_a: Any) -> dict[str, float]:
    """``{"ccc_v", "ccc_a", "p"}`` with the challenge score P = (CCC_V + CCC_A) / 2."""
    ccc_v = ccc(pred_v, true_v)
    ccc_a = ccc(pred_a, true_a)
    return {"ccc_v": ccc_v, "ccc_a": ccc_a, "p": (ccc_v + ccc_a) / 2.0}


def ccc_loss(pred: Tensor, target: Tensor, valid: Tensor, mse_weight: float = 0.0) -> Tensor:
    """Mean over valence and arousal of 1 - CCC, over all valid labelled frames of the batch.

    ``pred`` (B, W, 2), ``target`` (B, W, 2) with NaN = no label, ``valid`` (B, W) bool (frame
    inside its video). Computing CCC over the whole batch rather than per window follows the
    metric, which pools frames. Safe by construction: NaN targets are replaced with
    ``torch.where`` before any arithmetic (so no NaN reaches a gradient), a dimension without
    any labelled frame contributes 0 loss and no gradient, and constant inputs give a finite
    value (denominator clamped at 1e-8). ``mse_weight`` adds that multiple of the mean squared
    error over the same frames (helps early training when predictions are still constant).
    """
    if pred.shape != target.shape or pred.dim() != 3 or pred.shape[-1] != 2:
        raise ValueError(f"ccc_loss: pred {tuple(pred.shape)} and target {tuple(target.shape)} must be (B, W, 2)")
    if valid.shape != pred.shape[:2]:
        raise ValueError(f"ccc_loss: valid {tuple(valid.shape)} must be {tuple(pred.shape[:2])}")
    pred = pred.float()
    target = target.to(pred.device, torch.float32)
    keep = valid.to(pred.device, torch.bool).unsqueeze(-1) & torch.isfinite(target)  # (B, W, 2)
    zero = pred.new_zeros(())
    p = torch.where(keep, pred, zero).reshape(-1, 2)
    t = torch.where(keep, target, zero).reshape(-1, 2)
    w = keep.reshape(-1, 2).to(pred.dtype)
    count = w.sum(dim=0)  # (2,)
    n = count.clamp_min(1.0)
    mean_p = p.sum(dim=0) / n
    mean_t = t.sum(dim=0) / n
    dp = (p - mean_p) * w
    dt = (t - mean_t) * w
    var_p = (dp * dp).sum(dim=0) / n
    var_t = (dt * dt).sum(dim=0) / n
    cov = (dp * dt).sum(dim=0) / n
    denom = (var_p + var_t + (mean_p - mean_t) ** 2).clamp_min(_LOSS_EPS)
    per_dim = torch.where(count > 0, 1.0 - 2.0 * cov / denom, zero)
    loss = per_dim.mean()
    if mse_weight:
        sq = (p - t) ** 2 * w
        loss = loss + mse_weight * sq.sum() / count.sum().clamp_min(1.0)
    return loss


__all__ = ["ccc", "ccc_loss", "score"]
