"""Loss settings counted from the training labels when fit starts: "balanced" weights and logit-adjustment priors.

``ImageClassifier(class_weights="balanced")``, ``pos_weight="balanced"`` and ``logit_adjustment=tau`` need the label
counts of the training split, which only the data module knows; :func:`resolve_loss_weights` asks it through the
Trainer (``trainer.datamodule.label_counts("train")``) and sets the module's tensors.
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor

__all__ = ["resolve_loss_weights"]


def resolve_loss_weights(module: Any) -> None:
    """Set ``module.pos_weight``, ``module.class_weights`` and ``module.log_prior`` where its settings ask for
    values counted from the training labels; the rest is left as the constructor set it."""
    hparams = module.hparams
    if hparams.get("pos_weight") == "balanced":
        positives, images = _label_counts(module, "pos_weight='balanced'")
        positives = positives.float()
        weight = (images - positives) / positives.clamp_min(1.0)
        weight[positives == 0] = 1.0
        rank_zero_info(f"pos_weight='balanced' (negatives / positives per label): {_listed(module, weight)}")
        module.pos_weight = weight
    if hparams.get("class_weights") == "balanced":
        positives, _ = _label_counts(module, "class_weights='balanced'")
        weights = positives.sum() / positives.clamp_min(1.0)
        module.class_weights = weights / weights.mean()
        listed = _listed(module, module.class_weights)
        rank_zero_info(f"class_weights='balanced' (inverse class frequency, mean 1): {listed}")
    if hparams.get("logit_adjustment") is not None:
        positives, images = _label_counts(module, "logit_adjustment")
        module.log_prior = (positives.clamp_min(1.0) / images).log()


def _label_counts(module: Any, option: str) -> tuple[Tensor, int]:
    counts = getattr(getattr(module.trainer, "datamodule", None), "label_counts", None)
    if counts is None:
        raise ValueError(
            f"`{option}` counts the training labels through the data module, but this fit has none with "
            "`label_counts()` (ImageDataModule). Give the values yourself (one per class), or fit with an "
            "ImageDataModule."
        )
    return counts("train")


def _listed(module: Any, values: Tensor) -> str:
    names = module.hparams.get("class_names") or [str(i) for i in range(len(values))]
    return ", ".join(f"{n}: {v:.2f}" for n, v in list(zip(names, values.tolist(), strict=True))[:10])
