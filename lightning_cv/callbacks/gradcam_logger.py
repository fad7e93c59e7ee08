"""Log Grad-CAM overlays of a fixed set of validation images every few epochs, for any LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import hard_labels, try_split_batch
from lightning_cv.data.config import find_data_config, to_display
from lightning_cv.interpret.gradcam import GradCAM, overlay

__all__ = ["GradCAMLogger"]


class GradCAMLogger(Callback):
    """Show where the model looks: Grad-CAM heatmaps over the same validation images, epoch after epoch.

    The first ``num_images`` validation images are kept (on the CPU) and explained every ``every_n_epochs`` epochs
    for the predicted (or true) class, with captum. The overlays go to every logger that takes figures
    (TensorBoard), or into ``<run dir>/gradcam/`` as PNG files when none does. The target layer is found through
    timm's interface (last feature stage of a CNN, last block of a ViT with its tokens put back on the patch grid)
    or given by name. The computation leaves inference mode and enables gradients itself, so it also works under
    ``Trainer.validate``, AMP and frozen backbones, and it restores every module's mode and removes its hooks. Only
    rank zero computes, on the unwrapped module (never through the DDP wrapper, which would hang the run).

    Args:
        every_n_epochs: log every this many epochs.
        num_images: how many validation images to explain.
        target_layer: module name, e.g. ``"model.layer4"``; ``None`` finds it.
        target: explain the ``"predicted"`` or the ``"true"`` class.
        alpha: heatmap opacity in the overlay.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 8,
        target_layer: str | None = None,
        target: Literal["predicted", "true"] = "predicted",
        alpha: float = 0.5,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(f"Expected `every_n_epochs` and `num_images` >= 1, got {every_n_epochs}, {num_images}.")
        if target not in ("predicted", "true"):
            raise ValueError(f"Expected `target` 'predicted' or 'true', but got {target!r}.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.target_layer = target_layer
        self.target = target
        self.alpha = alpha
        self._images: Tensor | None = None
        self._labels: Tensor | None = None
        #: the heatmaps of the last logging round, ``(N, H, W)`` in [0, 1]
        self.last_cams: Tensor | None = None
        self._run_dir: Path | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts across processes: ask on every rank here, never from rank zero alone (it hangs)
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)

    @override
    def on_validation_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        have = 0 if self._images is None else self._images.shape[0]
        if not trainer.is_global_zero or have >= self.num_images:
            return
        parts = try_split_batch(batch)
        if parts is None or parts[1] is None:  # a batch without targets
            return
        images = parts[0][: self.num_images - have].detach().cpu()
        labels = hard_labels(parts[1][: self.num_images - have]).detach().cpu()
        self._images = images if self._images is None else torch.cat([self._images, images])
        self._labels = labels if self._labels is None else torch.cat([self._labels, labels])

    def _due(self, trainer: Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and self._images is not None
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def explain(self, trainer: Trainer, pl_module: LightningModule) -> Tensor | None:
        """Compute the heatmaps of the kept images now (rank zero); ``None`` before any validation batch."""
        if self._images is None or self._labels is None:
            return None
        target = self._labels if self.target == "true" else None
        self.last_cams = GradCAM(pl_module, self.target_layer).generate_cam(self._images, target_class=target)
        return self.last_cams

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer):
            return
        cams = self.explain(trainer, pl_module)
        assert cams is not None and self._images is not None
        pictures = to_display(self._images, find_data_config(getattr(trainer, "datamodule", None), pl_module))
        blended = [overlay(p, c, self.alpha) for p, c in zip(pictures, cams, strict=True)]
        experiments: list[Any] = [getattr(logger, "experiment", None) for logger in trainer.loggers]
        targets = [e for e in experiments if hasattr(e, "add_images")]
        for experiment in targets:
            stack = torch.from_numpy(np.stack(blended)).permute(0, 3, 1, 2)
            experiment.add_images("val_gradcam", stack, global_step=trainer.global_step)
        if not targets:
            self._save(trainer, blended)

    def _save(self, trainer: Trainer, blended: Sequence[np.ndarray]) -> None:
        from PIL import Image

        folder = (self._run_dir or Path(trainer.default_root_dir)) / "gradcam"
        folder.mkdir(parents=True, exist_ok=True)
        for i, picture in enumerate(blended):
            Image.fromarray(picture).save(folder / f"epoch_{trainer.current_epoch:03d}_{i:02d}.png")
