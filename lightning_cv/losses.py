"""Classification losses: label smoothing for hard labels, soft-target cross entropy for mixed batches.

A batch mixed by MixUp/CutMix (soft targets) and a plain batch (class indices) are smoothed the same way:
``q = (1 - eps) * p + eps / C`` (:func:`smooth_targets`). PyTorch's ``F.cross_entropy`` applies exactly that
formula to class indices and to class probabilities alike (``tests/test_losses.py`` checks it), so the losses here
are that function with the argument checks and names a mixing pipeline needs. The formula is timm's
``mixup_target(..., smoothing=eps)``, so a mixing pipeline should hand over *unsmoothed* soft targets.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "LabelSmoothingCrossEntropy",
    "SoftTargetCrossEntropy",
    "smooth_targets",
    "soft_target_cross_entropy",
]


def _check_smoothing(smoothing: float) -> None:
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"Expected argument `smoothing` to be in [0, 1), but got {smoothing}.")


def smooth_targets(target: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """Turn class indices ``(N,)`` or class probabilities ``(N, C)`` into smoothed probabilities ``(N, C)``."""
    _check_smoothing(smoothing)
    if target.ndim == 1:
        if target.dtype.is_floating_point:
            raise TypeError(f"Expected class indices of an integer dtype, but got {target.dtype}.")
        probs = F.one_hot(target.long(), num_classes).to(torch.float32)
    elif target.ndim == 2:
        if target.shape[1] != num_classes:
            raise ValueError(f"Expected soft targets of shape (N, {num_classes}), but got {tuple(target.shape)}.")
        probs = target.float()
    else:
        raise ValueError(f"Expected targets of shape (N,) or (N, C), but got {tuple(target.shape)}.")
    if smoothing > 0:
        probs = probs * (1.0 - smoothing) + smoothing / num_classes
    return probs


def soft_target_cross_entropy(logits: Tensor, target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Mean over the batch of ``-sum_c q_c log softmax(logits)_c`` with ``q`` the (smoothed) target distribution.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N, C)`` class probabilities (each row sums to one) or ``(N,)`` class indices.
        smoothing: label smoothing ``eps`` applied to the target distribution.
    """
    _check_smoothing(smoothing)
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (N, C), but got {tuple(logits.shape)}.")
    if target.ndim == 1:
        if target.dtype.is_floating_point:
            raise TypeError(f"Expected class indices of an integer dtype, but got {target.dtype}.")
        return F.cross_entropy(logits, target.long(), label_smoothing=smoothing)
    if target.ndim != 2 or target.shape[1] != logits.shape[1]:
        raise ValueError(f"Expected soft targets of shape (N, {logits.shape[1]}), but got {tuple(target.shape)}.")
    return F.cross_entropy(logits, target.to(logits.dtype), label_smoothing=smoothing)


class LabelSmoothingCrossEntropy(nn.Module):
    """Cross entropy with label smoothing for integer class targets.

    Use it for ordinary (unmixed) batches; ``smoothing=0.1`` is the usual choice when fine-tuning on a few thousand
    images, where it reduces over-confidence. Soft targets are accepted too and smoothed the same way.

    Example:
        >>> loss = LabelSmoothingCrossEntropy(smoothing=0.1)
        >>> loss(torch.zeros(2, 3), torch.tensor([0, 2])).item() > 0
        True
    """

    def __init__(self, smoothing: float = 0.1) -> None:
        super().__init__()
        _check_smoothing(smoothing)
        self.smoothing = smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, target, self.smoothing)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"


class SoftTargetCrossEntropy(nn.Module):
    """Cross entropy against class probabilities, e.g. the targets MixUp and CutMix produce.

    Args:
        smoothing: label smoothing applied to the given distribution (``0`` when the targets are already smoothed).
    """

    def __init__(self, smoothing: float = 0.0) -> None:
        super().__init__()
        _check_smoothing(smoothing)
        self.smoothing = smoothing

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return soft_target_cross_entropy(logits, target, self.smoothing)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}"
