"""How often each class or label occurs in a split: for ``pos_weight``, the balanced sampler and the reports.

Both tasks are counted the same way, as label sets: a multi-class image is the set of its one class, a multi-label
image the set of its labels (possibly empty). Counting goes through ``(image, label)`` pairs, never ``(N, C)`` rows,
which would take 4 GB for a million images of a thousand classes.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["as_label_sets", "balanced_sample_weights", "label_counts"]


def as_label_sets(targets: Sequence[int | Sequence[int]]) -> list[tuple[int, ...]]:
    """Class indices or label-index tuples as label sets: ``3`` becomes ``(3,)``."""
    return [tuple(int(i) for i in t) if isinstance(t, Sequence) else (int(t),) for t in targets]


def _pairs(label_sets: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """``(image index, label index)`` of every label of every image."""
    images = [i for i, labels in enumerate(label_sets) for _ in labels]
    labels = [label for labels in label_sets for label in labels]
    return torch.tensor(images, dtype=torch.long), torch.tensor(labels, dtype=torch.long)


def label_counts(label_sets: Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """Images carrying each label, float32 ``(C,)`` (multi-class: images of each class)."""
    _, labels = _pairs(label_sets)
    return torch.bincount(labels, minlength=num_classes).to(torch.float32)


def balanced_sample_weights(label_sets: Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """Sampling weight of each image, float64: the inverse frequency of its rarest label.

    For one class per image this is inverse class frequency: every class is drawn equally often on average. An image
    with several labels is as rare as its rarest one, so rare labels are drawn far more often (exact balance is out
    of reach: labels share images); images without labels count as one more group.
    """
    images, labels = _pairs(label_sets)
    inverse = 1.0 / torch.bincount(labels, minlength=num_classes).clamp_min(1).double()
    weights = torch.zeros(len(label_sets), dtype=torch.double).scatter_reduce_(0, images, inverse[labels], "amax")
    none = torch.tensor([not labels for labels in label_sets], dtype=torch.bool)
    return torch.where(none, 1.0 / none.sum().clamp_min(1).double(), weights)
