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
  most probable one (multi-class tasks only);
- multi-label: one multi-hot row per image, ``(N, num_classes)`` float, 1 where the image carries the label. MixUp
  and CutMix mix these rows the same way (values in [0, 1] that need not sum to 1).

Soft and multi-label targets have the same shape, so the kind cannot be read from the tensor: it comes from the
**task** (:data:`TASKS`), which a module states as ``hparams["task"]`` (:func:`task_of`; absent means
``"multiclass"``). Scores are class probabilities (softmax) for ``"multiclass"`` and independent label
probabilities (sigmoid) for ``"multilabel"`` (:func:`scores`); a multi-label decision is every label whose score
reaches its threshold (:func:`predicted_sets`, with the module's :func:`decision_thresholds`).

Example:
    >>> import torch
    >>> images, targets = split_batch({"image": torch.zeros(2, 3, 8, 8), "label": torch.tensor([0, 2])})
    >>> hard_labels(torch.tensor([[0.7, 0.3], [0.2, 0.8]])).tolist()
    [0, 1]
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

__all__ = [
    "IMAGE_KEYS",
    "MULTICLASS",
    "MULTILABEL",
    "TARGET_KEYS",
    "TASKS",
    "check_task",
    "decision_thresholds",
    "hard_labels",
    "is_soft",
    "label_sets",
    "predicted_sets",
    "scores",
    "split_batch",
    "split_labelled_batch",
    "task_of",
    "try_split_batch",
]

#: one label per image (softmax over the classes)
MULTICLASS = "multiclass"
#: a set of labels per image, possibly empty (one sigmoid per label)
MULTILABEL = "multilabel"
TASKS = (MULTICLASS, MULTILABEL)
#: the decision threshold of a label when none was tuned or given
DEFAULT_THRESHOLD = 0.5

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


def check_task(task: Any) -> str:
    """``task`` if it is one of :data:`TASKS`; else a ``ValueError`` naming the choices."""
    if task not in TASKS:
        raise ValueError(f"Expected `task` to be one of {', '.join(map(repr, TASKS))}, but got {task!r}.")
    return str(task)


def task_of(module: Any) -> str:
    """``"multilabel"`` for a module whose ``hparams["task"]`` says so, else ``"multiclass"``.

    Lenient on purpose: callbacks meet other people's modules, and a ``task`` of their own (torchmetrics' ``"binary"``,
    say, one class per image) must not make a callback fail.
    """
    hparams: Any = getattr(module, "hparams", None)
    task = hparams.get("task") if hasattr(hparams, "get") else None
    return MULTILABEL if task == MULTILABEL else MULTICLASS


def scores(logits: Tensor, task: str) -> Tensor:
    """Float32 scores ``(N, C)``: softmax class probabilities (multiclass) or sigmoid label probabilities."""
    logits = logits.float()
    return logits.sigmoid() if check_task(task) == MULTILABEL else logits.softmax(dim=1)


def decision_thresholds(module: Any, num_classes: int) -> Tensor:
    """The per-label thresholds ``(C,)`` of a multi-label module (its ``thresholds`` tensor), else 0.5 for all."""
    thresholds = getattr(module, "thresholds", None)
    if isinstance(thresholds, Tensor) and thresholds.shape == (num_classes,):
        return thresholds.detach().float()
    return torch.full((num_classes,), DEFAULT_THRESHOLD)


def label_sets(targets: Tensor) -> Tensor:
    """Multi-hot targets (mixed ones included) as a boolean ``(N, C)``: the labels with weight at least 0.5."""
    if targets.ndim != 2:
        raise ValueError(f"Expected multi-hot targets of shape (N, C), but got {tuple(targets.shape)}.")
    return targets >= DEFAULT_THRESHOLD


def predicted_sets(label_scores: Tensor, thresholds: Tensor) -> Tensor:
    """The predicted label sets, boolean ``(N, C)``: every label whose score reaches its threshold."""
    return label_scores >= thresholds.to(label_scores.device, label_scores.dtype)
