"""``--tta``, ``--predict.min_confidence``, ``--predict.coverage``: how validate, test and predict decide.

Applied by a callback when the loop starts, after the Trainer has restored the checkpoint (whose own temperature and
reject threshold would otherwise replace what the command line asked for).
"""

from __future__ import annotations

from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_cv.models.calibration import check_coverage, check_min_confidence
from lightning_cv.models.scoring import check_tta

__all__ = ["DecisionOptions"]


class DecisionOptions(Callback):
    """Set an :class:`~lightning_cv.ImageClassifier`'s ``tta`` and, for predict, its reject threshold.

    Args:
        tta: ``"none"``, ``"flip"`` or ``"flip_crops"`` for validation, test and predict (``None``: leave it).
        min_confidence: predict answers "unknown" below this probability (``None``: the checkpoint's, if any).
        coverage: instead, the threshold that answers this share of the validation images, computed when predict
            starts with the model's temperature and ``tta``.
    """

    def __init__(
        self, tta: str | None = None, min_confidence: float | None = None, coverage: float | None = None
    ) -> None:
        if min_confidence is not None and coverage is not None:
            raise ValueError(
                "Give `--predict.min_confidence` or `--predict.coverage`, not both: each sets the reject threshold."
            )
        self.tta = check_tta(tta) if tta is not None else None
        self.min_confidence = check_min_confidence(min_confidence)
        self.coverage = check_coverage(coverage) if coverage is not None else None

    def _set_tta(self, pl_module: LightningModule) -> None:
        if self.tta is not None:
            pl_module.tta = self.tta  # type: ignore[assignment]

    def on_validation_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.state.fn != "fit":  # the validation rounds of fit rank checkpoints: as the model is, no TTA
            self._set_tta(pl_module)

    def on_test_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._set_tta(pl_module)

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._set_tta(pl_module)
        if self.min_confidence is not None:
            pl_module.min_confidence = self.min_confidence  # type: ignore[assignment]
        elif self.coverage is not None:
            pl_module.min_confidence = self._threshold(trainer, pl_module)  # type: ignore[assignment]
        threshold = getattr(pl_module, "min_confidence", None)
        if threshold is not None:
            rank_zero_info(f"Reject threshold min_confidence={threshold:.4f}: below it, predictions are 'unknown'.")

    def _threshold(self, trainer: Trainer, pl_module: LightningModule) -> float:
        from lightning_cv.deploy.calibrate import reject_threshold

        data: Any = trainer.datamodule  # type: ignore[attr-defined]
        if data is None or not hasattr(data, "eval_dataloader"):
            raise ValueError(
                "`--predict.coverage` chooses the threshold on the validation split, which needs an ImageDataModule; "
                "give `--predict.min_confidence` instead."
            )
        data.setup("validate")
        try:
            loader = data.eval_dataloader("val")
        except ValueError as err:
            raise ValueError(
                "`--predict.coverage` chooses the threshold on the validation split, and this data has none: pass "
                "the training data settings (`--data.data_dir`, `--data.val_split`) or `--predict.min_confidence`."
            ) from err
        assert self.coverage is not None
        threshold = reject_threshold(pl_module, loader, self.coverage)
        rank_zero_info(
            f"--predict.coverage {self.coverage:.0%}: min_confidence {threshold:.4f} on the validation split."
        )
        return threshold
