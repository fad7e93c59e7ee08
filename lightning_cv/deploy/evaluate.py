"""Running an exported ONNX file on a data loader: the input it expects, and the quality of its answers.

Quality is the task's (:data:`~lightning_cv.data.batch.TASKS`): top-1 accuracy for a multi-class model; for a
multi-label one, mAP (macro average precision: threshold-free, how well the scores rank) and macro / micro F1 of
the label sets decided with the per-label thresholds the file is shipped with. :func:`quality` is the one
definition; the export command and the benchmark both call it, so their figures agree.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_cv.data.batch import (
    DEFAULT_THRESHOLD,
    MULTILABEL,
    check_task,
    hard_labels,
)
from lightning_cv.models.multilabel_metrics import MultilabelMetrics
from lightning_cv.models.thresholds import check_thresholds

__all__ = [
    "QUALITY_NAMES",
    "as_onnx_input",
    "format_quality",
    "label_thresholds",
    "onnx_accuracy",
    "onnx_quality",
    "quality",
]

#: the display name of each figure :func:`quality` returns
QUALITY_NAMES = {"accuracy": "accuracy", "map": "mAP", "f1": "F1", "f1_micro": "micro F1"}


def label_thresholds(thresholds: float | Sequence[float] | Tensor | None, num_classes: int) -> list[float]:
    """Per-label decision thresholds as a list of ``num_classes`` float32 values in [0, 1].

    Checked by the rule training uses (:func:`lightning_cv.models.thresholds.check_thresholds`): one number
    applies to every label; ``None`` gives 0.5 each. Each value is the shortest decimal of its float32 (scores are
    float32): a tuned ``0.46876204`` stays that, not ``0.46876204013824463``.

    Raises:
        ValueError: a list of the wrong length, or a value outside [0, 1].
    """
    if isinstance(thresholds, (str, bytes)):
        raise TypeError(f"Expected `thresholds` to be a number or a list of numbers, but got {thresholds!r}.")
    values = check_thresholds(thresholds.tolist() if isinstance(thresholds, Tensor) else thresholds, num_classes)
    if values is None:
        values = torch.full((num_classes,), DEFAULT_THRESHOLD)
    return [float(np.format_float_positional(np.float32(v), unique=True)) for v in values.tolist()]


def quality(
    outputs: Tensor | np.ndarray,
    targets: Tensor | np.ndarray,
    task: str = "multiclass",
    thresholds: float | Sequence[float] | Tensor | None = None,
) -> dict[str, float]:
    """The quality figures of a model's ``outputs`` ``(N, C)`` against ``targets``, all in [0, 1].

    Args:
        outputs: multi-class: logits or probabilities (only their argmax counts); multi-label: sigmoid scores.
        targets: multi-class: class indices ``(N,)`` (or probability rows); multi-label: multi-hot rows ``(N, C)``.
        task: ``"multiclass"`` or ``"multilabel"``.
        thresholds: multi-label: the per-label thresholds (one number for all; ``None``: 0.5) that decide the label
            sets scored by F1. The predictions are binarised here and handed to torchmetrics as integers, so it
            applies no threshold of its own.

    Returns:
        ``{"accuracy"}`` (multi-class) or ``{"map", "f1", "f1_micro"}`` (multi-label). mAP is the mean of the
        average precisions of the labels that have at least one positive among ``targets`` (a label absent from
        the evaluation images has no defined AP; torchmetrics would count it as 0); ``nan`` when none has.
    """
    out = torch.as_tensor(outputs).float()
    target = torch.as_tensor(targets)
    if check_task(task) != MULTILABEL:
        right = (out.argmax(dim=1) == hard_labels(target).to(out.device)).sum()
        return {"accuracy": float(right) / max(len(out), 1)}
    if out.ndim != 2 or target.shape != out.shape:
        raise ValueError(
            f"Expected multi-label scores and multi-hot targets of the same shape (N, C), but got "
            f"{tuple(out.shape)} and {tuple(target.shape)}."
        )
    # the metrics training and `lightning-cv test` report, so an export's figures compare with the run's
    metrics = MultilabelMetrics(out.shape[1])
    metrics.update(out, target.float(), torch.tensor(label_thresholds(thresholds, out.shape[1])))
    values = metrics.compute()
    return {name: float(values[name]) for name in ("map", "f1", "f1_micro")}


def format_quality(figures: dict[str, float], keys: Sequence[str] | None = None) -> str:
    """``"mAP 83.10%, F1 70.00%"``: the figures of :func:`quality` for people (``keys`` picks and orders them)."""
    chosen = [k for k in (keys or figures) if k in figures]
    return ", ".join(f"{QUALITY_NAMES.get(k, k)} {figures[k]:.2%}" for k in chosen)


def as_onnx_input(images: Tensor, input_format: str, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """Normalised float images in the layout and type an exported file with ``input_format`` expects.

    ``"float"`` files take the normalised images as they are; ``"uint8_nchw"``/``"uint8_nhwc"`` files (preprocessing
    baked in) take the pixels, which are recovered here by undoing the normalisation.
    """
    if input_format == "float":
        return images.float().numpy()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    pixels = ((images.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return (pixels.permute(0, 2, 3, 1) if input_format == "uint8_nhwc" else pixels).contiguous().numpy()


def onnx_quality(
    path: str | os.PathLike[str],
    batches: Iterable[tuple[Tensor, Tensor]],
    input_format: str,
    mean: Sequence[float],
    std: Sequence[float],
    task: str = "multiclass",
    thresholds: float | Sequence[float] | Tensor | None = None,
) -> dict[str, float]:
    """:func:`quality` of the ONNX file at ``path`` on ``(images, targets)`` batches, with onnxruntime on the CPU.

    A multi-label file outputs sigmoid scores (:func:`~lightning_cv.deploy.onnx.export_onnx` puts the sigmoid in
    the graph); one whose output is named ``"logits"`` gets the sigmoid applied here.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    outputs, targets = [], []
    for images, target in batches:
        outputs.append(torch.from_numpy(session.run(None, {name: as_onnx_input(images, input_format, mean, std)})[0]))
        targets.append(target)
    if not outputs:
        raise ValueError(f"No images to measure {path} on: the evaluation batches were empty.")
    scores = torch.cat(outputs)
    if check_task(task) == MULTILABEL and session.get_outputs()[0].name == "logits":
        scores = scores.sigmoid()
    return quality(scores, torch.cat(targets), task, thresholds)


def onnx_accuracy(
    path: str | os.PathLike[str],
    batches: Iterable[tuple[Tensor, Tensor]],
    input_format: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> float:
    """Top-1 accuracy of the ONNX file at ``path`` on ``(images, labels)`` batches, with onnxruntime on the CPU."""
    return onnx_quality(path, batches, input_format, mean, std)["accuracy"]
