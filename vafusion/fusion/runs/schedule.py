"""How a training's learning rate moves and when it stops: the parts of a recipe that are arithmetic.

Why names, not formulas, in a configuration: a run directory must train on the same way after
a resume and reproduce later, so the schedule is a registered name whose rule never changes
(a new rule gets a new name). Two today:

- ``v1``: linear warm-up over ``min(10% of all steps, 200)`` steps, then cosine to 5% of the
  peak rate at the last step: the schedule of every run before the fast recipe (``--recipe v1``).
- ``cosine``: linear warm-up over half an epoch (at most 200 steps), then cosine to 5% of the
  peak at the last step of ``epochs``. A short warm-up matters when a run is a few epochs long:
  ``v1`` spent its first 3 of 30 epochs warming up.

Stopping (:func:`stop_reason`): a non-finite training loss stops at once (the weights are
NaN); otherwise a run stops once ``patience`` epochs in a row brought no better validation P,
but never before ``min_epochs``.
"""

from __future__ import annotations

import math
from collections.abc import Callable


def _v1_warmup(total: int, steps_per_epoch: int) -> int:
    return max(1, min(total // 10, 200))


def _cosine_warmup(total: int, steps_per_epoch: int) -> int:
    return max(1, min(steps_per_epoch // 2, 200, total // 2))


SCHEDULES: dict[str, Callable[[int, int], int]] = {"v1": _v1_warmup, "cosine": _cosine_warmup}
"""Schedule name -> its warm-up length in steps, from (all steps, steps per epoch); cosine decay after it."""


def lr_factor(schedule: str, total: int, steps_per_epoch: int) -> Callable[[int], float]:
    """The multiplier of the peak learning rate at each step (for ``torch.optim.lr_scheduler.LambdaLR``)."""
    warmup = SCHEDULES[schedule](total, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return 0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress))  # to 5% of the peak

    return factor


def stop_reason(loss: float, epoch: int, stale: int, patience: int, min_epochs: int) -> str:
    """Why training stops after ``epoch`` ("" = go on); ``stale``: epochs since the best validation P."""
    if not math.isfinite(loss):
        return f"the training loss is {loss} (diverged)"
    if stale >= patience and epoch >= min_epochs:
        return f"early stop: no better validation P for {patience} epochs"
    return ""
