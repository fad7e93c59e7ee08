"""Classification metrics (torchmetrics), the per-class table and pictures of the confusion matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import Tensor
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassCalibrationError,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from lightning_cv.reporting.drawing import fit_text, font

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "build_metrics",
    "confusion_matrix_figure",
    "confusion_matrix_image",
    "effective_top_k",
    "per_class_rows",
]


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


def per_class_rows(confusion: Tensor, class_names: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """One row per class of a multi-class confusion matrix: what the macro averages hide.

    Each row holds ``class``, ``support`` (its true images), ``precision``, ``recall``, ``f1``, ``most_confused_with``
    (the other class that takes most of its images; ``""`` when none is taken) and ``confused`` (how many it takes;
    the first such class wins a tie). A score whose denominator is 0 is 0, as with torchmetrics' default
    ``zero_division=0``, so the rows agree with ``MulticlassPrecision/Recall/F1Score(average=None)``.

    Everything comes from the matrix, which torchmetrics has already synced across processes, so every rank gets the
    same rows without storing the predictions. Write, print and log them with
    :func:`lightning_cv.models.per_class_report.report_per_class`.

    Args:
        confusion: ``(C, C)`` counts, rows true class, columns predicted class (``ImageClassifier.confusion_matrix``).
        class_names: ``C`` names; ``None`` writes the class indices.

    Example:
        >>> rows = per_class_rows(torch.tensor([[8, 2], [0, 5]]), ["cat", "dog"])
        >>> rows[0]["recall"], rows[0]["most_confused_with"], rows[0]["confused"], round(rows[1]["precision"], 4)
        (0.8, 'dog', 2, 0.7143)
    """
    counts = _counts(confusion)
    names = _names(class_names, counts.shape[0])
    tp = np.diag(counts)
    support, predicted = counts.sum(axis=1), counts.sum(axis=0)
    precision, recall = _ratio(tp, predicted), _ratio(tp, support)
    # torchmetrics' form, 2TP / (2TP + FP + FN): 0, not undefined, when precision alone is (a class never predicted)
    f1 = _ratio(2 * tp, 2 * tp + (predicted - tp) + (support - tp))
    others = counts.copy()
    np.fill_diagonal(others, 0)
    worst = others.argmax(axis=1)
    rows = []
    for c, name in enumerate(names):
        confused = int(others[c, worst[c]])
        rows.append(
            {
                "class": name,
                "support": int(support[c]),
                "precision": float(precision[c]),
                "recall": float(recall[c]),
                "f1": float(f1[c]),
                "most_confused_with": names[worst[c]] if confused else "",
                "confused": confused,
            }
        )
    return rows


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """``numerator / denominator``, 0 where the denominator is 0."""
    return np.divide(numerator, denominator, out=np.zeros(len(numerator)), where=denominator > 0)


def _counts(matrix: Tensor) -> np.ndarray:
    """``matrix`` as an ``int64`` array, checked to be a square matrix of counts."""
    values = matrix.detach().cpu()
    if values.ndim != 2 or values.shape[0] != values.shape[1] or values.shape[0] == 0:
        raise ValueError(f"Expected a square (C, C) confusion matrix, but got shape {tuple(values.shape)}.")
    if values.is_floating_point() and not bool((values == values.round()).all()):
        raise ValueError(
            "Expected a confusion matrix of counts, but got fractional values; pass the counts (torchmetrics' "
            "default `normalize=None`), not a normalised matrix."
        )
    return values.to(torch.int64).numpy()


def _names(class_names: Sequence[str] | None, n: int) -> list[str]:
    names = [str(name) for name in class_names] if class_names is not None else [str(i) for i in range(n)]
    if len(names) != n:
        raise ValueError(f"Expected one class name per row of the matrix ({n}), but got {len(names)} `class_names`.")
    return names


def _shades(counts: np.ndarray, normalize: bool) -> np.ndarray:
    """What the colour shows, from 0 (white) to 1 (darkest): each true class's share of its row, or the count over the
    largest count."""
    if normalize:
        support = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    return counts / max(int(counts.max()), 1)


def confusion_matrix_figure(
    matrix: Tensor, class_names: Sequence[str] | None = None, *, normalize: bool = True
) -> Figure:
    """A matplotlib figure of a confusion matrix (rows: true class, columns: predicted), counts in the cells.

    The same picture as :func:`confusion_matrix_image` (see there for ``normalize``), as a figure to edit or put in
    a report. Training logs :func:`confusion_matrix_image` instead: drawn with PIL, it is about 20 times faster than
    drawing this figure (matplotlib is imported only here).
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # pragma: no cover - exercised only without the optional dependency
        raise ImportError("Plotting the confusion matrix needs matplotlib: pip install matplotlib") from err
    counts = _counts(matrix)
    n = counts.shape[0]
    names = _names(class_names, n)
    shades = _shades(counts, normalize)
    size = min(2.0 + 0.45 * n, 20.0)
    # a bare Figure (no pyplot) keeps no global state, so figures logged every epoch are freed
    fig = Figure(figsize=(size, size))
    ax = fig.subplots()
    ax.imshow(shades, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true (shade: share of the row)" if normalize else "true")
    ax.set_xticks(range(n), names, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), names)
    if n <= 30:
        for (i, j), value in np.ndenumerate(counts):
            colour = "white" if shades[i, j] > 0.5 else "black"
            ax.text(j, i, str(value), ha="center", va="center", color=colour)
    fig.tight_layout()
    return fig


#: ColorBrewer "Blues", matplotlib's colour map for confusion matrices: white for none, dark blue for the most
_BLUES = np.array(
    [
        [247, 251, 255],
        [222, 235, 247],
        [198, 219, 239],
        [157, 202, 225],
        [106, 174, 214],
        [65, 145, 198],
        [32, 112, 180],
        [8, 80, 155],
        [8, 48, 107],
    ],
    dtype=np.float32,
)
#: the matrix itself is drawn at most this many pixels wide (cells of 40 px at most, 1 px at least)
_GRID_PIXELS = 1600
_MAX_CELL = 40
_LABEL_WIDTH = 160


def confusion_matrix_image(
    matrix: Tensor, class_names: Sequence[str] | None = None, *, normalize: bool = True
) -> np.ndarray:
    """A confusion matrix as an RGB picture ``(H, W, 3)`` uint8: rows true class, columns predicted class.

    By default (``normalize=True``) a cell's blue is its share of the row: each true class's row sums to 1, so a rare
    class that is mostly mistaken shows as clearly as a common one (2 of 2 right is as dark as 50 of 50), while the
    cells still say the counts. ``normalize=False`` shades by count instead (the darkest cell is the largest count),
    which shows where most of the images are. Counts are written while they fit (up to about 50 classes) and class
    names along both axes while a cell is tall enough for text (up to about 200). Drawn with PIL in a few
    milliseconds, so it can be logged every validation epoch (see :func:`lightning_cv.reporting.log_image`).

    Args:
        matrix: ``(C, C)`` counts, e.g. ``ImageClassifier.confusion_matrix``.
        class_names: ``C`` names; ``None`` writes the class indices.
        normalize: shade by the share of the row (``True``) or by the count (``False``).
    """
    counts = _counts(matrix)
    n = counts.shape[0]
    names = _names(class_names, n)
    cell = min(_MAX_CELL, max(1, _GRID_PIXELS // n))
    shades = _shades(counts, normalize)
    stops = np.linspace(0.0, 1.0, len(_BLUES))
    colours = np.stack([np.interp(shades, stops, _BLUES[:, c]) for c in range(3)], axis=-1)
    grid = Image.fromarray(colours.round().astype(np.uint8)).resize((n * cell, n * cell), Image.Resampling.NEAREST)
    _write_counts(grid, counts, shades, cell)
    label_size = min(13, cell - 3)
    if label_size < 7:  # too many classes for names: the matrix alone
        return np.asarray(grid)
    shading = "shade: row share" if normalize else "shade: count"
    return np.asarray(_with_class_names(grid, names, cell, label_size, shading))


def _write_counts(grid: Image.Image, counts: np.ndarray, shades: np.ndarray, cell: int) -> None:
    """Counts centred in their cells (white on dark blue), when the largest one fits a cell."""
    count_font = font(min(14, int(cell * 0.4)))
    draw = ImageDraw.Draw(grid)
    if cell * 0.4 < 8 or draw.textlength(str(int(counts.max())), font=count_font) > cell - 2:
        return
    boxes: dict[str, tuple[float, float]] = {}  # text -> offset from the cell's corner (few distinct counts)
    for (i, j), value in np.ndenumerate(counts):
        text = str(value)
        if text not in boxes:
            left, top, right, bottom = draw.textbbox((0, 0), text, font=count_font)
            boxes[text] = ((cell - right - left) / 2, (cell - bottom - top) / 2)
        dx, dy = boxes[text]
        colour = "white" if shades[i, j] > 0.5 else "black"
        draw.text((j * cell + dx, i * cell + dy), text, fill=colour, font=count_font)


def _with_class_names(grid: Image.Image, names: Sequence[str], cell: int, size: int, shading: str) -> Image.Image:
    """``grid`` with the class names left of the rows and above the columns (read upwards); in the corner the axis
    names and what the shade shows."""
    label_font, pad = font(size), 4
    probe = ImageDraw.Draw(grid)
    fitted = [fit_text(probe, name, label_font, _LABEL_WIDTH) for name in names]
    axis_font = font(13)
    width = round(
        max(
            probe.textlength("columns: predicted", font=axis_font),
            probe.textlength(shading, font=axis_font),
            *(probe.textlength(t, font=label_font) for t in fitted),
        )
    )
    margin = width + 2 * pad
    canvas = Image.new("RGB", (margin + grid.width + pad, margin + grid.height + pad), "white")
    draw = ImageDraw.Draw(canvas)
    strip = Image.new("RGB", (margin, grid.height), "white")  # column names, drawn as rows, then turned upright
    strip_draw = ImageDraw.Draw(strip)
    offset = (cell - size) / 2 - 1
    for k, text in enumerate(fitted):
        draw.text(
            (margin - pad - draw.textlength(text, font=label_font), margin + k * cell + offset),
            text,
            fill="black",
            font=label_font,
        )
        strip_draw.text((pad, k * cell + offset), text, fill="black", font=label_font)
    canvas.paste(strip.transpose(Image.Transpose.ROTATE_90), (margin, 0))
    draw.text((pad, pad), "rows: true", fill=(90, 90, 90), font=axis_font)
    draw.text((pad, pad + 17), "columns: predicted", fill=(90, 90, 90), font=axis_font)
    draw.text((pad, pad + 34), shading, fill=(90, 90, 90), font=axis_font)
    canvas.paste(grid, (margin, margin))
    return canvas
