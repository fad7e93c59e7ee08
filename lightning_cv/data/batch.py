"""What a batch and a target are, in one place: the classifier and every callback read batches through here.

A **batch** is one of

- a tensor of images ``(N, C, H, W)``, with no targets;
- a tuple or list ``(images, targets, ...)``: the images first; the second element is the targets when it is a
  tensor (the data module's predict loader puts the dataset indices there, so prediction code reads only the
  images); anything after it is left to whoever put it there;
- a dict with the images under ``"image"``, ``"images"`` or ``"input"`` and the targets under ``"target"``,
  ``"label"``, ``"labels"`` or ``"targets"`` (the first key present that holds a tensor wins).

A **target** is one of

- hard: class indices, an integer tensor ``(N,)``;
- soft: one row of class probabilities per image, ``(N, num_classes)`` float, as MixUp and CutMix make them (each
  row sums to 1). Metrics, confusion matrices and galleries need one class per image: :func:`hard_labels` gives the
  most probable one.

Multi-label targets (a multi-hot ``(N, num_classes)`` row per image) will be a third kind. They have the shape of
soft targets, so the kind cannot be read from the tensor and must come from the task: :func:`is_soft` and
:func:`hard_labels` are where that decision plugs in (a ``task`` argument, say), together with the loss choice in
``ImageClassifier.training_step``, which asks :func:`is_soft`.

Example:
    >>> import torch
    >>> images, targets = split_batch({"image": torch.zeros(2, 3, 8, 8), "label": torch.tensor([0, 2])})
    >>> hard_labels(torch.tensor([[0.7, 0.3], [0.2, 0.8]])).tolist()
    [0, 1]
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

__all__ = [
    "IMAGE_KEYS",
    "TARGET_KEYS",
    "hard_labels",
    "is_soft",
    "split_batch",
    "split_labelled_batch",
    "try_split_batch",
]

#: dict keys that hold the images, in the order they are looked for
IMAGE_KEYS = ("image", "images", "input")
#: dict keys that hold the targets, in the order they are looked for
TARGET_KEYS = ("target", "label", "labels", "targets")


def try_split_batch(batch: Any) -> tuple[Tensor, Tensor | None] | None:
    """``(images, targets)``, ``targets`` being ``None`` when the batch has none; ``None`` for a batch of another form.

    For callbacks, which meet any module's batches: a form they do not know is skipped, not an error in someone
    else's training.
    """
    if isinstance(batch, Tensor):
        return batch, None
    if isinstance(batch, dict):
        images = next((batch[k] for k in IMAGE_KEYS if isinstance(batch.get(k), Tensor)), None)
        if images is None:
            return None
        return images, next((batch[k] for k in TARGET_KEYS if isinstance(batch.get(k), Tensor)), None)
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], Tensor):
        targets = batch[1] if len(batch) > 1 and isinstance(batch[1], Tensor) else None
        return batch[0], targets
    return None


def split_batch(batch: Any) -> tuple[Tensor, Tensor | None]:
    """``(images, targets)`` of a batch in any of the forms above; ``targets`` is ``None`` when it has none.

    Raises:
        TypeError: no image tensor where the forms above put one.
    """
    parts = try_split_batch(batch)
    if parts is None:
        raise TypeError(
            "Expected a batch of images: a tensor, a tuple or list starting with one, or a dict with an 'image' "
            f"tensor, but got {type(batch).__name__}."
        )
    return parts


def split_labelled_batch(batch: Any) -> tuple[Tensor, Tensor]:
    """``(images, targets)`` for training and evaluation, where targets are required.

    Raises:
        TypeError: the batch has no images or no targets.
    """
    parts = try_split_batch(batch)
    if parts is None or parts[1] is None:
        raise TypeError(
            "Expected a batch of (images, targets) or a dict with 'image' and 'target' tensors, "
            f"but got {type(batch).__name__}."
        )
    return parts[0], parts[1]


def is_soft(targets: Tensor) -> bool:
    """Whether ``targets`` are soft (one probability row per image) rather than class indices."""
    return targets.ndim == 2


def hard_labels(targets: Tensor) -> Tensor:
    """Class indices ``(N,)``: hard targets as they are, soft ones reduced to their most probable class."""
    return targets.argmax(dim=1) if is_soft(targets) else targets
