"""Classification metrics (torchmetrics) and the confusion-matrix figure."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["build_metrics", "confusion_matrix_figure", "effective_top_k"]


def effective_top_k(top_k: int, num_classes: int) -> int:
    """``top_k`` capped at ``num_classes - 1``: top-``num_classes`` accuracy is always 1 and says nothing."""
    return min(top_k, num_classes - 1)


def build_metrics(
    num_classes: int, *, top_k: int = 5, calibration_bins: int = 15, prefix: str = ""
) -> MetricCollection:
    """Top-1 (and top-k) accuracy, macro precision/recall/F1 and expected calibration error, synced under DDP."""
    metrics: dict[str, Any] = {
        "acc": MulticlassAccuracy(num_classes, top_k=1, average="micro"),
        "precision": MulticlassPrecision(num_classes, average="macro"),
        "recall": MulticlassRecall(num_classes, average="macro"),
        "f1": MulticlassF1Score(num_classes, average="macro"),
        "ece": MulticlassCalibrationError(num_classes, n_bins=calibration_bins, norm="l1"),
    }
    k = effective_top_k(top_k, num_classes)
    if k > 1:
        metrics[f"acc_top{k}"] = MulticlassAccuracy(num_classes, top_k=k, average="micro")
    # Explicit compute groups: torchmetrics' automatic detection merges metrics whose states happen to be equal
    # after the first batch (e.g. top-1 and top-k accuracy of a model that predicts one class), then reports one
    # metric's value for the other.
    return MetricCollection(metrics, prefix=prefix, compute_groups=[["precision", "recall", "f1"]])


def confusion_matrix_figure(matrix: Tensor, class_names: Sequence[str] | None = None) -> Figure:
    """A matplotlib figure of a confusion matrix (rows: true class, columns: predicted), counts in the cells."""
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError("Plotting the confusion matrix needs matplotlib: pip install matplotlib") from err
    counts = matrix.detach().cpu().to(torch.int64)
    n = counts.shape[0]
    names = list(class_names) if class_names is not None else [str(i) for i in range(n)]
    size = min(2.0 + 0.45 * n, 20.0)
    # a bare Figure (no pyplot) keeps no global state, so figures logged every epoch are freed
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(counts.numpy(), cmap="Blues")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_xticks(range(n), names, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), names)
    if n <= 30:
        high = counts.max().item() / 2 if counts.numel() else 0
        for i in range(n):
            for j in range(n):
                value = int(counts[i, j])
                ax.text(j, i, str(value), ha="center", va="center", color="white" if value > high else "black")
    fig.tight_layout()
    return fig
