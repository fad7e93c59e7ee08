"""Helpers the image-logging callbacks share: the run's data settings and images a person can look at."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from lightning.pytorch import LightningModule, Trainer
from torch import Tensor


def data_config(trainer: Trainer, pl_module: LightningModule) -> dict[str, Any]:
    """The data module's resolved ``data_config`` (mean, std, size ...), else the module's, else empty."""
    datamodule = getattr(trainer, "datamodule", None)
    return getattr(datamodule, "data_config", None) or getattr(pl_module, "data_config", None) or {}


def to_display(images: Tensor, mean: Sequence[float] | None, std: Sequence[float] | None) -> np.ndarray:
    """Normalised ``(N, C, H, W)`` images back to ``(N, H, W, 3)`` uint8: with ``mean``/``std``, else min-max."""
    pictures = images[:, :3].detach().float().cpu()
    if mean is not None and std is not None:
        pictures = pictures * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    else:
        low = pictures.flatten(1).min(1).values.view(-1, 1, 1, 1)
        high = pictures.flatten(1).max(1).values.view(-1, 1, 1, 1)
        pictures = (pictures - low) / (high - low).clamp_min(1e-12)
    return (pictures.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
