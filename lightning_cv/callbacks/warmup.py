"""Linear learning-rate warmup on top of whatever schedule a LightningModule configured."""

from __future__ import annotations

import math
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_warn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import OneCycleLR
from typing_extensions import override

from lightning_cv.optim.schedules import linear_warmup_factor

__all__ = ["LinearWarmup"]


class LinearWarmup(Callback):
    """Ramp every parameter group's learning rate from ``start_factor`` x to the value the module's own schedule gives.

    Use it when a model you did not write trains unstably in its first steps (large batches, AdamW on transformers,
    fresh heads on pretrained backbones). It composes with any scheduler (cosine, step, plateau or none): for each
    optimizer step the schedule's rate is multiplied by the warmup factor just for that step and restored right
    after, through the optimizer's step hooks, so the scheduler never sees the scaled value. Progress counts
    optimizer steps (``trainer.global_step``), so gradient accumulation and resuming from a checkpoint keep the curve.
    ``ImageClassifier(warmup_steps=...)`` uses the same ramp (:func:`~lightning_cv.optim.linear_warmup_factor`).

    Args:
        warmup_steps: length of the ramp in optimizer steps; or give ``warmup_epochs``.
        warmup_epochs: length of the ramp in epochs (may be fractional).
        start_factor: the first step's fraction of the scheduled learning rate.

    Example:
        >>> trainer = Trainer(callbacks=[LinearWarmup(warmup_steps=500)])  # doctest: +SKIP
    """

    def __init__(self, warmup_steps: int = 0, warmup_epochs: float = 0.0, start_factor: float = 0.01) -> None:
        if warmup_steps < 0 or warmup_epochs < 0:
            raise ValueError(f"Expected warmup lengths >= 0, but got steps={warmup_steps}, epochs={warmup_epochs}.")
        if warmup_steps and warmup_epochs:
            raise ValueError("Give the warmup length once: `warmup_steps` or `warmup_epochs`, not both.")
        if not warmup_steps and not warmup_epochs:
            raise ValueError("Expected `warmup_steps` or `warmup_epochs` > 0: a warmup of length 0 does nothing.")
        if not 0.0 <= start_factor <= 1.0:
            raise ValueError(f"Expected `start_factor` in [0, 1], but got {start_factor}.")
        self.warmup_steps = warmup_steps
        self.warmup_epochs = warmup_epochs
        self.start_factor = start_factor
        self._steps = warmup_steps
        self._handles: list[Any] = []
        self._saved: dict[int, list[float]] = {}
        self._restored_steps: int | None = None

    def _resolve_steps(self, trainer: Trainer) -> int:
        if self._restored_steps is not None:
            return self._restored_steps
        if self.warmup_steps:
            return self.warmup_steps
        batches = trainer.num_training_batches
        if not math.isfinite(batches):
            raise ValueError("`warmup_epochs` needs training data with a length; give `warmup_steps` instead.")
        per_epoch = max(1, math.ceil(int(batches) / trainer.accumulate_grad_batches))
        return max(1, round(self.warmup_epochs * per_epoch))

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._steps = self._resolve_steps(trainer)
        for config in trainer.lr_scheduler_configs:
            if isinstance(config.scheduler, OneCycleLR):
                rank_zero_warn(
                    "LinearWarmup is stacked on a OneCycleLR schedule, which already warms up; the two ramps multiply."
                )
        self._remove_hooks()
        for optimizer in trainer.optimizers:
            self._handles.append(optimizer.register_step_pre_hook(self._pre_hook(trainer)))
            self._handles.append(optimizer.register_step_post_hook(self._post_hook))

    def _pre_hook(self, trainer: Trainer) -> Any:
        def scale(optimizer: Optimizer, args: Any, kwargs: Any) -> None:
            factor = linear_warmup_factor(trainer.global_step, self._steps, self.start_factor)
            if factor == 1.0:
                return
            self._saved[id(optimizer)] = [group["lr"] for group in optimizer.param_groups]
            for group in optimizer.param_groups:
                group["lr"] = group["lr"] * factor

        return scale

    def _post_hook(self, optimizer: Optimizer, args: Any, kwargs: Any) -> None:
        saved = self._saved.pop(id(optimizer), None)
        if saved is not None:
            for group, lr in zip(optimizer.param_groups, saved, strict=True):
                group["lr"] = lr

    def _remove_hooks(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._remove_hooks()

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        for optimizer in trainer.optimizers:  # an exception inside the step must not leave a scaled LR behind
            self._post_hook(optimizer, (), {})
        self._remove_hooks()

    @property
    def state_key(self) -> str:
        return self._generate_state_key(warmup_steps=self.warmup_steps, warmup_epochs=self.warmup_epochs)

    @override
    def state_dict(self) -> dict[str, Any]:
        # the ramp is a function of trainer.global_step, which the checkpoint restores; the resolved length is kept
        # so that a resumed run with another number of batches per epoch stays on the original curve
        return {"steps": self._steps}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._restored_steps = int(state_dict["steps"]) if "steps" in state_dict else None
