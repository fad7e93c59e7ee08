"""Exponential moving average (EMA) of the weights, for any LightningModule."""

from __future__ import annotations

import itertools
from typing import Any

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor, nn
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
from lightning_cv.resume.keys import EMA_KEY

__all__ = ["EMA", "EMA_CHECKPOINT_KEY", "ema_decay"]

#: top-level checkpoint key holding the averaged weights (the checkpoint's ``state_dict`` keeps the raw ones)
EMA_CHECKPOINT_KEY = EMA_KEY


def ema_decay(num_updates: int, decay: float, warmup: bool = True, power: float = 2 / 3) -> float:
    """The decay of update ``num_updates`` (0-based): timm ``ModelEmaV3``'s warm-up ``1 - (1 + n) ** -power``.

    Without warm-up the average of the first steps is dominated by the random initial weights (0.9998 keeps 99.8%
    of them after ten steps); with it the early decay is small and grows towards ``decay``.
    """
    if not warmup:
        return decay
    return min(decay, 1.0 - (1.0 + num_updates) ** -power)


def _state(module: nn.Module) -> dict[str, Tensor]:
    return dict(itertools.chain(module.named_parameters(), module.named_buffers()))


class EMA(Callback):
    """Keep an exponential moving average of the weights; validate, test and finish with it.

    Written on its own rather than on Lightning's ``EMAWeightAveraging`` because that one has no decay warm-up,
    averages integer buffers such as BatchNorm's ``num_batches_tracked``, validates the untrained copy before the
    first update, cannot report the raw model beside the average, and stores the average as the checkpoint's
    ``state_dict``, so resuming without the callback silently continues training from the average.

    Here the checkpoint's ``state_dict`` holds the raw weights (resuming with or without the callback continues the
    real training) and ``checkpoint["ema_state_dict"]`` the average, which the callback restores on resume.
    ``ImageClassifier`` loads the average whenever it is not resuming a fit (``load_from_checkpoint``,
    ``Trainer.test``), and ``ONNXExport`` exports it. Validation and test see the averaged weights (after the first
    update), ``log_raw_metrics`` adds the raw model's ``val_loss_raw`` and ``val_acc_raw`` for classifiers (as timm's
    ``train.py`` reports both); point ``ModelCheckpoint``/``EarlyStopping`` at ``val_acc`` (average) or
    ``val_acc_raw`` (raw) to choose which drives them. At the end of training the module holds the average.

    For a multi-label module (``hparams["task"] == "multilabel"``) the raw metrics are ``val_loss_raw``, the binary
    cross-entropy averaged over every label of every image (``BCEWithLogitsLoss``'s default mean), and
    ``val_hamming_raw``, the fraction of wrong label decisions (a label counts as predicted at or above the module's
    decision threshold, see :func:`lightning_cv.data.batch.decision_thresholds`; a target of 0.5 or more as true);
    lower is better for both. There is no ``val_acc_raw``: an accuracy of label decisions is mostly the easy
    "absent" labels, and an exact-set accuracy is too harsh to steer by.

    Args:
        decay: the EMA decay; 0.999-0.9999 for runs of thousands of steps.
        warmup: ramp the decay up over the first updates (timm's ModelEmaV3 warm-up).
        update_every_n_steps: update after every this many optimizer steps.
        cpu_offload: keep the average on the CPU to save accelerator memory (updates get slower).
        log_raw_metrics: also validate the raw weights (classification: logits and integer or soft targets, or
            multi-hot targets for a multi-label module).
    """

    def __init__(
        self,
        decay: float = 0.9998,
        warmup: bool = True,
        update_every_n_steps: int = 1,
        cpu_offload: bool = False,
        log_raw_metrics: bool = False,
    ) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"Expected `decay` in (0, 1), but got {decay}.")
        if update_every_n_steps < 1:
            raise ValueError(f"Expected `update_every_n_steps` >= 1, but got {update_every_n_steps}.")
        self.decay = decay
        self.warmup = warmup
        self.update_every_n_steps = update_every_n_steps
        self.cpu_offload = cpu_offload
        self.log_raw_metrics = log_raw_metrics
        self.num_updates = 0
        self._ema: dict[str, Tensor] | None = None
        self._last_step = -1
        self._swapped = False
        self._finished = False
        self._owner: int | None = None
        self._raw_sums: list[float] = [0.0, 0.0, 0.0]  # loss, correct (multi-label: wrong), count (of decisions)
        self._raw_task: str | None = None

    # ------------------------------------------------------------------ the average
    @property
    def average(self) -> dict[str, Tensor] | None:
        """The averaged parameters and buffers by name (``None`` before ``fit``)."""
        return None if self._ema is None or self._swapped else self._ema

    def _init(self, pl_module: LightningModule) -> None:
        device = torch.device("cpu") if self.cpu_offload else None
        self._ema = {name: t.detach().clone().to(device or t.device) for name, t in _state(pl_module).items()}

    @torch.no_grad()
    def update(self, pl_module: LightningModule) -> None:
        """Fold the module's current weights into the average."""
        assert self._ema is not None
        decay = ema_decay(self.num_updates, self.decay, self.warmup)
        for name, tensor in _state(pl_module).items():
            average = self._ema[name]
            if average.dtype.is_floating_point:
                average.lerp_(tensor.detach().to(average.device, average.dtype), 1.0 - decay)
            else:  # counters such as num_batches_tracked are copied, not averaged
                average.copy_(tensor.detach())
        self.num_updates += 1

    @torch.no_grad()
    def _swap(self, pl_module: LightningModule) -> None:
        assert self._ema is not None
        for name, tensor in _state(pl_module).items():
            average = self._ema[name]
            held = tensor.detach().clone()
            tensor.data.copy_(average.to(tensor.device, tensor.dtype))
            average.copy_(held.to(average.device, average.dtype))
        self._swapped = not self._swapped

    # ------------------------------------------------------------------ hooks
    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if stage == "fit":
            if self._owner is not None and self._owner != id(pl_module):
                # the callback is reused for another model (k-fold, sweeps): start a fresh average
                self._ema, self.num_updates, self._last_step, self._swapped = None, 0, -1, False
            elif self._swapped:  # fit again after a finished fit: train on from the raw weights
                self._swap(pl_module)
            self._owner = id(pl_module)
            self._finished = False
            if self._ema is None:
                self._init(pl_module)
            if any(getattr(c, "save_weights_only", False) for c in trainer.checkpoint_callbacks):
                rank_zero_warn(
                    "EMA: a ModelCheckpoint has `save_weights_only=True`; Lightning then skips callbacks' checkpoint "
                    "hooks, so its files hold only the raw weights and no average. Use `save_weights_only=False`."
                )

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # setup() ran before the strategy moved the module to its device: follow it (the average stays float32)
        if self._ema is not None and not self.cpu_offload:
            self._ema = {name: t.to(pl_module.device) for name, t in self._ema.items()}

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        step = trainer.global_step
        if step != self._last_step and step > 0 and step % self.update_every_n_steps == 0:
            self.update(pl_module)
            self._last_step = step

    @override
    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._raw_sums = [0.0, 0.0, 0.0]
        self._raw_task = task_of(pl_module)
        if self._ema is not None and self.num_updates > 0 and not self._swapped:
            self._swap(pl_module)  # before the first update the average is the untrained copy: validate raw

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
        parts = try_split_batch(batch) if self.log_raw_metrics else None
        if parts is None or parts[1] is None:  # not asked for, or a batch without targets
            return
        images, target = parts[0], parts[1]
        with torch.no_grad():
            if self._swapped and self._ema is not None:  # the raw weights are here while the module holds the average
                raw = {name: self._ema[name].to(t.device, t.dtype) for name, t in _state(pl_module).items()}
                logits = torch.func.functional_call(pl_module, raw, (images,)).float()
            else:  # no update yet: the module holds the raw weights itself
                logits = pl_module(images).float()
        if self._raw_task == MULTILABEL:
            self._add_label_sets(pl_module, logits, target)
            return
        labels = hard_labels(target)
        self._raw_sums[0] += float(F.cross_entropy(logits, labels, reduction="sum"))
        self._raw_sums[1] += float((logits.argmax(dim=1) == labels).sum())
        self._raw_sums[2] += labels.shape[0]

    def _add_label_sets(self, pl_module: LightningModule, logits: Tensor, target: Tensor) -> None:
        if target.shape != logits.shape:  # not multi-hot rows for these logits: nothing to measure
            return
        target = target.float()
        thresholds = decision_thresholds(pl_module, logits.shape[1])
        wrong = predicted_sets(logits.sigmoid(), thresholds) != label_sets(target)
        self._raw_sums[0] += float(F.binary_cross_entropy_with_logits(logits, target, reduction="sum"))
        self._raw_sums[1] += float(wrong.sum())
        self._raw_sums[2] += target.numel()

    @override
    def on_validation_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self.log_raw_metrics and self._raw_sums[2] > 0:
            count = self._raw_sums[2]
            pl_module.log("val_loss_raw", self._raw_sums[0] / count, sync_dist=True, reduce_fx="mean")
            name = "val_hamming_raw" if self._raw_task == MULTILABEL else "val_acc_raw"
            pl_module.log(name, self._raw_sums[1] / count, sync_dist=True, reduce_fx="mean")

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._swapped and trainer.state.fn == "fit":
            self._swap(pl_module)  # back to the raw weights before training goes on

    @override
    def on_test_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._ema is not None and self.num_updates > 0 and not self._swapped and not self._finished:
            self._swap(pl_module)

    @override
    def on_test_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._swapped and not self._finished:
            self._swap(pl_module)

    @override
    def on_train_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if self._ema is not None and self.num_updates > 0:
            if not self._swapped:
                self._swap(pl_module)  # the module keeps the average; the raw weights stay here for checkpoints
            self._finished = True
            rank_zero_info(f"EMA: the module now holds the average of {self.num_updates} updates.")

    @override
    def on_save_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        if self._ema is None:
            return
        state = checkpoint["state_dict"]
        if self._swapped:  # while validating or after training the module holds the average, _ema the raw weights
            raw = {name: t.detach().cpu().clone() for name, t in self._ema.items() if name in state}
            average = {name: t.detach().cpu().clone() for name, t in _state(pl_module).items() if name in state}
            checkpoint["state_dict"] = {**state, **raw}
        else:
            average = {name: t.detach().cpu().clone() for name, t in self._ema.items() if name in state}
        checkpoint[EMA_CHECKPOINT_KEY] = average

    @override
    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        average = checkpoint.get(EMA_CHECKPOINT_KEY)
        if average is None:
            return
        if self._ema is None:
            self._init(pl_module)
        assert self._ema is not None
        for name, tensor in average.items():
            if name in self._ema:
                self._ema[name].copy_(tensor)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"num_updates": self.num_updates, "last_step": self._last_step}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.num_updates = int(state_dict.get("num_updates", 0))
        self._last_step = int(state_dict.get("last_step", -1))
