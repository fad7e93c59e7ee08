"""Re-wrapping a model in DDP after freezing changed: the one place lightning_cv reaches into Lightning's internals.

DistributedDataParallel registers for gradient all-reduce only the parameters that required grad when it wrapped the
model; a layer group unfrozen later (``unfreeze_milestones``, ``freeze_backbone="auto"``) would get no all-reduce
and silently train differently on every rank. Lightning has no public hook to re-wrap, so this calls the DDP
strategy's ``_setup_model`` and ``_register_ddp_hooks``; ``tests/models/test_ddp_rewrap.py`` fails if Lightning
renames them, and ``tests/models/test_ddp.py`` checks that ranks stay equal after an unfreeze.
"""

from __future__ import annotations

from lightning.pytorch import LightningModule

__all__ = ["rewrap_ddp"]


def rewrap_ddp(module: LightningModule) -> None:
    """Re-create the DDP wrapper after ``requires_grad`` changed.

    DDP registers for gradient all-reduce only the parameters that required grad when it was wrapped: a group
    unfrozen later would silently train differently on every rank. Lightning has no public hook for this.
    """
    from torch.nn.parallel import DistributedDataParallel

    trainer = module._trainer
    strategy = getattr(trainer, "strategy", None)
    if strategy is None or not isinstance(getattr(strategy, "model", None), DistributedDataParallel):
        return
    setup_model = getattr(strategy, "_setup_model", None)
    if setup_model is None:
        raise RuntimeError(
            "Changing which layers are frozen under this DDP strategy is not supported by this Lightning version. "
            "Train without `unfreeze_milestones`/`freeze_backbone='auto'`, or on a single device."
        )
    strategy.model = setup_model(module)
    register = getattr(strategy, "_register_ddp_hooks", None)
    if callable(register):
        register()
