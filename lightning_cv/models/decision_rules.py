"""How a classifier turns logits into decisions: multi-label thresholds, temperature, reject threshold, TTA.

:class:`DecisionRules` is a mixin of :class:`~lightning_cv.ImageClassifier`: the properties users set and commands
read (``thresholds``, ``temperature``, ``min_confidence``, ``tta``) and :meth:`~DecisionRules.decision_logits`, the
one place evaluation and prediction get their scores from. The state lives in the modules that checkpoints carry
(:class:`~lightning_cv.models.thresholds.DecisionThresholds`, :class:`~lightning_cv.models.calibration.Calibration`);
the scoring is :mod:`lightning_cv.models.scoring`, which exports and the benchmark share.
"""

from __future__ import annotations

from typing import Any, cast

from torch import Tensor

from lightning_cv.models.calibration import check_min_confidence, check_temperature
from lightning_cv.models.scoring import calibrated_logits, check_tta
from lightning_cv.models.thresholds import check_thresholds

__all__ = ["DecisionRules"]


class DecisionRules:
    """The decision settings of an :class:`~lightning_cv.ImageClassifier` (a mixin: it uses the classifier's
    ``_multilabel``, ``decision``, ``calibration``, ``_tta``, ``hparams`` and ``data_config``)."""

    _multilabel: bool
    _tta: str
    decision: Any
    calibration: Any
    hparams: Any
    data_config: Any

    @property
    def thresholds(self) -> Tensor | None:
        """Multi-label decision thresholds ``(C,)`` (a label is answered when its score reaches its threshold);
        ``None`` for a multi-class model. Assigning a number or one per label fixes them: ``fit`` no longer tunes
        them."""
        return self.decision.values if self._multilabel else None

    @thresholds.setter
    def thresholds(self, value: float | list[float] | Tensor) -> None:
        if not self._multilabel:
            raise ValueError("Decision thresholds apply to multi-label models (`task='multilabel'`).")
        values = value.tolist() if isinstance(value, Tensor) else value
        checked = check_thresholds(values, self.hparams["num_classes"])
        if checked is None:
            raise ValueError(
                "Expected thresholds: a number or one per label. To have `fit` tune them again, create the model "
                "with `thresholds=None`."
            )
        self.decision.values = checked
        # fixed from now on, like thresholds given to the constructor: `fit` no longer tunes them, and checkpoints
        # record them
        self.hparams["thresholds"] = checked.tolist()

    @property
    def temperature(self) -> float:
        """The temperature that divides the logits before softmax (1: uncalibrated); multi-class models only.

        Set by ``lightning-cv calibrate`` (:func:`lightning_cv.deploy.calibrate.calibrate`) and saved in checkpoints;
        validation, test, predict, export and benchmark use the calibrated probabilities. ``forward`` (and so
        training) keeps the raw logits."""
        return self.calibration.temperature if not self._multilabel else 1.0

    @temperature.setter
    def temperature(self, value: float) -> None:
        if self._multilabel:
            raise ValueError(
                "Temperature scaling applies to multi-class models; a multi-label model's decisions are its "
                "per-label `thresholds`, tuned on the validation split."
            )
        self.calibration.temperature = check_temperature(value)

    @property
    def min_confidence(self) -> float | None:
        """The reject threshold: a multi-class prediction whose (calibrated) probability is below it is answered
        ``"unknown"`` (class index -1) by ``predict_step``; ``None`` answers every image. Saved in checkpoints."""
        return self.calibration.min_confidence if not self._multilabel else None

    @min_confidence.setter
    def min_confidence(self, value: float | None) -> None:
        if self._multilabel and value is not None:
            raise ValueError(
                "`min_confidence` applies to multi-class models; a multi-label model already answers an empty set "
                "when no label reaches its threshold."
            )
        if not self._multilabel:
            self.calibration.min_confidence = check_min_confidence(value)

    @property
    def tta(self) -> str:
        """Test-time augmentation of validation, test and predict: ``"none"``, ``"flip"`` or ``"flip_crops"``
        (see :mod:`lightning_cv.models.scoring`); not saved in checkpoints (it is a choice of how to run)."""
        return self._tta

    @tta.setter
    def tta(self, mode: str) -> None:
        self._tta = check_tta(mode, self.data_config.input_size)

    def decision_logits(self, images: Tensor) -> Tensor:
        """The logits decisions are made on: divided by the temperature, averaged over the TTA views (float32)."""
        task = "multilabel" if self._multilabel else "multiclass"
        return calibrated_logits(cast(Any, self), images, task=task, temperature=self.temperature, tta=self._tta)
