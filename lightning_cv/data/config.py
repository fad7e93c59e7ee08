"""One data config: the input size, normalisation, interpolation and crop that a model's images are prepared with.

Settings flow from the model to the data: :func:`~lightning_cv.models.backbone.resolve_data_config` reads the
backbone's pretrained config from timm (:meth:`DataConfig.from_timm`), :class:`~lightning_cv.ImageDataModule` applies
its own arguments on top (:meth:`DataConfig.override`) and builds its transforms from the result, and everything
downstream reads that one object: ONNX export metadata (:meth:`DataConfig.export_metadata`), the image-logging
callbacks and :func:`~lightning_cv.interpret.explain_images` (:meth:`DataConfig.denormalize`, :func:`to_display`).
:func:`find_data_config` finds it on any LightningModule or data module, ours or someone else's.

Example:
    >>> config = DataConfig.from_timm({"input_size": (3, 160, 160), "mean": (0.5,) * 3, "std": (0.5,) * 3})
    >>> config.override(image_size=128).input_size
    (3, 128, 128)
    >>> config.export_metadata(input_size=(3, 128, 128))["crop_pct"]
    0.875
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lightning_cv.data.transforms import INTERPOLATIONS

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "OVERRIDE_KEYS",
    "DataConfig",
    "find_data_config",
    "is_image_size",
    "to_display",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: the ImageDataModule arguments (``--data.image_size`` ...) that override the model's config, in this order
OVERRIDE_KEYS = ("image_size", "mean", "std", "interpolation", "crop_pct")


def is_image_size(value: Any) -> bool:
    """A positive int, or a (height, width) pair of them (a bool is no size, although Python counts it an int)."""

    def positive(v: Any) -> bool:
        return isinstance(v, int) and not isinstance(v, bool) and v > 0

    if isinstance(value, (tuple, list)):
        return len(value) == 2 and all(positive(v) for v in value)
    return positive(value)


def _is_numbers(value: Any) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )


@dataclass(frozen=True)
class DataConfig(Mapping[str, Any]):
    """How images are prepared for a model: resized to ``image_size``, normalised with ``mean`` and ``std``.

    The defaults (224 px, ImageNet statistics, bilinear, crop 0.875) apply only when neither the model nor the data
    module says otherwise. Build one from timm's config with :meth:`from_timm`, change it with :meth:`override`, and
    hand it to timm code with :meth:`to_timm`.

    For backwards compatibility the config also reads like the dicts it replaces: ``model.data_config["input_size"]``,
    ``config.get("mean")`` and ``dict(config)`` give timm's keys and values (:meth:`to_timm`), and
    ``datamodule.data_config["image_size"]`` still gives the data module's old value (an int for a square size,
    else ``(height, width)``), although ``"image_size"`` is not among the keys. New code should use the attributes.

    Args:
        image_size: ``(height, width)`` in pixels; an int means a square.
        mean: per-channel mean subtracted after scaling pixels to [0, 1].
        std: per-channel standard deviation divided by (all > 0).
        interpolation: the resize interpolation (timm's name: ``"bilinear"``, ``"bicubic"`` ...).
        crop_pct: evaluation resizes to ``image_size / crop_pct`` and center-crops ``image_size``.
        crop_mode: timm's crop mode, kept for timm consumers (evaluation here always crops the center).
        in_chans: channels the model takes (``input_size[0]``).
    """

    image_size: tuple[int, int] = (224, 224)
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    interpolation: str = "bilinear"
    crop_pct: float = 0.875
    crop_mode: str = "center"
    in_chans: int = 3

    def __post_init__(self) -> None:
        size: Any = self.image_size
        if not is_image_size(size):
            raise ValueError(
                "Expected `image_size` to be a positive int or a (height, width) pair of positive ints, "
                f"but got {size!r}."
            )
        # frozen: normalised spellings are written once, here (an int is a square, YAML gives lists)
        object.__setattr__(self, "image_size", (size, size) if isinstance(size, int) else tuple(size))
        for name in ("mean", "std"):
            value = getattr(self, name)
            value = tuple(value) if isinstance(value, (list, tuple)) else value
            if not _is_numbers(value):
                raise ValueError(f"Expected `{name}` to be a sequence of numbers (one per channel), but got {value!r}.")
            object.__setattr__(self, name, value)
        if min(self.std) <= 0:
            raise ValueError(f"Expected `std` to be > 0 (images are divided by it), but got {self.std!r}.")
        if isinstance(self.crop_pct, bool) or not isinstance(self.crop_pct, (int, float)) or not self.crop_pct > 0:
            raise ValueError(
                f"Expected `crop_pct` > 0 (the resize before the center crop divides by it), but got {self.crop_pct!r}."
            )
        if not isinstance(self.interpolation, str):
            raise ValueError(
                f"Expected `interpolation` to be a name such as 'bicubic', but got {self.interpolation!r}."
            )
        if isinstance(self.in_chans, bool) or not isinstance(self.in_chans, int) or self.in_chans < 1:
            raise ValueError(f"Expected `in_chans` to be an integer >= 1, but got {self.in_chans!r}.")

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_timm(cls, config: Mapping[str, Any]) -> DataConfig:
        """From timm's data config (``timm.data.resolve_model_data_config(model)``), or a dict spelled like it.

        ``input_size`` is ``(channels, height, width)``; the data module's spelling ``image_size`` (one side or
        ``(height, width)``) is accepted in its place. ``mean``, ``std`` and one of the two sizes are required;
        ``interpolation``, ``crop_pct`` and ``crop_mode`` default as in timm. A ``DataConfig`` is returned as it is.

        Raises:
            ValueError: a required key is missing or a value has the wrong form (the message names it).
        """
        if isinstance(config, DataConfig):
            return config
        missing = [k for k in ("mean", "std") if k not in config]
        if "input_size" not in config and "image_size" not in config:
            missing.append("input_size")
        if missing:
            raise ValueError(f"`data_config` lacks {', '.join(map(repr, missing))}; it has {sorted(config)}.")
        in_chans = 3
        if "input_size" in config:  # preferred when both are given: it is timm's, and it has the channels
            size = _ints(config["input_size"])
            if size is None or len(size) != 3 or min(size) < 1:
                raise ValueError(
                    f"Expected `input_size` to be (channels, height, width), but got {config['input_size']!r}."
                )
            in_chans, image_size = size[0], (size[1], size[2])
        else:
            image_size = config["image_size"]
        crop_pct = config.get("crop_pct")
        return cls(
            image_size=image_size,
            mean=_floats(config["mean"], "mean"),
            std=_floats(config["std"], "std"),
            interpolation=str(config.get("interpolation") or "bilinear"),
            crop_pct=0.875 if crop_pct is None else float(crop_pct),
            crop_mode=str(config.get("crop_mode") or "center"),
            in_chans=in_chans,
        )

    def override(
        self,
        *,
        image_size: int | Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
    ) -> DataConfig:
        """A copy with every argument that is not ``None`` applied (an int ``image_size`` is a square).

        The values are kept as given (``mean=(0, 0, 0)`` stays integers), so what a user typed is what export
        metadata records.
        """
        given: dict[str, Any] = dict(
            image_size=image_size, mean=mean, std=std, interpolation=interpolation, crop_pct=crop_pct
        )
        return dataclasses.replace(self, **{k: v for k, v in given.items() if v is not None})

    def with_supported_interpolation(self) -> DataConfig:
        """This config with an interpolation the transforms implement: timm's others ("random" ...) become bilinear."""
        if self.interpolation in INTERPOLATIONS:
            return self
        return dataclasses.replace(self, interpolation="bilinear")

    # ------------------------------------------------------------------ views
    @property
    def input_size(self) -> tuple[int, int, int]:
        """``(channels, height, width)``, as timm and ``example_input_array`` take it."""
        return (self.in_chans, *self.image_size)

    @property
    def transform_size(self) -> int | tuple[int, int]:
        """The ``image_size`` argument of the transform builders: one int for a square, else ``(height, width)``.

        Not the same thing for a square: an int resizes the short side before the crop (keeping the aspect ratio),
        a pair resizes to exactly that shape.
        """
        height, width = self.image_size
        return height if height == width else (height, width)

    def to_timm(self) -> dict[str, Any]:
        """timm's dict (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``, ``crop_mode``).

        For ``timm.data.create_transform(**config.to_timm())`` and other timm consumers.
        """
        return {
            "input_size": self.input_size,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "std": self.std,
            "crop_pct": self.crop_pct,
            "crop_mode": self.crop_mode,
        }

    def to_arguments(self) -> dict[str, Any]:
        """The :class:`~lightning_cv.ImageDataModule` arguments that reproduce this config (see ``OVERRIDE_KEYS``)."""
        return {
            "image_size": self.transform_size,
            "mean": self.mean,
            "std": self.std,
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }

    def export_metadata(self, input_size: Sequence[int] | None = None) -> dict[str, Any]:
        """The preprocessing an exported model needs, as JSON-ready values for its metadata.

        Keys, in this order: ``mean``, ``std`` (lists), ``interpolation``, ``crop_pct``, then ``input_size`` (a list)
        when given: pass the shape of the example the file was traced with (``example.shape[1:]``), since that is
        what the file takes.
        """
        meta: dict[str, Any] = {
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "crop_pct": self.crop_pct,
        }
        if input_size is not None:
            meta["input_size"] = [int(v) for v in input_size]
        return meta

    def denormalize(self, images: Tensor) -> Tensor:
        """Undo the normalisation of ``(N, C, H, W)`` or ``(C, H, W)`` images: float pixels in [0, 1], for display."""
        pictures = images.detach().float()
        mean = torch.tensor(self.mean, dtype=pictures.dtype, device=pictures.device).view(-1, 1, 1)
        std = torch.tensor(self.std, dtype=pictures.dtype, device=pictures.device).view(-1, 1, 1)
        return (pictures * std + mean).clamp(0, 1)

    # ------------------------------------------------------------------ read-only dict access (compatibility)
    def __getitem__(self, key: str) -> Any:
        if key == "image_size":  # the data module's old dict; not among the keys, so dict(config) is timm's dict
            return self.transform_size
        return self.to_timm()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.to_timm())

    def __len__(self) -> int:
        return len(self.to_timm())


def _ints(value: Any) -> tuple[int, ...] | None:
    try:
        return tuple(int(v) for v in value)
    except (TypeError, ValueError):
        return None


def _floats(value: Any, name: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        message = f"Expected `{name}` to be a sequence of numbers (one per channel), but got {value!r}."
        raise ValueError(message) from None


def find_data_config(*owners: Any) -> DataConfig | None:
    """The data config of the first of ``owners`` that has a usable one, else ``None``.

    Looks at each owner's ``data_config`` attribute: a :class:`DataConfig` (ours), or a dict in timm's form (a
    foreign module that stores ``timm.data.resolve_model_data_config(model)``). Anything else, and a dict that lacks
    ``mean``, ``std`` or a size, counts as none, so callbacks work with any LightningModule. Callbacks ask the data
    module first, since it holds the overrides the images were really made with:
    ``find_data_config(getattr(trainer, "datamodule", None), pl_module)`` (Lightning sets ``trainer.datamodule``
    at run time, so type checkers do not know it).
    """
    for owner in owners:
        value = getattr(owner, "data_config", None) if owner is not None else None
        if isinstance(value, Mapping):
            try:
                return DataConfig.from_timm(value)
            except (TypeError, ValueError):
                continue
    return None


def to_display(images: Tensor, config: DataConfig | None = None) -> np.ndarray:
    """Model inputs ``(N, C, H, W)`` as pictures a person can look at: ``(N, H, W, 3)`` uint8.

    Un-normalised with ``config`` (:meth:`DataConfig.denormalize`); without one (a foreign module whose statistics
    are unknown) each image is scaled from its own minimum and maximum instead.
    """
    pictures = images[:, :3].detach().float().cpu()
    if config is not None:
        pictures = config.denormalize(pictures)
    else:
        low = pictures.flatten(1).min(1).values.view(-1, 1, 1, 1)
        high = pictures.flatten(1).max(1).values.view(-1, 1, 1, 1)
        pictures = (pictures - low) / (high - low).clamp_min(1e-12)
    return (pictures.clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)
