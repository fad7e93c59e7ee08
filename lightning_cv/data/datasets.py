"""Datasets over image files, subsets of in-memory sets with their own transform, and torchvision sets by name."""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, default_collate

from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError, load_image

__all__ = [
    "TORCHVISION_ALIASES",
    "ImageFileDataset",
    "SkippingDataLoader",
    "TransformSubset",
    "collate_readable",
    "collate_skipping_bad",
    "load_torchvision_dataset",
    "multi_hot",
    "resolve_torchvision_name",
]

Transform = Callable[[Image.Image], Any]


def multi_hot(label_sets: Sequence[Sequence[int]], num_classes: int) -> Tensor:
    """Float32 ``(N, num_classes)`` rows with 1 at each image's label indices: the multi-label target format.

    Example:
        >>> multi_hot([(0, 2), ()], 3).tolist()
        [[1.0, 0.0, 1.0], [0.0, 0.0, 0.0]]
    """
    rows = torch.zeros(len(label_sets), num_classes, dtype=torch.float32)
    for row, labels in zip(rows, label_sets, strict=True):
        row[list(labels)] = 1.0
    return rows


class ImageFileDataset(Dataset):
    """Labelled (or, with ``labels=None``, unlabelled) image files decoded with :func:`load_image`.

    A file that fails to decode yields ``None`` instead of another file's image and label (timm's dataset answers a
    bad file with the *next* one, drifting labels); :func:`collate_skipping_bad` drops it from the batch. Unlabelled
    items are ``(image, index)`` so a prediction can be traced back to ``paths[index]``.

    Multi-label data gives each path a tuple of label indices (empty for an image without labels) and
    ``num_classes``; its items then carry multi-hot float32 targets ``(num_classes,)``. ``targets`` keeps the tuples
    (a few bytes per image, where multi-hot rows for a million images and a thousand classes would take 4 GB).
    """

    def __init__(
        self,
        paths: Sequence[str],
        labels: Sequence[int | Sequence[int]] | None,
        transform: Transform | None = None,
        *,
        num_classes: int | None = None,
        min_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if labels is not None and len(labels) != len(paths):
            raise ValueError(f"Expected one label per path, got {len(labels)} labels for {len(paths)} paths.")
        self.paths = list(paths)
        self.targets: list[Any] | None = None
        #: whether the labels are sets of label indices (multi-label) rather than one class index per image
        self.multilabel = labels is not None and any(isinstance(y, (tuple, list)) for y in labels)
        self.num_classes = num_classes
        if labels is not None and self.multilabel:
            self.targets = _label_sets(labels, num_classes)
        elif labels is not None:
            self.targets = list(labels)
        self.transform = transform
        self.min_size = min_size
        self.max_pixels = max_pixels

    def __len__(self) -> int:
        return len(self.paths)

    def read_bytes(self, index: int) -> bytes | None:
        """The bytes of image ``index`` when a subclass reads them itself (a tar shard); ``None``: open the path."""
        return None

    def __getitem__(self, index: int) -> tuple[Any, int | Tensor] | None:
        try:
            data = self.read_bytes(index)
            image = load_image(self.paths[index], max_pixels=self.max_pixels, min_size=self.min_size, data=data)
        except BadImageError as err:
            warnings.warn(f"Skipping an image that cannot be used: {err}", stacklevel=2)
            return None
        sample = self.transform(image) if self.transform is not None else image
        if self.targets is None:
            return sample, index
        if self.multilabel:
            assert self.num_classes is not None
            return sample, multi_hot([self.targets[index]], self.num_classes)[0]
        return sample, self.targets[index]


class _LazyNames(Sequence[str]):
    """Names made when asked for: a million strings made up front would cost more than the rest of a setup."""

    def __init__(self, size: int, name: Callable[[int], str]) -> None:
        self.size, self.name = size, name

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self.name(i) for i in range(self.size)[index]]
        return self.name(int(index))


class ByteImageDataset(ImageFileDataset):
    """Images whose encoded bytes a subclass reads (a tar shard by offset, an Arrow row), decoded like files.

    ``paths`` names each image for messages (``name(i)``, made when asked for); ``targets`` are its class indices,
    or (multi-label, with ``num_classes``) its tuples of label indices. Subclasses implement :meth:`read_bytes`.
    """

    def __init__(
        self,
        count: int,
        name: Callable[[int], str],
        labels: Sequence[int | Sequence[int]],
        transform: Transform | None = None,
        *,
        num_classes: int | None = None,
        min_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        if len(labels) != count:
            raise ValueError(f"Expected one label per image, got {len(labels)} labels for {count} images.")
        super().__init__([], [], transform, min_size=min_size, max_pixels=max_pixels)
        self.paths = _LazyNames(count, name)  # type: ignore[assignment]
        self.multilabel = any(isinstance(y, (tuple, list)) for y in labels)
        self.num_classes = num_classes
        self.targets = _label_sets(labels, num_classes) if self.multilabel else [int(y) for y in labels]  # type: ignore[arg-type]

    def __len__(self) -> int:
        return len(self.paths)

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start reading the bytes of ``indices`` before they are asked for one by one (a subclass on URLs)."""

    def __getitems__(self, indices: Sequence[int]) -> list[Any]:
        """A batch (the DataLoader fetches through this): :meth:`prefetch`, then each item in order."""
        self.prefetch(indices)
        return [self[i] for i in indices]


def _label_sets(labels: Sequence[Any], num_classes: int | None) -> list[tuple[int, ...]]:
    if num_classes is None:
        raise ValueError(
            "Expected `num_classes` with multi-label `labels` (tuples of label indices): the multi-hot targets "
            "need their length. Pass `num_classes=len(class_names)`."
        )
    if not all(isinstance(y, (tuple, list)) for y in labels):
        raise ValueError(
            "Expected every label to be a tuple of label indices (multi-label) or every one an int (one class per "
            "image), but got a mix. Write `(k,)` for an image with the single label k."
        )
    sets = [tuple(int(i) for i in y) for y in labels]
    out_of_range = sorted({i for y in sets for i in y if not 0 <= i < num_classes})
    if out_of_range:
        raise ValueError(f"Expected label indices in [0, {num_classes}), but got {out_of_range}.")
    return sets


class TransformSubset(Dataset):
    """``base[indices]`` with its own transform; images are converted to RGB first (MNIST is greyscale)."""

    def __init__(self, base: Any, indices: Sequence[int], transform: Transform | None = None) -> None:
        self.base = base
        self.indices = list(indices)
        self.transform = transform
        targets = getattr(base, "targets", None)
        if targets is None:
            targets = getattr(base, "labels", None)  # SVHN, STL10
        self.targets = [int(targets[i]) for i in self.indices] if targets is not None else None

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label = self.base[self.indices[index]]
        if isinstance(image, Image.Image) and image.mode != "RGB":
            image = image.convert("RGB")
        return (self.transform(image) if self.transform is not None else image), int(label)


def collate_readable(batch: list[Any]) -> Any | None:
    """``default_collate`` over the decoded samples, or ``None`` when none did (for :class:`SkippingDataLoader`)."""
    kept = [item for item in batch if item is not None]
    return default_collate(kept) if kept else None


class SkippingDataLoader(DataLoader):
    """A DataLoader that leaves out the batches its collate function answers with ``None`` (:func:`collate_readable`).

    For prediction, where every file gets a row readable or not: a batch of unreadable files must not end the run,
    and the model cannot be handed an empty batch instead (timm's ViTs fail to reshape zero images). Lightning's
    ``batch_indices`` argument of prediction writers counts the batches the loop received, so after a left-out batch
    it no longer matches the sampler; :class:`~lightning_cv.callbacks.PredictionWriter` reads the dataset indices
    from the batch itself instead.
    """

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        for batch in super().__iter__():
            if batch is not None:
                yield batch


def collate_skipping_bad(batch: list[Any]) -> Any:
    """``default_collate`` over the samples that decoded; an all-bad batch is an error naming the cause."""
    kept = [item for item in batch if item is not None]
    if not kept:
        raise RuntimeError(
            f"None of the {len(batch)} images of a batch could be decoded (see the warnings above for the files). "
            "Run with `image_check='decode'` to find and skip such files at setup."
        )
    return default_collate(kept)


#: short names for the common torchvision sets; any other ``torchvision.datasets`` class works by its own name
TORCHVISION_ALIASES = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion_mnist": "FashionMNIST",
    "fashion-mnist": "FashionMNIST",
    "fashionmnist": "FashionMNIST",
    "kmnist": "KMNIST",
    "svhn": "SVHN",
    "stl10": "STL10",
}


def resolve_torchvision_name(name: str) -> str | None:
    """The ``torchvision.datasets`` class name for ``name`` (alias, ``torchvision:Name`` or case-insensitive)."""
    import torchvision.datasets as tvd

    key = name.split(":", 1)[1] if name.lower().startswith("torchvision:") else name
    if key.lower() in TORCHVISION_ALIASES:
        return TORCHVISION_ALIASES[key.lower()]
    for attr in dir(tvd):
        obj = getattr(tvd, attr)
        if attr.lower() == key.lower() and inspect.isclass(obj) and issubclass(obj, Dataset):
            return attr
    return None


def load_torchvision_dataset(class_name: str, root: str, split: str, download: bool, **kwargs: Any) -> Any:
    """Instantiate ``torchvision.datasets.<class_name>`` for ``split`` ("train" or "test")."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, class_name)
    params = inspect.signature(cls).parameters
    if "train" in params:
        kwargs["train"] = split == "train"
    elif "split" in params:
        kwargs["split"] = split
    else:
        raise ValueError(
            f"torchvision.datasets.{class_name} takes neither `train` nor `split`, so its splits cannot be chosen. "
            "Use an image folder or a CSV list instead."
        )
    if "download" in params:
        kwargs["download"] = download
    try:
        return cls(root=root, **kwargs)
    except RuntimeError as err:
        if "download" in str(err).lower() or "not found" in str(err).lower():
            raise FileNotFoundError(
                f"{class_name} is not in '{root}' ({err}). Pass `download=True` to download it there, or point "
                "`data_dir` at the folder that holds it."
            ) from err
        raise
