"""Log Grad-CAM overlays of a fixed set of validation images every few epochs, for any LightningModule."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from PIL import Image
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import (
    MULTILABEL,
    decision_thresholds,
    hard_labels,
    label_sets,
    predicted_sets,
    task_of,
    try_split_batch,
)
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

    A multi-label module (``hparams["task"] == "multilabel"``) has no single class to explain, so each image gets a
    tile of several overlays, one per label: with ``target="predicted"`` every label at or above the module's
    decision threshold (the top-scoring label when none is), with ``target="true"`` every true label (an image
    without one is shown without a heatmap), highest score first and at most ``max_labels`` of them. Each overlay
    names its label with its score, and whether that label is predicted and true. ``target_class`` explains one
    chosen class or label in every image instead, for either task: "where does the model see a dog, whatever it
    predicts".

    Args:
        every_n_epochs: log every this many epochs.
        num_images: how many validation images to explain.
        target_layer: module name, e.g. ``"model.layer4"``; ``None`` finds it.
        target: explain the ``"predicted"`` or the ``"true"`` class (labels, for a multi-label module).
        alpha: heatmap opacity in the overlay.
        target_class: explain this class index in every image, whatever ``target`` says; ``None`` follows
            ``target``.
        max_labels: at most this many overlays per image of a multi-label module.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        num_images: int = 8,
        target_layer: str | None = None,
        target: Literal["predicted", "true"] = "predicted",
        alpha: float = 0.5,
        target_class: int | None = None,
        max_labels: int = 3,
    ) -> None:
        if every_n_epochs < 1 or num_images < 1:
            raise ValueError(f"Expected `every_n_epochs` and `num_images` >= 1, got {every_n_epochs}, {num_images}.")
        if target not in ("predicted", "true"):
            raise ValueError(f"Expected `target` 'predicted' or 'true', but got {target!r}.")
        if target_class is not None and (isinstance(target_class, bool) or not isinstance(target_class, int)):
            raise TypeError(f"Expected `target_class` to be a class index (int) or None, but got {target_class!r}.")
        if target_class is not None and target_class < 0:
            raise ValueError(f"Expected `target_class` >= 0, but got {target_class}.")
        if max_labels < 1:
            raise ValueError(f"Expected `max_labels` >= 1, but got {max_labels}.")
        self.every_n_epochs = every_n_epochs
        self.num_images = num_images
        self.target_layer = target_layer
        self.target = target
        self.alpha = alpha
        self.target_class = target_class
        self.max_labels = max_labels
        self._images: Tensor | None = None
        # class indices (N,), or for a multi-label module the true label sets, boolean (N, C)
        self._labels: Tensor | None = None
        #: the heatmaps of the last logging round in the order they are shown: ``(N, H, W)`` in [0, 1], one per
        #: image, or for a multi-label module one per explained label (see :attr:`last_targets`)
        self.last_cams: Tensor | None = None
        #: ``(image, class)`` index pairs, one per heatmap in :attr:`last_cams` (multi-label modules and
        #: ``target_class``; ``None`` when the model chose the predicted class itself)
        self.last_targets: list[tuple[int, int]] | None = None

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
        multilabel = task_of(pl_module) == MULTILABEL
        if multilabel and parts[1].ndim != 2:  # not multi-hot rows
            return
        images = parts[0][: self.num_images - have].detach().cpu()
        targets = parts[1][: self.num_images - have].detach().cpu()
        labels = label_sets(targets) if multilabel else hard_labels(targets)
        self._images = images if self._images is None else torch.cat([self._images, images])
        self._labels = labels if self._labels is None else torch.cat([self._labels, labels])

    def _due(self, trainer: Trainer) -> bool:
        return (
            trainer.is_global_zero
            and not trainer.sanity_checking
            and self._images is not None
            and (trainer.current_epoch + 1) % self.every_n_epochs == 0
        )

    def _targets(self, probs: Tensor, thresholds: Tensor) -> list[tuple[int, int]]:
        """The ``(image, class)`` pairs to explain (``target_class``, or a multi-label module), in display order."""
        assert self._labels is not None
        if self.target_class is not None:
            if self.target_class >= probs.shape[1]:
                raise ValueError(
                    f"Expected `target_class` < {probs.shape[1]} (the model's number of classes), "
                    f"but got {self.target_class}."
                )
            return [(i, self.target_class) for i in range(probs.shape[0])]
        chosen = self._labels.bool() if self.target == "true" else predicted_sets(probs, thresholds)
        pairs: list[tuple[int, int]] = []
        for i in range(probs.shape[0]):
            labels = chosen[i].nonzero().flatten()
            if labels.numel() == 0 and self.target == "predicted":
                labels = probs[i].argmax().view(1)  # nothing reaches its threshold: the closest call
            ranked = labels[probs[i, labels].argsort(descending=True, stable=True)][: self.max_labels]
            pairs.extend((i, int(c)) for c in ranked)
        return pairs

    def explain(self, trainer: Trainer, pl_module: LightningModule) -> Tensor | None:
        """Compute the heatmaps of the kept images now (rank zero); ``None`` before any validation batch."""
        if self._images is None or self._labels is None:
            return None
        cam = GradCAM(pl_module, self.target_layer)
        if task_of(pl_module) != MULTILABEL and self.target_class is None:
            target = self._labels if self.target == "true" else None
            self.last_targets = None
            self.last_cams = cam.generate_cam(self._images, target_class=target)
            return self.last_cams
        probs = class_probabilities(pl_module, self._images)
        self.last_targets = self._targets(probs, decision_thresholds(pl_module, probs.shape[1]))
        if not self.last_targets:  # target="true" and no kept image has a true label
            self.last_cams = torch.zeros(0, *self._images.shape[-2:])
            return self.last_cams
        images = self._images[[i for i, _ in self.last_targets]]
        classes = torch.tensor([c for _, c in self.last_targets])
        self.last_cams = cam.generate_cam(images, target_class=classes)
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
        """One overlay per kept image: its heatmap in ``cams`` over it, predicted and true class (probability) above.

        For a multi-label module, or with ``target_class``, use :meth:`label_panels`, which can give an image
        several overlays.
        """
        assert self._images is not None and self._labels is not None
        probs = class_probabilities(pl_module, self._images)
        confidence, predicted = probs.max(dim=1)

        result = []
        for i, picture in enumerate(to_display(self._images, config)):
            pred, true = int(predicted[i]), int(self._labels[i])
            lines = (
                f"pred: {_name(names, pred)} ({float(confidence[i]):.1%})",
                f"true: {_name(names, true)} ({float(probs[i, true]):.1%})",
            )
            result.append(panel(picture, cams[i], self.alpha, lines))
        return result

    def label_panels(
        self, pl_module: LightningModule, cams: Tensor, config: DataConfig | None, names: Sequence[str] | None
    ) -> list[list[Image.Image]]:
        """The overlays of each kept image, one per explained label in :attr:`last_targets` (the ``cams`` in order).

        Each names its label with its score and says whether the label is predicted and true; a multi-class
        module's overlay (``target_class``) adds its predicted and true class. An image with nothing to explain
        (``target="true"`` and no true label) gets its picture without a heatmap.
        """
        assert self._images is not None and self._labels is not None and self.last_targets is not None
        probs = class_probabilities(pl_module, self._images)
        multilabel = task_of(pl_module) == MULTILABEL
        chosen = predicted_sets(probs, decision_thresholds(pl_module, probs.shape[1]))  # multi-label decisions
        pictures = to_display(self._images, config)
        result: list[list[Image.Image]] = [[] for _ in range(len(pictures))]
        for cam, (i, c) in zip(cams, self.last_targets, strict=True):
            explained = f"{_name(names, c)} ({float(probs[i, c]):.1%})"
            if multilabel:
                state = f"pred: {'yes' if chosen[i, c] else 'no'}, true: {'yes' if self._labels[i, c] else 'no'}"
                lines: tuple[str, ...] = (explained, state)
            else:
                pred, true = int(probs[i].argmax()), int(self._labels[i])
                lines = (explained, f"pred: {_name(names, pred)}, true: {_name(names, true)}")
            result[i].append(panel(pictures[i], cam, self.alpha, lines))
        for i, overlays in enumerate(result):
            if not overlays:
                result[i] = [panel(pictures[i], torch.zeros(self._images.shape[-2:]), 0.0, ("no true label", ""))]
        return result

    def sheet(
        self, pl_module: LightningModule, cams: Tensor, config: DataConfig | None, names: Sequence[str] | None
    ) -> Image.Image:
        """The overlays on one contact sheet: a tile per image, named by what its heatmaps explain."""
        if self.last_targets is None:  # multi-class, the predicted or true class of each image
            explained = "true class" if self.target == "true" else "predicted class"
            tiles = [
                (f"#{i + 1} Grad-CAM of the {explained}", [p])
                for i, p in enumerate(self.panels(pl_module, cams, config, names))
            ]
            return contact_sheet(tiles)
        if self.target_class is not None:
            explained = _name(names, self.target_class)
        else:
            explained = "the true labels" if self.target == "true" else "the predicted labels"
        overlays = self.label_panels(pl_module, cams, config, names)
        # tiles of different widths: interpret's contact_sheet leaves the unused slots of the narrower ones blank
        return contact_sheet([(f"#{i + 1} Grad-CAM of {explained}", p) for i, p in enumerate(overlays)])


def _name(names: Sequence[str] | None, index: int) -> str:
    return names[index] if names is not None and index < len(names) else f"class {index}"
