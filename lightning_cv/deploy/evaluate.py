"""Running an exported ONNX file on a data loader: the input it expects, and its accuracy."""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["as_onnx_input", "onnx_accuracy"]


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


def onnx_accuracy(
    path: str | os.PathLike[str],
    batches: Iterable[tuple[Tensor, Tensor]],
    input_format: str,
    mean: Sequence[float],
    std: Sequence[float],
) -> float:
    """Top-1 accuracy of the ONNX file at ``path`` on ``(images, labels)`` batches, with onnxruntime on the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session: Any = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    right = total = 0
    for images, labels in batches:
        logits = session.run(None, {name: as_onnx_input(images, input_format, mean, std)})[0]
        right += int((logits.argmax(axis=1) == labels.numpy()).sum())
        total += len(labels)
    return right / max(total, 1)
