"""A gallery of validation predictions, worst mistakes first, logged at the end of validation."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import (
    MULTICLASS,
    MULTILABEL,
    check_task,
    decision_thresholds,
    hard_labels,
    label_sets,
    predicted_sets,
    scores,
    task_of,
    try_split_batch,
)
from lightning_cv.data.config import DataConfig, find_data_config, to_display
from lightning_cv.reporting import log_image
from lightning_cv.reporting.drawing import captioned, contact_sheet, upscale

__all__ = ["PredictionGallery"]

_PER_ROW = 4
#: small images are enlarged (nearest neighbour) to at least this width, so a 32 px input can be seen
_TILE_WIDTH = 160
_RED = (200, 0, 0)

#: a multi-label gallery entry: (loss, image, true labels, predicted (label, score) pairs best first, mistake)
_LabelSetItem = tuple[float, Tensor, tuple[int, ...], tuple[tuple[int, float], ...], bool]


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

    Multi-label modules (``hparams["task"] == "multilabel"``, see :func:`lightning_cv.data.batch.task_of`) are
    ranked by their binary cross-entropy summed over the labels, so an image with several confident wrong labels
    comes before one with a single unsure label. Their captions list the sets: ``true: a, b`` (or ``true: none``)
    and ``pred: a 0.91, c 0.55``, every label at or above the module's decision threshold with its score, highest
    first, so a caption too long for the tile (shortened with "...") loses the least confident labels; a tile is
    red when the predicted set differs from the true one. Without ``outputs["probs"]`` the module's logits are
    turned into sigmoid scores.

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
        # multi-class: (loss, image, true, predicted, probability); multi-label: see _LabelSetItem
        self._kept: list[Any] = []

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

    def update(
        self,
        images: Tensor,
        target: Tensor,
        probs: Tensor,
        task: str = MULTICLASS,
        thresholds: Tensor | None = None,
    ) -> None:
        """Offer a batch; keeps the ``num_images`` highest-loss images seen so far.

        Args:
            images: the batch's images.
            target: class indices or soft rows (multi-class), multi-hot rows (multi-label).
            probs: softmax class probabilities (multi-class) or sigmoid label scores (multi-label), ``(N, C)``.
            task: ``"multiclass"`` or ``"multilabel"``.
            thresholds: the per-label decision thresholds ``(C,)`` of a multi-label task; 0.5 each by default.
        """
        probs = probs.detach().float()
        if check_task(task) == MULTILABEL:
            self._update_label_sets(images, target, probs, thresholds)
            return
        target = hard_labels(target)
        loss = -probs.gather(1, target.view(-1, 1)).clamp_min(1e-12).log().squeeze(1)
        conf, pred = probs.max(dim=1)

        def item(i: int) -> tuple[float, Tensor, int, int, float]:
            return float(loss[i]), images[i].detach().float().cpu(), int(target[i]), int(pred[i]), float(conf[i])

        self._keep(loss, item)

    def _update_label_sets(self, images: Tensor, target: Tensor, probs: Tensor, thresholds: Tensor | None) -> None:
        target = target.detach().float().to(probs.device)
        if target.shape != probs.shape:
            raise ValueError(
                f"Expected multi-hot targets of the scores' shape {tuple(probs.shape)}, but got {tuple(target.shape)}."
            )
        # written out rather than F.binary_cross_entropy, which refuses to run under autocast; each log is clamped
        # at -100 as torch does, so a score of exactly 0 or 1 stays finite
        log_p, log_not_p = probs.log().clamp_min(-100), (1 - probs).log().clamp_min(-100)
        loss = -(target * log_p + (1 - target) * log_not_p).sum(dim=1)
        if thresholds is None:
            thresholds = decision_thresholds(None, probs.shape[1])  # the default for every label
        true, predicted = label_sets(target), predicted_sets(probs, thresholds)

        def item(i: int) -> _LabelSetItem:
            chosen = predicted[i].nonzero().flatten().tolist()
            pairs = sorted(((c, float(probs[i, c])) for c in chosen), key=lambda pair: -pair[1])
            labels = tuple(true[i].nonzero().flatten().tolist())
            wrong = bool((true[i] != predicted[i]).any())
            return float(loss[i]), images[i].detach().float().cpu(), labels, tuple(pairs), wrong

        self._keep(loss, item)

    def _keep(self, loss: Tensor, item: Callable[[int], Any]) -> None:
        """Add ``item(i)`` for the batch's highest losses that beat the kept ones; keep the ``num_images`` worst."""
        top = loss.topk(min(self.num_images, loss.shape[0])).indices
        threshold = self._kept[-1][0] if len(self._kept) >= self.num_images else float("-inf")
        for i in top.tolist():
            if float(loss[i]) <= threshold:
                break
            self._kept.append(item(i))
        self._kept.sort(key=lambda kept: -kept[0])
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
        task = task_of(pl_module)
        if task == MULTILABEL and target.ndim != 2:  # not multi-hot rows: nothing to rank by
            return
        probs = outputs.get("probs") if isinstance(outputs, dict) else None
        if probs is None:
            with torch.no_grad():
                probs = scores(pl_module(images), task)
        thresholds = decision_thresholds(pl_module, probs.shape[1]) if task == MULTILABEL else None
        self.update(images, target, probs, task=task, thresholds=thresholds)

    def _names(self, pl_module: LightningModule) -> Sequence[str] | None:
        if self.class_names is not None:
            return self.class_names
        hparams = getattr(pl_module, "hparams", {})
        return hparams.get("class_names") if hasattr(hparams, "get") else None

    def captions(self, names: Sequence[str] | None) -> list[tuple[tuple[str, str], bool]]:
        """The caption lines of each kept image, worst first, and whether it is a mistake (shown in red)."""

        def label(index: int) -> str:
            return names[index] if names is not None and index < len(names) else str(index)

        result = []
        for item in self._kept:
            if isinstance(item[2], tuple):  # a multi-label entry
                true_set, predicted, wrong = item[2], item[3], item[4]
                true_text = ", ".join(label(c) for c in true_set) or "none"
                pred_text = ", ".join(f"{label(c)} {score:.2f}" for c, score in predicted) or "none"
                result.append(((f"true: {true_text}", f"pred: {pred_text}"), wrong))
            else:
                _loss, _image, true, pred, prob = item
                result.append(((f"true: {label(true)}", f"pred: {label(pred)} ({prob:.2f})"), true != pred))
        return result

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
