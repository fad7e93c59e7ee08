"""Train and eval transform presets on torchvision v2, sized and normalised like the backbone's pretraining."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

__all__ = [
    "AUTO_AUGMENTS",
    "INTERPOLATIONS",
    "ToNormalizedTensor",
    "build_eval_transform",
    "build_train_transform",
    "resize_size",
]

AUTO_AUGMENTS = ("randaugment", "trivialaugment", "autoaugment", "none")
AutoAugmentName = Literal["randaugment", "trivialaugment", "autoaugment", "none"]

_INTERPOLATIONS = {
    "nearest": InterpolationMode.NEAREST,
    "bilinear": InterpolationMode.BILINEAR,
    "bicubic": InterpolationMode.BICUBIC,
}
#: the interpolation names the transforms implement (timm also knows "random", "lanczos" ...)
INTERPOLATIONS = tuple(_INTERPOLATIONS)


def _interpolation(name: str) -> InterpolationMode:
    if name not in _INTERPOLATIONS:
        raise ValueError(f"Unknown interpolation {name!r}. Choose one of: {', '.join(_INTERPOLATIONS)}.")
    return _INTERPOLATIONS[name]


#: PIL modes whose pixels are 8-bit values (others, such as 16-bit "I;16", float "F" or 1-bit "1", take torchvision's
#: conversion)
_EIGHT_BIT_MODES = ("L", "LA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr", "P")


class ToNormalizedTensor(torch.nn.Module):
    """An image to a float32 ``(C, H, W)`` tensor normalised with ``mean`` and ``std``, in one step.

    The same values as ``ToImage()``, ``ToDtype(torch.float32, scale=True)`` and ``Normalize(mean, std)`` (to float
    rounding), for PIL images, ``(H, W[, C])`` uint8 arrays and tensors alike. One step instead of three saves
    ~35 us per image: on a 28 px image that is a third of the whole pipeline, decoding included.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std) or any(s <= 0 for s in std):
            raise ValueError(f"Expected as many `mean` as `std` values, all std > 0, but got {mean} and {std}.")
        self.mean = [float(m) for m in mean]
        self.std = [float(s) for s in std]
        # (x / 255 - mean) / std == (x - 255 * mean) * (1 / (255 * std)): one subtraction and one product
        self._shift = torch.tensor(self.mean).view(-1, 1, 1) * 255.0
        self._scale = 1.0 / (torch.tensor(self.std).view(-1, 1, 1) * 255.0)

    def forward(self, image: Any) -> Tensor:
        if (isinstance(image, Image.Image) and image.mode in _EIGHT_BIT_MODES) or isinstance(image, np.ndarray):
            array = np.array(image, copy=True) if isinstance(image, Image.Image) else image
            if array.dtype != np.uint8:
                return self._fallback(image)
            pixels = torch.from_numpy(np.ascontiguousarray(array))
            pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)
            return pixels.to(torch.float32).sub_(self._shift).mul_(self._scale)
        return self._fallback(image)

    def _fallback(self, image: Any) -> Tensor:
        tensor = T.functional.to_dtype(T.functional.to_image(image), torch.float32, scale=True)
        return T.functional.normalize(tensor, mean=self.mean, std=self.std)

    def extra_repr(self) -> str:
        return f"mean={self.mean}, std={self.std}"


def _to_tensor(mean: Sequence[float], std: Sequence[float]) -> list[Any]:
    return [ToNormalizedTensor(mean, std)]


def resize_size(image_size: int | tuple[int, int], crop_pct: float) -> int | tuple[int, int]:
    """What an eval image is resized to before the ``image_size`` center crop.

    For a square size, the short side (aspect ratio kept); for ``(height, width)``, that exact size scaled by
    ``1 / crop_pct``, as timm does.
    """
    if isinstance(image_size, (tuple, list)):
        height, width = image_size
        return (math.floor(height / crop_pct), math.floor(width / crop_pct))
    return math.floor(image_size / crop_pct)


def build_train_transform(
    image_size: int | tuple[int, int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
    scale: tuple[float, float] = (0.08, 1.0),
    hflip: float = 0.5,
    auto_augment: AutoAugmentName = "randaugment",
    randaugment: dict[str, int] | None = None,
    random_erasing: float = 0.0,
) -> T.Compose:
    """RandomResizedCrop, horizontal flip, an automatic augmentation policy, normalisation, optional RandomErasing.

    Args:
        scale: area range of RandomResizedCrop; raise the lower end (0.25-0.35) for small images or small datasets.
        auto_augment: ``"randaugment"`` (with ``randaugment={"num_ops": 2, "magnitude": 9}``), ``"trivialaugment"``,
            ``"autoaugment"`` (ImageNet policy) or ``"none"``.
        random_erasing: probability of erasing a random rectangle (after normalisation).
    """
    mode = _interpolation(interpolation)
    ops: list[Any] = [T.RandomResizedCrop(image_size, scale=scale, interpolation=mode, antialias=True)]
    if hflip > 0:
        ops.append(T.RandomHorizontalFlip(hflip))
    if auto_augment == "randaugment":
        ops.append(T.RandAugment(**{"num_ops": 2, "magnitude": 9, **(randaugment or {})}, interpolation=mode))
    elif auto_augment == "trivialaugment":
        ops.append(T.TrivialAugmentWide(interpolation=mode))
    elif auto_augment == "autoaugment":
        ops.append(T.AutoAugment(T.AutoAugmentPolicy.IMAGENET, interpolation=mode))
    elif auto_augment != "none":
        raise ValueError(f"Unknown auto_augment {auto_augment!r}. Choose one of: {', '.join(AUTO_AUGMENTS)}.")
    ops += _to_tensor(mean, std)
    if random_erasing > 0:
        ops.append(T.RandomErasing(p=random_erasing, value=0))
    return T.Compose(ops)


def build_eval_transform(
    image_size: int | tuple[int, int],
    *,
    mean: Sequence[float],
    std: Sequence[float],
    interpolation: str = "bilinear",
    crop_pct: float = 0.875,
) -> T.Compose:
    """Resize the short side to ``image_size / crop_pct`` and center-crop ``image_size``: deterministic."""
    mode = _interpolation(interpolation)
    return T.Compose(
        [
            T.Resize(resize_size(image_size, crop_pct), interpolation=mode, antialias=True),
            T.CenterCrop(image_size),
            *_to_tensor(mean, std),
        ]
    )
