"""A gallery of validation predictions, worst mistakes first, logged at the end of validation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import hard_labels, try_split_batch
from lightning_cv.data.config import DataConfig, find_data_config, to_display
from lightning_cv.reporting import log_image
from lightning_cv.reporting.drawing import captioned, contact_sheet, upscale

__all__ = ["PredictionGallery"]

_PER_ROW = 4
#: small images are enlarged (nearest neighbour) to at least this width, so a 32 px input can be seen
_TILE_WIDTH = 160
_RED = (200, 0, 0)


class PredictionGallery(Callback):
    """Show the validation images the model gets most wrong: image, true class, predicted class and probability.

    The images are ranked by their cross-entropy loss, so confident mistakes come first, then unsure right answers.
    Only ``num_images`` candidates are kept while validation runs, so memory does not grow with the validation set.
    The grid (mistakes captioned in red, small images enlarged) is drawn with PIL in milliseconds and goes to every
    logger as the image ``val_worst_predictions``, through that logger's own image API, or as a PNG file under
    ``<run dir>/images/val_worst_predictions/`` for a logger that takes no images (CSV) and for a run without a
    logger (see :func:`lightning_cv.reporting.log_image`). Works with any LightningModule: it uses
    ``outputs["probs"]`` of ``validation_step`` when given, and otherwise runs the module on the batch itself.
    With several processes each shows its own share (rank zero logs).

    Args:
        num_images: how many images the gallery shows.
        every_n_epochs: log every this many epochs.
        class_names: names for the class indices; by default the module's ``hparams["class_names"]``.
    """

    def __init__(self, num_images: int = 16, every_n_epochs: int = 1, class_names: Sequence[str] | None = None) -> None:
        if num_images < 1:
            raise ValueError(f"Expected `num_images` >= 1, but got {num_images}.")
        if every_n_epochs < 1:
            raise ValueError(f"Expected `every_n_epochs` >= 1, but got {every_n_epochs}.")
        self.num_images = num_images
        self.every_n_epochs = every_n_epochs
        self.class_names = list(class_names) if class_names is not None else None
        self._kept: list[tuple[float, Tensor, int, int, float]] = []  # (loss, image, true, predicted, probability)

    def _due(self, trainer: Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and trainer.state.fn == "fit"
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._kept = []

    def update(self, images: Tensor, target: Tensor, probs: Tensor) -> None:
        """Offer a batch; keeps the ``num_images`` highest-loss images seen so far."""
        target = hard_labels(target)
        probs = probs.detach().float()
        loss = -probs.gather(1, target.view(-1, 1)).clamp_min(1e-12).log().squeeze(1)
        k = min(self.num_images, loss.shape[0])
        top = loss.topk(k).indices
        threshold = self._kept[-1][0] if len(self._kept) >= self.num_images else float("-inf")
        conf, pred = probs.max(dim=1)
        for i in top.tolist():
            value = float(loss[i])
            if value <= threshold:
                break
            self._kept.append((value, images[i].detach().float().cpu(), int(target[i]), int(pred[i]), float(conf[i])))
        self._kept.sort(key=lambda item: -item[0])
        del self._kept[self.num_images :]

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
        parts = try_split_batch(batch) if self._due(trainer) else None
        if parts is None or parts[1] is None:  # not due, or a batch without targets
            return
        images, target = parts[0], parts[1]
        probs = outputs.get("probs") if isinstance(outputs, dict) else None
        if probs is None:
            with torch.no_grad():
                probs = pl_module(images).float().softmax(dim=1)
        self.update(images, target, probs)

    def _names(self, pl_module: LightningModule) -> Sequence[str] | None:
        if self.class_names is not None:
            return self.class_names
        hparams = getattr(pl_module, "hparams", {})
        return hparams.get("class_names") if hasattr(hparams, "get") else None

    def captions(self, names: Sequence[str] | None) -> list[tuple[tuple[str, str], bool]]:
        """The caption lines of each kept image, worst first, and whether it is a mistake (shown in red)."""

        def label(index: int) -> str:
            return names[index] if names is not None and index < len(names) else str(index)

        return [
            ((f"true: {label(true)}", f"pred: {label(pred)} ({prob:.2f})"), true != pred)
            for _loss, _image, true, pred, prob in self._kept
        ]

    def image(self, config: DataConfig | None, names: Sequence[str] | None) -> Image.Image:
        """The gallery as one picture, 4 images a row, each un-normalised with ``config`` below its caption.

        Drawn with PIL: a few milliseconds, where a 16-image matplotlib figure took about 0.2 s every epoch.
        """
        pictures = to_display(torch.stack([item[1] for item in self._kept]), config)
        tiles = []
        for n, (picture, (lines, wrong)) in enumerate(zip(pictures, self.captions(names), strict=True)):
            tile = captioned(upscale(picture, _TILE_WIDTH), lines, _RED if wrong else "black")
            tiles.append((f"#{n + 1}  loss {self._kept[n][0]:.2f}", [tile]))
        return contact_sheet(tiles, panels_per_row=_PER_ROW)

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer) or not self._kept:
            return
        config = find_data_config(getattr(trainer, "datamodule", None), pl_module)
        log_image(trainer, "val_worst_predictions", self.image(config, self._names(pl_module)))
        self._kept = []
