"""Calibrated confidence and the "unknown" answer of a multi-class classifier.

Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): one number ``T`` divides
the logits, fitted on the validation split by minimising the negative log-likelihood with L-BFGS. It changes how
sure the model says it is, never which class it picks (``argmax(z / T) == argmax(z)`` for any ``T > 0``).

A reject threshold (``min_confidence``) turns a confident-enough prediction into an answer and anything below into
"unknown". :func:`coverage_threshold` picks it from a target coverage ("answer 95% of the validation images"), and
:func:`risk_coverage` reports the trade-off: the accuracy on the answered images at each coverage.

Both live in :class:`Calibration`, a module whose only state is "extra state" of the ``state_dict`` (as the
multi-label thresholds of :mod:`lightning_cv.models.thresholds`): checkpoints carry them with the weights, while
weight averaging and DDP's buffer broadcast leave them alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "DEFAULT_COVERAGES",
    "UNKNOWN",
    "Calibration",
    "calibration_figures",
    "check_coverage",
    "check_min_confidence",
    "check_temperature",
    "coverage_threshold",
    "fit_temperature",
    "risk_coverage",
]

#: what predict writes instead of a class name below the reject threshold (its class index is -1)
UNKNOWN = "unknown"
#: the coverages the risk-coverage report lists
DEFAULT_COVERAGES = (1.0, 0.95, 0.9, 0.8)
#: how the calibration state records "no reject threshold"
_NO_THRESHOLD = -1.0
#: the range a fitted temperature is kept in: beyond it the logits are all but constant or all but one-hot
_T_RANGE = (1e-2, 1e2)


def check_temperature(value: Any) -> float:
    """``value`` as a float if it is a finite temperature > 0; else a ``ValueError`` naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ValueError(
            f"Expected the temperature to be a finite number > 0 (1 leaves the probabilities as they are), but got "
            f"{value!r}. Fit one with `lightning-cv calibrate --ckpt_path ...`."
        )
    return float(value)


def check_min_confidence(value: Any) -> float | None:
    """``value`` as a float in [0, 1], or ``None`` (answer every image); else a ``ValueError`` naming the fix."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(
            f"Expected `min_confidence` in [0, 1] (a probability: below it the answer is '{UNKNOWN}'), but got "
            f"{value!r}. Or give a target coverage instead, such as `coverage=0.95`."
        )
    return float(value)


def check_coverage(value: Any) -> float:
    """``value`` as a float in (0, 1]; else a ``ValueError`` naming the fix."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
        raise ValueError(
            f"Expected `coverage` in (0, 1] (the share of images to answer, 0.95 for 95%), but got {value!r}."
        )
    return float(value)


def fit_temperature(logits: Tensor, targets: Tensor, max_iter: int = 100) -> float:
    """The temperature ``T`` minimising the mean NLL of ``softmax(logits / T)`` against ``targets``.

    L-BFGS on ``log T`` (so ``T`` stays positive) from ``T = 1``, with a strong-Wolfe line search, in float64.

    Args:
        logits: ``(N, C)`` logits of held-out images (the validation split, never the training one).
        targets: ``(N,)`` class indices.
        max_iter: L-BFGS iterations (the one-parameter problem converges in about ten).

    Raises:
        ValueError: no images, or shapes that do not match.
    """
    if logits.ndim != 2 or targets.ndim != 1 or len(logits) != len(targets) or len(logits) == 0:
        raise ValueError(
            f"Expected (N, C) logits and (N,) class indices with N > 0, but got {tuple(logits.shape)} and "
            f"{tuple(targets.shape)}."
        )
    z = logits.detach().double().cpu()
    y = targets.detach().long().cpu()
    log_t = torch.zeros((), dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS([log_t], lr=1.0, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = F.cross_entropy(z / log_t.exp(), y)
        loss.backward()
        return loss

    optimizer.step(closure)
    low, high = _T_RANGE
    return float(min(max(log_t.detach().exp().item(), low), high))


def calibration_figures(logits: Tensor, targets: Tensor, temperature: float = 1.0, bins: int = 15) -> dict[str, float]:
    """``{"nll", "ece", "accuracy"}`` of ``softmax(logits / temperature)``: what calibration improves, and what not.

    ECE is torchmetrics' top-label expected calibration error with ``bins`` equal-width bins (the ``val_ece`` that
    training logs).
    """
    from torchmetrics.functional.classification import multiclass_calibration_error

    z = logits.detach().double().cpu() / temperature
    y = targets.detach().long().cpu()
    probs = z.softmax(dim=1)
    ece = multiclass_calibration_error(probs.float(), y, num_classes=z.shape[1], n_bins=bins, norm="l1")
    return {
        "nll": float(F.cross_entropy(z, y)),
        "ece": float(ece),
        "accuracy": float((probs.argmax(dim=1) == y).double().mean()),
    }


def coverage_threshold(confidence: Tensor, coverage: float) -> float:
    """The largest ``min_confidence`` that still answers at least ``coverage`` of the images with ``confidence``.

    Images with ``confidence >= threshold`` are answered. With ties at the cut more may be answered, never fewer.
    """
    coverage = check_coverage(coverage)
    values = confidence.detach().flatten().cpu().sort(descending=True).values
    if len(values) == 0:
        raise ValueError("No images to choose a reject threshold on: the validation batches were empty.")
    answered = math.ceil(coverage * len(values) - 1e-9)  # how many must be answered
    # one of the confidences itself, exactly (a float32 or float64 value is a Python float without rounding), so
    # comparing the same confidences with it in their own dtype answers that image
    return float(values[max(answered, 1) - 1])


def risk_coverage(
    confidence: Tensor, correct: Tensor, coverages: Sequence[float] = DEFAULT_COVERAGES
) -> list[dict[str, Any]]:
    """Accuracy on the answered images when only the most confident ``coverage`` share of them is answered.

    Returns one row per coverage: ``coverage`` (the target), ``answered`` (images answered), ``min_confidence``
    (the threshold that answers them), ``accuracy`` (on those images) and ``risk`` (``1 - accuracy``).
    """
    conf = confidence.detach().flatten().double().cpu()
    right = correct.detach().flatten().bool().cpu()
    rows = []
    for coverage in coverages:
        threshold = coverage_threshold(conf, coverage)
        answered = conf >= threshold
        count = int(answered.sum())
        accuracy = float(right[answered].double().mean()) if count else float("nan")
        rows.append(
            {
                "coverage": float(coverage),
                "answered": count,
                "of": len(conf),
                "min_confidence": threshold,
                "accuracy": accuracy,
                "risk": 1.0 - accuracy,
            }
        )
    return rows


class Calibration(nn.Module):
    """A multi-class classifier's calibration: its ``temperature`` and its reject threshold ``min_confidence``.

    Held as extra state of the ``state_dict`` (``calibration._extra_state``: a float64 tensor ``[temperature,
    min_confidence]``, -1 for no threshold), so a checkpoint carries it with the weights. A bare tensor, because the
    ONNX exporter's tracer reads every state value as one; -1 rather than ``nan``, so that a state compares equal to
    itself. A value that is not a valid temperature or threshold is refused when the checkpoint is loaded.
    """

    def __init__(self, temperature: float = 1.0, min_confidence: float | None = None) -> None:
        super().__init__()
        self.temperature = check_temperature(temperature)
        self.min_confidence = check_min_confidence(min_confidence)

    def get_extra_state(self) -> Tensor:
        threshold = _NO_THRESHOLD if self.min_confidence is None else self.min_confidence
        return torch.tensor([self.temperature, threshold], dtype=torch.float64)

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, Tensor) or state.shape != (2,) or not state.is_floating_point():
            found = f"a {state.dtype} tensor of shape {tuple(state.shape)}" if isinstance(state, Tensor) else None
            raise ValueError(
                "Expected the checkpoint's calibration state to be a float tensor [temperature, min_confidence], but "
                f"got {found or type(state).__name__}. Calibrate the model again."
            )
        temperature, threshold = state.tolist()
        none = threshold == _NO_THRESHOLD
        checked = check_temperature(temperature), None if none else check_min_confidence(threshold)
        self.temperature, self.min_confidence = checked  # both checked first: a refused state changes nothing

    @property
    def calibrated(self) -> bool:
        """Whether a temperature other than 1 is set."""
        return self.temperature != 1.0

    def extra_repr(self) -> str:
        return f"temperature={self.temperature:.4g}, min_confidence={self.min_confidence}"
