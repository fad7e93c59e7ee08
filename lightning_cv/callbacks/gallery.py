"""A gallery of validation predictions, worst mistakes first, logged at the end of validation."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import hard_labels, try_split_batch
from lightning_cv.data.config import DataConfig, find_data_config, to_display

__all__ = ["PredictionGallery"]


class PredictionGallery(Callback):
    """Show the validation images the model gets most wrong: image, true class, predicted class and probability.

    The images are ranked by their cross-entropy loss, so confident mistakes come first, then unsure right answers.
    Only ``num_images`` candidates are kept while validation runs, so memory does not grow with the validation set.
    The grid goes to every logger that takes figures (TensorBoard), or as a PNG into the run directory when none
    does. Works with any LightningModule: it uses ``outputs["probs"]`` of ``validation_step`` when given, and
    otherwise runs the module on the batch itself. With several processes each shows its own share (rank zero logs).

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
        self._run_dir: Path | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts across processes: ask on every rank here, never from rank zero alone (it hangs)
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)

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

    def figure(self, mean: Sequence[float] | None, std: Sequence[float] | None, names: Sequence[str] | None) -> Any:
        """The gallery as a matplotlib figure (images un-normalised with ``mean`` and ``std``)."""
        from matplotlib.figure import Figure

        def label(index: int) -> str:
            return names[index] if names is not None and index < len(names) else str(index)

        cols = min(4, len(self._kept))
        rows = -(-len(self._kept) // cols)
        fig = Figure(figsize=(2.6 * cols, 2.9 * rows))
        config = DataConfig(mean=tuple(mean), std=tuple(std)) if mean is not None and std is not None else None
        pictures = to_display(torch.stack([item[1] for item in self._kept]), config)
        for n, (_loss, _image, true, pred, prob) in enumerate(self._kept):
            ax = fig.add_subplot(rows, cols, n + 1)
            ax.imshow(pictures[n])
            ax.set_title(
                f"true: {label(true)}\npred: {label(pred)} ({prob:.2f})",
                fontsize=8,
                color="black" if true == pred else "red",
            )
            ax.axis("off")
        fig.tight_layout()
        return fig

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if not self._due(trainer) or not self._kept:
            return
        config = find_data_config(getattr(trainer, "datamodule", None), pl_module)
        mean, std = (config.mean, config.std) if config is not None else (None, None)
        figure = self.figure(mean, std, self._names(pl_module))
        experiments: list[Any] = [getattr(logger, "experiment", None) for logger in trainer.loggers]
        targets = [e for e in experiments if hasattr(e, "add_figure")]
        for experiment in targets:
            experiment.add_figure("val_worst_predictions", figure, global_step=trainer.global_step)
        if not targets:
            folder = (self._run_dir or Path(trainer.default_root_dir)) / "gallery"
            folder.mkdir(parents=True, exist_ok=True)
            figure.savefig(folder / f"epoch_{trainer.current_epoch:03d}.png")
        self._kept = []
