"""Learning-rate schedules (config group ``scheduler``): a linear warm-up, then a decay driven by validation.

:class:`WarmupPlateau` ramps the learning rate from ``lr / warmup_steps`` to ``lr`` over the first ``warmup_steps``
optimizer steps, then multiplies it by ``factor`` whenever the monitored validation metric
(:data:`tagretrieval.evaluation.metric_keys.MONITOR`) has not improved for ``patience`` validations (torch's
``ReduceLROnPlateau``), down to ``min_lr``.

Why a decay on plateau rather than a cosine to a fixed number of steps: training stops when validation stops
improving (early stopping, ``callbacks``), so the number of steps is not known in advance; a cosine to
``trainer.max_epochs`` would still be at a high rate when training stops, and would make the first epochs of a run
depend on how long it was allowed to run (a run resumed with a larger ``max_epochs`` would not equal an
uninterrupted one). Both parts here depend only on what has happened so far, and their state is in the checkpoint.
The patience of the decay must be shorter than early stopping's, so that a plateau first lowers the rate.
"""

from __future__ import annotations

import math

import torch

__all__ = ["WarmupPlateau", "apply_warmup", "warmup_factor"]


def warmup_factor(step: int, *, warmup_steps: int) -> float:
    """The warm-up's multiplier of the learning rate at optimizer step ``step`` (0-based): ``(step + 1) / warmup_steps``
    during the warm-up, then 1."""
    if warmup_steps <= 0:
        return 1.0
    return min(1.0, (step + 1) / warmup_steps)


_APPLIED = "warmup_factor"  # the factor the last warm-up step applied, in the param group (so in the checkpoint)


def apply_warmup(optimizer: torch.optim.Optimizer, step: int, *, warmup_steps: int) -> None:
    """Set each param group's rate for optimizer step ``step`` (0-based) of the warm-up: its base rate times
    :func:`warmup_factor`; nothing from step ``warmup_steps`` on.

    The base rate is the group's current rate divided by the factor the previous warm-up step applied, not the rate
    the optimizer started with: a decay on plateau during the warm-up (an epoch shorter than the warm-up) multiplies
    the current rate, and so the base, and the warm-up keeps that cut instead of ramping back to the original rate.
    """
    if step >= warmup_steps:
        return
    factor = warmup_factor(step, warmup_steps=warmup_steps)
    for group in optimizer.param_groups:
        if "warmup_target_lr" in group:  # a checkpoint saved mid-warm-up by an older version: its base rate
            group[_APPLIED] = group["lr"] / group.pop("warmup_target_lr")
        applied = group.pop(_APPLIED, 1.0)
        group["lr"] = group["lr"] / applied * factor
        if factor < 1.0:
            group[_APPLIED] = factor


class WarmupPlateau:
    """Settings of the schedule (module docstring); :meth:`plateau` builds its decay for an optimizer.

    Args:
        warmup_steps: optimizer steps of the linear warm-up (0: none).
        factor: multiplier of the learning rate at each plateau, in (0, 1).
        patience: validations without improvement before the rate is lowered.
        min_lr: the lowest learning rate.
    """

    def __init__(self, *, warmup_steps: int = 100, factor: float = 0.3, patience: int = 2,
                 min_lr: float = 1e-6) -> None:
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        if not 0.0 < factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor}")
        if patience < 0:
            raise ValueError(f"patience must be >= 0, got {patience}")
        if not (math.isfinite(min_lr) and min_lr >= 0):
            raise ValueError(f"min_lr must be >= 0, got {min_lr}")
        self.warmup_steps = warmup_steps
        self.factor = factor
        self.patience = patience
        self.min_lr = min_lr

    def plateau(self, optimizer: torch.optim.Optimizer, *, mode: str) -> torch.optim.lr_scheduler.ReduceLROnPlateau:
        """The decay of ``optimizer``'s rate; ``mode``: ``"max"`` for a metric that should grow."""
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode=mode, factor=self.factor,
                                                          patience=self.patience, min_lr=self.min_lr)

    def describe(self) -> str:
        return (f"warm-up {self.warmup_steps} steps, then x{self.factor} after {self.patience} validations without "
                f"improvement (min {self.min_lr:g})")
