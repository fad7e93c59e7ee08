"""MixUp and CutMix on a batch on the device, with parameters sampled apart from applying them.

Sampling (``sample``) draws lambda and the CutMix box on the host from a seeded NumPy generator, so mixing costs no
device synchronisation and is reproducible and resumable (``state_dict``); applying (``apply``) is pure tensor work.
Images are paired with the batch reversed, as timm does, so any batch size works: with an odd size the middle image
pairs with itself, and a batch of one is left as it is (lambda 1).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BatchMixer", "CutMix", "MixParams", "MixUp"]


@dataclass(frozen=True)
class MixParams:
    """One draw: ``lam`` is the weight of the original images; ``box`` is CutMix's ``(y0, y1, x0, x1)``."""

    lam: float
    box: tuple[int, int, int, int] | None = None


def _check(name: str, value: float, low: float, high: float | None = None) -> None:
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"Expected `{name}` {bound}, but got {value}.")


def _check_images(images: Tensor) -> None:
    if images.ndim != 4:
        raise ValueError(f"Expected images of shape (N, C, H, W), but got {tuple(images.shape)}.")


class _Mix(ABC):
    def __init__(self, alpha: float, prob: float = 1.0, seed: int | None = None) -> None:
        _check("alpha", alpha, 0.0)
        _check("prob", prob, 0.0, 1.0)
        self.alpha = alpha
        self.prob = prob
        self._rng = np.random.default_rng(seed)

    def sample(self, height: int, width: int) -> MixParams | None:
        """Draw the parameters for one batch, or ``None`` when this batch is not mixed."""
        if self.alpha <= 0 or self._rng.random() >= self.prob:
            return None
        return self._sample(float(self._rng.beta(self.alpha, self.alpha)), height, width)

    def _sample(self, lam: float, height: int, width: int) -> MixParams:
        return MixParams(lam)

    @abstractmethod
    def apply(self, images: Tensor, params: MixParams) -> Tensor:
        """Mix ``images`` with the batch reversed, as ``params`` say."""

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor, float]:
        """Mix a batch: ``(images, labels_a, labels_b, lam)``; the loss is ``lam * ce(a) + (1 - lam) * ce(b)``."""
        _check_images(images)
        params = self.sample(images.shape[-2], images.shape[-1])
        labels_b = labels.flip(0)
        if params is None:
            return images, labels, labels_b, 1.0
        return self.apply(images, params), labels, labels_b, params.lam

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]


class MixUp(_Mix):
    """MixUp (Zhang et al. 2018): ``lam * x + (1 - lam) * x[reversed]`` with ``lam ~ Beta(alpha, alpha)``.

    Args:
        alpha: Beta distribution parameter; 0.2-0.8 is usual, 0 disables it.
        prob: probability that a batch is mixed.
        seed: seed of the parameter generator.
    """

    def apply(self, images: Tensor, params: MixParams) -> Tensor:
        return images.mul(params.lam).add_(images.flip(0), alpha=1.0 - params.lam)


class CutMix(_Mix):
    """CutMix (Yun et al. 2019): paste a box from the paired image, box area ``(1 - lam)`` of the image.

    The box centre is uniform over the image and the box is clipped at the border; lambda is then recomputed from
    the area actually pasted, so the targets match the pixels.
    """

    def _sample(self, lam: float, height: int, width: int) -> MixParams:
        ratio = math.sqrt(1.0 - lam)
        cut_h, cut_w = int(height * ratio), int(width * ratio)
        cy, cx = int(self._rng.integers(0, height)), int(self._rng.integers(0, width))
        y0, y1 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
        x0, x1 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
        area = (y1 - y0) * (x1 - x0)
        return MixParams(1.0 - area / (height * width), (y0, y1, x0, x1))

    def apply(self, images: Tensor, params: MixParams) -> Tensor:
        if params.box is None:
            raise ValueError("CutMix needs parameters with a box; draw them with `CutMix.sample`.")
        y0, y1, x0, x1 = params.box
        out = images.clone()
        out[..., y0:y1, x0:x1] = images.flip(0)[..., y0:y1, x0:x1]
        return out


class BatchMixer:
    """MixUp, CutMix or both (one of the two per batch, CutMix with ``switch_prob``), producing soft targets.

    The targets are ``lam * one_hot(y) + (1 - lam) * one_hot(y[reversed])`` and sum to one; label smoothing is the
    loss's job (:class:`~lightning_cv.ImageClassifier` applies its ``label_smoothing`` to them, as timm's
    ``mixup_target`` would). Multi-label targets, multi-hot rows ``(N, num_classes)``, are mixed the same way:
    ``lam * y + (1 - lam) * y[reversed]``, a weight in [0, 1] per label (the rows need not sum to one).
    """

    def __init__(
        self,
        num_classes: int,
        *,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        seed: int | None = None,
    ) -> None:
        _check("switch_prob", switch_prob, 0.0, 1.0)
        _check("prob", prob, 0.0, 1.0)
        self.num_classes = num_classes
        self.prob = prob
        self.switch_prob = switch_prob
        self.mixup = MixUp(mixup_alpha)
        self.cutmix = CutMix(cutmix_alpha)
        self.reseed(seed)

    def reseed(self, seed: int | Sequence[int] | None) -> None:
        """Start a new parameter stream, e.g. ``[seed, rank, step]`` for each process after a resume."""
        self._rng = np.random.default_rng(seed)
        self.mixup._rng = self.cutmix._rng = self._rng  # one stream: one state to save and restore

    @property
    def enabled(self) -> bool:
        return self.prob > 0 and (self.mixup.alpha > 0 or self.cutmix.alpha > 0)

    def sample(self, height: int, width: int) -> tuple[_Mix, MixParams] | None:
        if not self.enabled or self._rng.random() >= self.prob:
            return None
        both = self.mixup.alpha > 0 and self.cutmix.alpha > 0
        use_cutmix = self.cutmix.alpha > 0 and (not both or self._rng.random() < self.switch_prob)
        mix: _Mix = self.cutmix if use_cutmix else self.mixup
        return mix, mix._sample(float(self._rng.beta(mix.alpha, mix.alpha)), height, width)

    def __call__(self, images: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """``(mixed images, soft targets of shape (N, num_classes))``.

        Args:
            images: ``(N, C, H, W)``.
            labels: class indices ``(N,)``, or multi-hot float rows ``(N, num_classes)`` for multi-label data.
        """
        _check_images(images)
        rows = self._target_rows(labels, len(images))
        draw = self.sample(images.shape[-2], images.shape[-1])
        if draw is None:
            return images, rows
        mix, params = draw
        targets = rows.mul(params.lam).add_(rows.flip(0), alpha=1.0 - params.lam)
        return mix.apply(images, params), targets

    def _target_rows(self, labels: Tensor, num_images: int) -> Tensor:
        if labels.ndim not in (1, 2) or labels.shape[0] != num_images:
            raise ValueError(
                f"Expected class indices of shape ({num_images},) or multi-hot targets of shape ({num_images}, "
                f"{self.num_classes}) for {num_images} images, but got {tuple(labels.shape)}."
            )
        if labels.ndim == 1:
            return F.one_hot(labels.long(), self.num_classes).to(torch.float32)
        if labels.shape[1] != self.num_classes:
            raise ValueError(
                f"Expected multi-hot targets of shape (N, {self.num_classes}), but got {tuple(labels.shape)}: "
                f"{labels.shape[1]} labels for a mixer of {self.num_classes} classes. Create the mixer with "
                "`num_classes` equal to the number of labels."
            )
        return labels.to(torch.float32)

    def state_dict(self) -> dict[str, Any]:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._rng.bit_generator.state = state["rng"]
