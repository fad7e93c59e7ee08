"""Classification losses: label smoothing for hard labels, soft-target cross entropy for mixed batches, and the
multi-label losses (binary cross entropy, the asymmetric loss).

A batch mixed by MixUp/CutMix (soft targets) and a plain batch (class indices) are smoothed the same way:
``q = (1 - eps) * p + eps / C`` (:func:`smooth_targets`). PyTorch's ``F.cross_entropy`` applies exactly that
formula to class indices and to class probabilities alike (``tests/test_losses.py`` checks it), so the losses here
are that function with the argument checks and names a mixing pipeline needs. The formula is timm's
``mixup_target(..., smoothing=eps)``, so a mixing pipeline should hand over *unsmoothed* soft targets.

Multi-label targets are one independent binary target per label, so smoothing moves each towards 0.5:
``q = (1 - eps) * y + eps / 2`` (:func:`smooth_binary_targets`, timm's ``mixup_target(..., multi_label=True)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ASL_DEFAULTS",
    "FOCAL_DEFAULTS",
    "MULTILABEL_LOSSES",
    "AsymmetricLoss",
    "BinaryCrossEntropy",
    "LabelSmoothingCrossEntropy",
    "SoftTargetCrossEntropy",
    "asymmetric_loss",
    "binary_cross_entropy",
    "focal_loss",
    "logit_adjusted",
    "smooth_binary_targets",
    "smooth_targets",
    "soft_target_cross_entropy",
]

#: the multi-label losses by name: binary cross entropy with logits, and the asymmetric loss
MULTILABEL_LOSSES = ("bce", "asl")
#: the focal loss's focusing parameter of Lin et al. (ICCV 2017)
FOCAL_DEFAULTS = {"gamma": 2.0}
#: the asymmetric loss settings of Ridnik et al. (ICCV 2021) for MS-COCO: focus on hard negatives (gamma_neg=4),
#: none on positives, and easy negatives with probability below ``clip`` discarded
ASL_DEFAULTS = {"gamma_neg": 4.0, "gamma_pos": 0.0, "clip": 0.05}


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


def soft_target_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.0, weight: Tensor | None = None
) -> Tensor:
    """Mean over the batch of ``-sum_c q_c log softmax(logits)_c`` with ``q`` the (smoothed) target distribution.

    Args:
        logits: ``(N, C)`` unnormalised scores.
        target: ``(N, C)`` class probabilities (each row sums to one) or ``(N,)`` class indices.
        smoothing: label smoothing ``eps`` applied to the target distribution.
        weight: ``(C,)`` class weights, as ``F.cross_entropy`` takes them: each term ``q_c log p_c`` is weighted by
            ``w_c``; class indices are averaged over the weights of the batch's targets, probabilities over the
            batch (PyTorch's definition).
    """
    _check_smoothing(smoothing)
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (N, C), but got {tuple(logits.shape)}.")
    if target.ndim == 1:
        if target.dtype.is_floating_point:
            raise TypeError(f"Expected class indices of an integer dtype, but got {target.dtype}.")
        return F.cross_entropy(logits, target.long(), weight=_on(weight, logits), label_smoothing=smoothing)
    if target.ndim != 2 or target.shape[1] != logits.shape[1]:
        raise ValueError(f"Expected soft targets of shape (N, {logits.shape[1]}), but got {tuple(target.shape)}.")
    return F.cross_entropy(logits, target.to(logits.dtype), weight=_on(weight, logits), label_smoothing=smoothing)


def _on(weight: Tensor | None, logits: Tensor) -> Tensor | None:
    return weight.to(logits.device, logits.dtype) if weight is not None else None


def focal_loss(
    logits: Tensor, target: Tensor, gamma: float = 2.0, smoothing: float = 0.0, weight: Tensor | None = None
) -> Tensor:
    """The focal loss (Lin et al., ICCV 2017) for one class per image: ``-sum_c w_c q_c (1 - p_c)^gamma log p_c``.

    Easy examples (``p`` near 1 for their class) are down-weighted, so training dwells on hard ones, which in
    imbalanced data are mostly the rare classes'. ``q`` is the (smoothed) target distribution, so label smoothing
    and MixUp/CutMix targets work as with :func:`soft_target_cross_entropy`, and ``gamma=0`` is exactly that
    cross entropy, class weights and their averaging included.
    """
    _check_smoothing(smoothing)
    if gamma < 0:
        raise ValueError(f"Expected `gamma` >= 0, but got {gamma}.")
    if logits.ndim != 2:
        raise ValueError(f"Expected logits of shape (N, C), but got {tuple(logits.shape)}.")
    num_classes = logits.shape[1]
    q = smooth_targets(target, num_classes, smoothing).to(logits.device)
    log_p = logits.float().log_softmax(dim=1)
    terms = q * (1.0 - log_p.exp()).pow(gamma) * log_p
    w = weight.to(logits.device, torch.float32) if weight is not None else None
    if w is not None:
        terms = terms * w
    per_image = -terms.sum(dim=1)
    if w is not None and target.ndim == 1:  # as F.cross_entropy averages class indices: over their weights
        return per_image.sum() / w[target.long()].sum()
    return per_image.mean()


def logit_adjusted(logits: Tensor, log_prior: Tensor, tau: float = 1.0) -> Tensor:
    """``logits + tau * log(prior)``: the logit-adjusted loss of Menon et al. (ICLR 2021) is a loss on these.

    Training on adjusted logits makes the plain logits estimate the balanced (class-prior-free) posterior: a rare
    class no longer has to overcome its small prior, with nothing to change at inference.
    """
    return logits + tau * log_prior.to(logits.device, logits.dtype)


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


# ---------------------------------------------------------------------------------------------------- multi-label
def _check_multilabel(logits: Tensor, target: Tensor) -> None:
    if logits.ndim != 2 or target.shape != logits.shape:
        raise ValueError(
            f"Expected logits and multi-hot targets of the same shape (N, C), but got {tuple(logits.shape)} and "
            f"{tuple(target.shape)}. A multi-label model needs one 0/1 column per class, not class indices."
        )


def smooth_binary_targets(target: Tensor, smoothing: float = 0.0) -> Tensor:
    """Multi-hot (or mixed) targets ``(N, C)`` with each binary target moved towards 0.5: ``(1 - eps) y + eps / 2``."""
    _check_smoothing(smoothing)
    target = target.float()
    return target * (1.0 - smoothing) + smoothing / 2 if smoothing > 0 else target


def binary_cross_entropy(
    logits: Tensor, target: Tensor, smoothing: float = 0.0, pos_weight: Tensor | None = None
) -> Tensor:
    """Mean over images and labels of the binary cross entropy with logits against (smoothed) multi-hot targets.

    Args:
        logits: ``(N, C)`` one logit per label.
        target: ``(N, C)`` multi-hot targets, or mixed ones in [0, 1].
        smoothing: label smoothing, each target moved towards 0.5 (:func:`smooth_binary_targets`).
        pos_weight: ``(C,)`` weight of each label's positive term (``negatives / positives`` balances a rare label).
    """
    _check_multilabel(logits, target)
    weight = pos_weight.to(logits.device, torch.float32) if pos_weight is not None else None
    return F.binary_cross_entropy_with_logits(
        logits.float(), smooth_binary_targets(target, smoothing), pos_weight=weight
    )


def asymmetric_loss(
    logits: Tensor,
    target: Tensor,
    smoothing: float = 0.0,
    gamma_neg: float = ASL_DEFAULTS["gamma_neg"],
    gamma_pos: float = ASL_DEFAULTS["gamma_pos"],
    clip: float = ASL_DEFAULTS["clip"],
) -> Tensor:
    """The asymmetric loss (Ridnik et al., ICCV 2021), averaged like :func:`binary_cross_entropy`.

    Computed by timm's ``AsymmetricLossMultiLabel``; its sum is divided by ``N * C`` here, so the loss has the scale
    of the mean binary cross entropy (with ``gamma_neg = gamma_pos = clip = 0`` the two are equal) and learning rates
    carry over between the two.
    """
    return AsymmetricLoss(smoothing, gamma_neg, gamma_pos, clip)(logits, target)


def _timm_asl(gamma_neg: float, gamma_pos: float, clip: float) -> nn.Module:
    import inspect

    from timm.loss import AsymmetricLossMultiLabel

    kwargs: dict[str, object] = {"gamma_neg": gamma_neg, "gamma_pos": gamma_pos, "clip": clip}
    if "reduction" in inspect.signature(AsymmetricLossMultiLabel).parameters:
        kwargs["reduction"] = "sum"  # timm >= 1.0.2x averages over the batch by default; older ones always sum
    return AsymmetricLossMultiLabel(**kwargs)  # type: ignore[arg-type]


class BinaryCrossEntropy(nn.Module):
    """:func:`binary_cross_entropy` as a module: multi-label targets, label smoothing, optional ``pos_weight``."""

    def __init__(self, smoothing: float = 0.0, pos_weight: Tensor | None = None) -> None:
        super().__init__()
        _check_smoothing(smoothing)
        self.smoothing = smoothing
        self.pos_weight = pos_weight

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        return binary_cross_entropy(logits, target, self.smoothing, self.pos_weight)

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, pos_weight={'per label' if self.pos_weight is not None else None}"


class AsymmetricLoss(nn.Module):
    """:func:`asymmetric_loss` as a module (``gamma_neg``, ``gamma_pos``, ``clip`` as in the paper)."""

    def __init__(
        self,
        smoothing: float = 0.0,
        gamma_neg: float = ASL_DEFAULTS["gamma_neg"],
        gamma_pos: float = ASL_DEFAULTS["gamma_pos"],
        clip: float = ASL_DEFAULTS["clip"],
    ) -> None:
        super().__init__()
        _check_smoothing(smoothing)
        if gamma_neg < 0 or gamma_pos < 0 or not 0 <= clip < 1:
            raise ValueError(
                f"Expected `gamma_neg` >= 0, `gamma_pos` >= 0 and `clip` in [0, 1), but got {gamma_neg}, {gamma_pos}, "
                f"{clip}."
            )
        self.smoothing = smoothing
        self.gamma_neg, self.gamma_pos, self.clip = gamma_neg, gamma_pos, clip
        self._loss = _timm_asl(gamma_neg, gamma_pos, clip)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        _check_multilabel(logits, target)
        return self._loss(logits.float(), smooth_binary_targets(target, self.smoothing)) / logits.numel()

    def extra_repr(self) -> str:
        return f"smoothing={self.smoothing}, gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}"
