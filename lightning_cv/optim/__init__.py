"""Optimizers by name with clean parameter groups, and per-step learning-rate schedules."""

from lightning_cv.optim.optimizers import OPTIMIZERS, build_optimizer, build_param_groups
from lightning_cv.optim.schedules import SCHEDULERS, LRFactor, build_scheduler, linear_warmup_factor

__all__ = [
    "OPTIMIZERS",
    "SCHEDULERS",
    "LRFactor",
    "build_optimizer",
    "build_param_groups",
    "build_scheduler",
    "linear_warmup_factor",
]
