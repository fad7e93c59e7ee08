"""Calibrate a trained multi-class classifier: fit its temperature, choose its reject threshold, save both.

The Python side of ``lightning-cv calibrate`` (and of ``lightning-cv fit --calibrate true``):

>>> report = calibrate(model, datamodule.eval_dataloader("val"), datamodule.eval_dataloader("test"))  # doctest: +SKIP
>>> print(report.summary())  # doctest: +SKIP
>>> save_calibrated_checkpoint("best.ckpt", "best.calibrated.ckpt", model)  # doctest: +SKIP

The temperature is fitted on the validation split (:func:`lightning_cv.models.calibration.fit_temperature`, the
method of Guo et al., ICML 2017) and judged on the test split: NLL and ECE before and after, accuracy unchanged.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lightning_cv.models.calibration import (
    calibration_figures,
    check_coverage,
    check_min_confidence,
    coverage_threshold,
    fit_temperature,
    risk_coverage,
)

__all__ = ["CalibrationReport", "calibrate", "collect_logits", "reject_threshold", "save_calibrated_checkpoint"]


@dataclass
class CalibrationReport:
    """What calibration found and what it changed, measured on held-out images."""

    temperature: float
    #: the reject threshold set (``None``: every image answered)
    min_confidence: float | None
    #: the target coverage the threshold was chosen for (``None`` when given directly or not at all)
    coverage: float | None
    #: the split the before/after figures are measured on: "test", or "validation" when there is no test split
    split: str
    validation_images: int
    evaluation_images: int
    #: ``{"nll", "ece", "accuracy"}`` of the uncalibrated and the calibrated probabilities on ``split``
    before: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    #: accuracy when answering the most confident 100/95/90/80% of ``split`` (calibrated probabilities)
    risk_coverage: list[dict[str, Any]] = field(default_factory=list)
    #: the (probabilities before, probabilities after, targets) on ``split``, for the reliability diagram
    evaluation: tuple[Tensor, Tensor, Tensor] | None = field(default=None, repr=False)

    def rows(self) -> list[dict[str, Any]]:
        """The before/after table: one row per figure."""
        return [
            {"figure": name, "uncalibrated": self.before[key], "calibrated": self.after[key]}
            for key, name in (("nll", "NLL"), ("ece", "ECE"), ("accuracy", "accuracy"))
        ]

    def summary(self) -> str:
        verdict = "T > 1: the model was over-confident" if self.temperature > 1 else "T <= 1: not over-confident"
        lines = [
            f"Temperature {self.temperature:.4f}, fitted on {self.validation_images} validation images ({verdict}).",
            f"On {self.evaluation_images} {self.split} images:  NLL {self.before['nll']:.4f} -> {self.after['nll']:.4f}"
            f"   ECE {self.before['ece']:.4f} -> {self.after['ece']:.4f}"
            f"   accuracy {self.before['accuracy']:.2%} -> {self.after['accuracy']:.2%} (unchanged by design)",
        ]
        if self.min_confidence is not None:
            why = f" (answers {self.coverage:.0%} of the validation images)" if self.coverage is not None else ""
            lines.append(f"Reject threshold min_confidence={self.min_confidence:.4f}{why}: below it, 'unknown'.")
        for row in self.risk_coverage:
            lines.append(
                f"  coverage {row['coverage']:>4.0%}: {row['answered']}/{row['of']} answered, accuracy "
                f"{row['accuracy']:.2%} (min_confidence {row['min_confidence']:.4f})"
            )
        return "\n".join(lines)


@torch.no_grad()
def collect_logits(
    model: Any, batches: Iterable[Any], device: str | torch.device | None = None
) -> tuple[Tensor, Tensor]:
    """The raw logits of ``model`` (``forward``, no temperature) and the class indices of ``(images, labels)``
    batches, on the CPU in float32; the model is put in eval mode."""
    model.eval()
    device = torch.device(device) if device is not None else next(model.parameters()).device
    logits, targets = [], []
    for batch in batches:
        images, labels = batch[0], batch[1]
        logits.append(model(images.to(device)).float().cpu())
        targets.append(labels.cpu())
    if not logits:
        raise ValueError("No images to calibrate on: the batches were empty.")
    target = torch.cat(targets)
    if target.ndim != 1:
        raise ValueError(
            f"Expected class indices (N,) as labels, but got shape {tuple(target.shape)}: temperature scaling is "
            "for multi-class models."
        )
    return torch.cat(logits), target.long()


def calibrate(
    model: Any,
    validation: Iterable[Any],
    evaluation: Iterable[Any] | None = None,
    *,
    coverage: float | None = None,
    min_confidence: float | None = None,
    bins: int = 15,
) -> CalibrationReport:
    """Fit ``model``'s temperature on ``validation`` and set it (and a reject threshold, if asked) on the model.

    Args:
        model: a multi-class :class:`~lightning_cv.ImageClassifier` (anything with ``temperature`` and
            ``min_confidence`` attributes and a ``forward`` that returns logits).
        validation: ``(images, labels)`` batches the temperature is fitted on (the validation split).
        evaluation: batches the before/after figures are measured on (the test split); ``None``: ``validation``.
        coverage: choose ``min_confidence`` so that this share of the validation images is answered (0.95).
        min_confidence: the reject threshold itself (exclusive with ``coverage``); neither: none is set.
        bins: bins of the expected calibration error.

    Raises:
        ValueError: a multi-label model, both ``coverage`` and ``min_confidence``, values out of range, no images.
    """
    if (getattr(model, "hparams", None) or {}).get("task") == "multilabel":
        raise ValueError(
            "Temperature calibration is for multi-class models; a multi-label model's decisions are its per-label "
            "`thresholds`, tuned on the validation split during fit."
        )
    if coverage is not None and min_confidence is not None:
        raise ValueError("Give `coverage` or `min_confidence`, not both: each sets the reject threshold.")
    if coverage is not None:
        check_coverage(coverage)
    check_min_confidence(min_confidence)
    val_logits, val_targets = collect_logits(model, validation)
    temperature = fit_temperature(val_logits, val_targets)
    if coverage is not None:
        min_confidence = coverage_threshold((val_logits / temperature).softmax(dim=1).max(dim=1).values, coverage)
    split = "test" if evaluation is not None else "validation"
    logits, targets = (val_logits, val_targets) if evaluation is None else collect_logits(model, evaluation)
    before = calibration_figures(logits, targets, 1.0, bins)
    after = calibration_figures(logits, targets, temperature, bins)
    calibrated = (logits.double() / temperature).softmax(dim=1)
    confidence, predicted = calibrated.max(dim=1)
    model.temperature = temperature
    model.min_confidence = min_confidence
    return CalibrationReport(
        temperature=temperature,
        min_confidence=min_confidence,
        coverage=coverage,
        split=split,
        validation_images=len(val_targets),
        evaluation_images=len(targets),
        before=before,
        after=after,
        risk_coverage=risk_coverage(confidence, predicted == targets),
        evaluation=(logits.softmax(dim=1), calibrated.float(), targets),
    )


def save_calibrated_checkpoint(
    source: str | os.PathLike[str], target: str | os.PathLike[str], model: Any, *, overwrite: bool = False
) -> Path:
    """Write ``source`` to ``target`` with ``model``'s temperature and reject threshold in place of its own.

    Everything else (weights, EMA average, optimizer and loop state, settings) is copied unchanged, so the new file
    resumes, tests, predicts and exports like the old one. The file is written to a temporary name and renamed, so
    an interrupted write never leaves a cut checkpoint under ``target``.

    Raises:
        ValueError: ``target`` is ``source`` (or exists) and ``overwrite`` is not set.
    """
    from lightning_cv.models.checkpoint import read_checkpoint

    src, dst = Path(source), Path(target)
    if dst.suffix != ".ckpt":
        raise ValueError(f"Expected the calibrated checkpoint's name to end in .ckpt, but got '{dst}'.")
    if dst.exists() and not overwrite:
        same = dst.resolve() == src.resolve()
        what = "is the checkpoint being calibrated" if same else "exists"
        raise ValueError(
            f"'{dst}' {what}; nothing was written. Pass another `--output`, or `--overwrite` to replace it."
        )
    checkpoint = read_checkpoint(src)
    state = dict(checkpoint["state_dict"])
    state["calibration._extra_state"] = model.calibration.get_extra_state()
    checkpoint["state_dict"] = state
    dst.parent.mkdir(parents=True, exist_ok=True)
    scratch = dst.with_name(f".{dst.name}.partial")
    torch.save(checkpoint, scratch)
    os.replace(scratch, dst)
    return dst


@torch.no_grad()
def reject_threshold(model: Any, batches: Iterable[Any], coverage: float) -> float:
    """The ``min_confidence`` at which ``model`` answers ``coverage`` of the images in ``batches`` (validation).

    Confidences are the model's decision probabilities (its temperature and test-time augmentation applied,
    ``ImageClassifier.decision_logits``), the ones predict compares with the threshold.
    """
    check_coverage(coverage)
    model.eval()
    device = next(model.parameters()).device
    confidence = [
        model.decision_logits(batch[0].to(device)).softmax(dim=1).max(dim=1).values.cpu() for batch in batches
    ]
    if not confidence:
        raise ValueError("No images to choose the reject threshold on: the validation batches were empty.")
    return coverage_threshold(torch.cat(confidence), coverage)
