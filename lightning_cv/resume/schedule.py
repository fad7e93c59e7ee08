"""Learning-rate schedules after a resume: the schedule, not the optimizer's saved LR, decides the next step's LR."""

from __future__ import annotations

from lightning.pytorch import Trainer

__all__ = ["sync_lr_with_schedule"]


def sync_lr_with_schedule(trainer: Trainer) -> None:
    """After a resume, set each group's LR from the schedule at the restored step.

    The optimizer state restores the LR the old run last used; when the schedule now has another length (a larger
    ``max_epochs``), the first step would otherwise still use the old value. Writes the scheduler's ``_last_lr``
    (what ``get_last_lr()`` and Lightning's LR monitor read), which torch's schedulers set only inside ``step()``.
    """
    from torch.optim.lr_scheduler import LambdaLR, OneCycleLR

    for config in trainer.lr_scheduler_configs:
        scheduler = config.scheduler
        total = trainer.estimated_stepping_batches
        if isinstance(scheduler, OneCycleLR) and scheduler.total_steps != total:
            raise ValueError(
                f"The 'onecycle' schedule of this checkpoint was planned for {scheduler.total_steps} optimizer "
                f"steps and cannot stretch to {int(total)}. Resume with the original `max_epochs`/`max_steps`, "
                "or train with `scheduler='cosine'`, which follows a new length."
            )
        if isinstance(scheduler, LambdaLR):
            groups = scheduler.optimizer.param_groups
            for group, base, fn in zip(groups, scheduler.base_lrs, scheduler.lr_lambdas, strict=True):
                group["lr"] = base * fn(scheduler.last_epoch)
            scheduler._last_lr = [group["lr"] for group in groups]
