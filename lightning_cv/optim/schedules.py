"""Learning-rate schedules stepped once per optimizer step, each composable with linear warmup.

Every schedule is a multiplier of each parameter group's base learning rate, so layer-wise LR decay scales carry
through, and it is a function of the optimizer step alone, so gradient accumulation (fewer optimizer steps) and
resume (the step is restored) keep the intended curve. The warmup ramp is :func:`linear_warmup_factor`, the one
implementation the classifier's built-in warmup and the ``LinearWarmup`` callback share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR, LRScheduler, OneCycleLR

__all__ = ["SCHEDULERS", "LRFactor", "build_scheduler", "check_scheduler", "linear_warmup_factor"]

SCHEDULERS = ("cosine", "onecycle", "step", "constant")


def linear_warmup_factor(step: int, warmup_steps: int, start_factor: float) -> float:
    """``start_factor`` at step 0, rising linearly to 1 at ``warmup_steps`` and 1 afterwards."""
    if warmup_steps <= 0 or step >= warmup_steps:
        return 1.0
    return start_factor + (1.0 - start_factor) * step / warmup_steps


def check_scheduler(name: str) -> None:
    if name not in SCHEDULERS:
        raise ValueError(f"Unknown scheduler {name!r}. Choose one of: {', '.join(SCHEDULERS)}.")


@dataclass
class LRFactor:
    """The learning-rate multiplier at an optimizer step."""

    kind: str
    total_steps: float
    warmup_steps: int = 0
    warmup_start_factor: float = 0.01
    min_ratio: float = 0.0
    decay_every: int = 1
    gamma: float = 0.1

    def __call__(self, step: int) -> float:
        warm = linear_warmup_factor(step, self.warmup_steps, self.warmup_start_factor)
        if self.kind == "cosine":
            if step < self.warmup_steps:
                return warm
            span = max(1.0, self.total_steps - self.warmup_steps)
            progress = min(1.0, (step - self.warmup_steps) / span)
            return self.min_ratio + (1.0 - self.min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
        if self.kind == "step":
            return warm * self.gamma ** (step // max(1, self.decay_every))
        return warm


def build_scheduler(
    optimizer: Optimizer,
    name: str,
    *,
    total_steps: float,
    steps_per_epoch: int,
    warmup_steps: int = 0,
    warmup_start_factor: float = 0.01,
    min_ratio: float = 0.0,
    step_size: int = 30,
    gamma: float = 0.1,
) -> LRScheduler:
    """The schedule ``name`` for ``optimizer``, counted in optimizer steps.

    Args:
        total_steps: optimizer steps in the whole run (``trainer.estimated_stepping_batches``).
        steps_per_epoch: optimizer steps per epoch, to express ``step_size`` (epochs) in steps.
        warmup_steps: optimizer steps of linear warmup from ``warmup_start_factor`` x the base LR.
        min_ratio: cosine's final LR as a fraction of each group's base LR (``eta_min / lr``).
        step_size: epochs between two multiplications by ``gamma`` for ``"step"``.
    """
    check_scheduler(name)
    if name in ("cosine", "onecycle") and not math.isfinite(total_steps):
        raise ValueError(
            f"The {name!r} schedule needs to know the length of training, but the Trainer has no end. "
            "Set `max_epochs` or `max_steps` on the Trainer, or use `scheduler='constant'` or `'step'`."
        )
    if name == "onecycle":
        if warmup_steps > 0:
            raise ValueError(
                "The 'onecycle' schedule already warms up (its first 30% of steps); set `warmup_epochs=0` and "
                "`warmup_steps=0`, or use `scheduler='cosine'` with warmup."
            )
        return OneCycleLR(optimizer, max_lr=[g["lr"] for g in optimizer.param_groups], total_steps=int(total_steps))
    factor = LRFactor(
        kind=name,
        total_steps=float(total_steps),
        warmup_steps=warmup_steps,
        warmup_start_factor=warmup_start_factor,
        min_ratio=min_ratio,
        decay_every=max(1, step_size * steps_per_epoch),
        gamma=gamma,
    )

    def lr_lambda(step: int) -> float:
        # A plain function, so LambdaLR's state_dict leaves it out: on resume the schedule follows the current
        # configuration (say, a longer max_epochs) and only the step count comes from the checkpoint.
        return factor(step)

    return LambdaLR(optimizer, lr_lambda=lr_lambda)
