"""Log Grad-CAM overlays of a fixed set of validation images every few epochs, for any LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import hard_labels, try_split_batch
from lightning_cv.data.config import DataConfig, find_data_config, to_display
from lightning_cv.interpret.drawing import contact_sheet, panel
from lightning_cv.interpret.gradcam import GradCAM, class_probabilities
from lightning_cv.reporting import log_image

__all__ = ["GradCAMLogger"]


class GradCAMLogger(Callback):
    """Show where the model looks: Grad-CAM heatmaps over the same validation images, epoch after epoch.

    The first ``num_images`` validation images are kept (on the CPU) and explained every ``every_n_epochs`` epochs
    for the predicted (or true) class, with captum. Each overlay keeps the image visible under the heatmap, with
    the predicted class and its probability, and the true class and its probability, written above it, as in
    ``lightning-cv explain``; the overlays of one round make one contact sheet (a single picture per step, so the
    images of an epoch stay together in every logger), logged as ``val_gradcam`` to every logger through its own
    image API, or saved as ``<run dir>/images/val_gradcam/step_<step>.png`` for a logger that takes no images (CSV)
    and for a run without a logger (see :func:`lightning_cv.reporting.log_image`). The target layer is found through
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
        assert cams is not None
        config = find_data_config(getattr(trainer, "datamodule", None), pl_module)
        hparams = getattr(pl_module, "hparams", {})
        names = hparams.get("class_names") if hasattr(hparams, "get") else None
        log_image(trainer, "val_gradcam", self.sheet(pl_module, cams, config, names))

    def panels(
        self, pl_module: LightningModule, cams: Tensor, config: DataConfig | None, names: Sequence[str] | None
    ) -> list[Image.Image]:
        """One overlay per kept image: its heatmap in ``cams`` over it, predicted and true class (probability) above."""
        assert self._images is not None and self._labels is not None
        probs = class_probabilities(pl_module, self._images)
        confidence, predicted = probs.max(dim=1)

        def label(index: int) -> str:
            return names[index] if names is not None and index < len(names) else f"class {index}"

        result = []
        for i, picture in enumerate(to_display(self._images, config)):
            pred, true = int(predicted[i]), int(self._labels[i])
            lines = (
                f"pred: {label(pred)} ({float(confidence[i]):.1%})",
                f"true: {label(true)} ({float(probs[i, true]):.1%})",
            )
            result.append(panel(picture, cams[i], self.alpha, lines))
        return result

    def sheet(
        self, pl_module: LightningModule, cams: Tensor, config: DataConfig | None, names: Sequence[str] | None
    ) -> Image.Image:
        """The overlays of :meth:`panels` on one contact sheet, each named by the class its heatmap explains."""
        explained = "true class" if self.target == "true" else "predicted class"
        tiles = [
            (f"#{i + 1} Grad-CAM of the {explained}", [p])
            for i, p in enumerate(self.panels(pl_module, cams, config, names))
        ]
        return contact_sheet(tiles)
