"""From logits to the scores a decision is made on: temperature, test-time augmentation, softmax or sigmoid.

One definition behind every door: ``ImageClassifier`` evaluates and predicts through :func:`calibrated_logits`, and
the ONNX export and the benchmark wrap the model in :class:`ScoreHead`, which calls the same function, so a file
exported with ``--tta flip`` computes what ``lightning-cv test --tta flip`` measured.

Test-time augmentation (TTA) averages the class probabilities of several views of each image:

- ``"flip"``: the image and its horizontal mirror (2 views);
- ``"flip_crops"``: those two plus the four corner crops covering 7/8 of each side, resized back to the input size
  (6 views).

The views go through the model as one batch (``V x N`` images), so the cost is about ``V`` times one forward pass.
Averaging probabilities (not logits) is what fastai and timm's validation script do; for a multi-class model the
averaged probabilities are returned as their logarithm (``log p`` are logits whose softmax is ``p``), so losses,
argmax and softmax downstream need no special case.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cv.data.batch import MULTILABEL, check_task

__all__ = [
    "CROP_FRACTION",
    "TTA_MODES",
    "TTA_VIEWS",
    "ScoreHead",
    "calibrated_logits",
    "calibrated_probabilities",
    "check_tta",
    "tta_views",
]

#: the test-time augmentations: none, horizontal flip, flip plus four corner crops
TTA_MODES = ("none", "flip", "flip_crops")
#: how many views each mode averages
TTA_VIEWS = {"none": 1, "flip": 2, "flip_crops": 6}
#: the side of a ``flip_crops`` corner crop, as a fraction of the input's side
CROP_FRACTION = 7 / 8
#: the smallest input side whose 7/8 crop still differs from the image by at least 2 pixels
_MIN_CROP_SIDE = 16


def check_tta(mode: str, input_size: Sequence[int] | None = None) -> str:
    """``mode`` if it is one of :data:`TTA_MODES` and the input size allows its views; else a ``ValueError``.

    Args:
        mode: ``"none"``, ``"flip"`` or ``"flip_crops"``.
        input_size: ``(C, H, W)`` or ``(H, W)`` of the model's input, to check that ``flip_crops`` has room.
    """
    if mode not in TTA_MODES:
        raise ValueError(f"Expected `tta` to be one of {', '.join(TTA_MODES)}, but got {mode!r}.")
    if mode == "flip_crops" and input_size is not None:
        height, width = int(input_size[-2]), int(input_size[-1])
        if min(height, width) < _MIN_CROP_SIDE:
            raise ValueError(
                f"`tta='flip_crops'` needs an input of at least {_MIN_CROP_SIDE} px per side for its corner crops, "
                f"but this model takes {height}x{width}. Use `tta='flip'`, or a larger `--data.image_size`."
            )
    return mode


def tta_views(images: Tensor, mode: str) -> list[Tensor]:
    """The views ``mode`` averages, each shaped like ``images`` ``(N, C, H, W)``; the first is ``images`` itself."""
    check_tta(mode, images.shape)
    views = [images]
    if mode == "none":
        return views
    views.append(images.flip(-1))
    if mode == "flip_crops":
        height, width = int(images.shape[-2]), int(images.shape[-1])  # fixed in an exported graph, as the size is
        ch, cw = round(height * CROP_FRACTION), round(width * CROP_FRACTION)
        for top in (0, height - ch):
            for left in (0, width - cw):
                crop = images[..., top : top + ch, left : left + cw]
                views.append(F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False))
    return views


def _view_logits(forward: Callable[[Tensor], Tensor], images: Tensor, temperature: float, tta: str) -> Tensor:
    """``(V, N, C)`` logits of the ``tta`` views divided by ``temperature``, the views run as one batch."""
    views = tta_views(images, tta)
    logits = forward(torch.cat(views) if len(views) > 1 else images).float()
    if temperature != 1.0:
        logits = logits / temperature
    return logits.reshape(len(views), images.shape[0], -1)


def calibrated_probabilities(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    task: str = "multiclass",
    temperature: float = 1.0,
    tta: str = "none",
) -> Tensor:
    """The mean over the ``tta`` views of ``softmax(forward(view) / temperature)`` (multi-label: ``sigmoid``)."""
    logits = _view_logits(forward, images, temperature, tta)
    return (logits.sigmoid() if check_task(task) == MULTILABEL else logits.softmax(dim=-1)).mean(dim=0)


def calibrated_logits(
    forward: Callable[[Tensor], Tensor],
    images: Tensor,
    *,
    task: str = "multiclass",
    temperature: float = 1.0,
    tta: str = "none",
) -> Tensor:
    """The scores a decision is made on, as logits: ``forward(images) / temperature``, averaged over ``tta`` views.

    Multi-class: with views, the log of the mean of the views' softmax probabilities (so ``softmax`` of the result
    is :func:`calibrated_probabilities`). Multi-label: with views, the logit of the mean of the views' sigmoid
    scores. Without views and with ``temperature=1`` this is ``forward(images)`` itself, in float32.
    """
    logits = _view_logits(forward, images, temperature, tta)
    if len(logits) == 1:
        return logits[0]
    if check_task(task) == MULTILABEL:
        return logits.sigmoid().mean(dim=0).clamp(1e-7, 1 - 1e-7).logit()
    # log of the mean probability, computed stably: logsumexp of the views' log-probabilities minus log(V)
    return torch.logsumexp(logits.log_softmax(dim=-1), dim=0) - math.log(len(logits))


class ScoreHead(nn.Module):
    """``model`` followed by the scoring of :func:`calibrated_logits`, or of :func:`calibrated_probabilities`.

    Exports and the benchmark run the model through this head, so they compute what evaluation measured.

    Args:
        model: maps ``(N, C, H, W)`` images to ``(N, num_classes)`` logits.
        task: ``"multiclass"`` or ``"multilabel"``.
        temperature: logits are divided by it (a fitted temperature calibrates the probabilities).
        tta: ``"none"``, ``"flip"`` or ``"flip_crops"``.
        probabilities: output probabilities (softmax, or sigmoid for multi-label) instead of logits.
    """

    def __init__(
        self,
        model: nn.Module,
        task: str = "multiclass",
        temperature: float = 1.0,
        tta: str = "none",
        probabilities: bool = False,
    ) -> None:
        super().__init__()
        self.model = model
        self.task = check_task(task)
        self.temperature = float(temperature)
        self.tta = check_tta(tta)
        self.probabilities = probabilities

    def forward(self, images: Tensor) -> Tensor:
        score = calibrated_probabilities if self.probabilities else calibrated_logits
        return score(self.model, images, task=self.task, temperature=self.temperature, tta=self.tta)
