"""The embedded default datasets: coloured shapes on textured backgrounds, generated on the fly, no network.

:class:`ShapesDataset` has one shape per image (multiclass), :class:`MultiLabelShapesDataset` zero to three
different shapes per image (multi-label). Every image is a pure function of ``(seed, split, index)``, so any worker,
process or resumed run renders the same image, and splits never share an image. The objects' bounding boxes are
known, so tests can check that an explanation (Grad-CAM) looks at the object rather than the background.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch import Tensor
from torch.utils.data import Dataset

from lightning_cv.data.datasets import multi_hot

__all__ = ["SHAPE_CLASSES", "MultiLabelShapesDataset", "ShapesDataset"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 3}
#: how often a multi-label image holds 0, 1, 2 or 3 shapes: 1.75 shapes on average, so each of the six classes is
#: in 1.75 / 6 = 29% of the images
_SHAPE_COUNT_PROBS = (0.1, 0.3, 0.35, 0.25)

Box = tuple[int, int, int, int]


def _polygon(kind: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if kind == "square":
        pts = [(math.cos(a), math.sin(a)) for a in (math.pi / 4 + k * math.pi / 2 for k in range(4))]
    elif kind == "triangle":
        pts = [(math.cos(a), math.sin(a)) for a in (-math.pi / 2 + k * 2 * math.pi / 3 for k in range(3))]
    elif kind == "star":
        pts = [
            ((1.0 if k % 2 == 0 else 0.42) * math.cos(a), (1.0 if k % 2 == 0 else 0.42) * math.sin(a))
            for k, a in enumerate(-math.pi / 2 + k * math.pi / 5 for k in range(10))
        ]
    else:  # cross
        w = 0.33
        pts = [
            (-w, -1),
            (w, -1),
            (w, -w),
            (1, -w),
            (1, w),
            (w, w),
            (w, 1),
            (-w, 1),
            (-w, w),
            (-1, w),
            (-1, -w),
            (-w, -w),
        ]
    cos, sin = math.cos(angle), math.sin(angle)
    return [(cx + r * (x * cos - y * sin), cy + r * (x * sin + y * cos)) for x, y in pts]


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    c1, c2 = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    theta = rng.uniform(0, 2 * math.pi)
    ramp = (xx * math.cos(theta) + yy * math.sin(theta) + 1.5) / 3.0
    image = c1 * ramp[..., None] + c2 * (1 - ramp[..., None])
    freq, phase = rng.uniform(2, 9), rng.uniform(0, 2 * math.pi)
    image += 25 * np.sin(2 * math.pi * freq * (xx * math.sin(theta) - yy * math.cos(theta)) + phase)[..., None]
    image += rng.normal(0, 12, (size, size, 3))
    return np.clip(image, 0, 255)


def _canvas(rng: np.random.Generator, size: int) -> tuple[np.ndarray, Image.Image, ImageDraw.ImageDraw]:
    """A textured background with clutter lines: the array (to pick colours against) and the image to draw on."""
    background = _background(rng, size)
    image = Image.fromarray(background.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(1, 4))):  # clutter: thin lines that belong to no class
        x0, y0, x1, y1 = rng.uniform(0, size, 4)
        draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=1)
    return background, image, draw


def _draw_shape(
    draw: ImageDraw.ImageDraw,
    rng: np.random.Generator,
    background: np.ndarray,
    kind: str,
    cx: float,
    cy: float,
    r: float,
) -> Box:
    """Draw one shape of radius ``r`` at ``(cx, cy)`` in a random colour and rotation; its bounding box in pixels."""
    size = background.shape[0]
    mean = background[int(max(cy - r, 0)) : int(cy + r), int(max(cx - r, 0)) : int(cx + r)].reshape(-1, 3).mean(0)
    color = rng.uniform(0, 255, 3)
    while np.abs(color - mean).sum() < 180:  # keep the object visible against its own background
        color = rng.uniform(0, 255, 3)
    fill = tuple(int(v) for v in color)
    angle = rng.uniform(0, 2 * math.pi)
    if kind in ("circle", "ring"):
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        if kind == "ring":
            inner = r * 0.55
            hole = tuple(int(v) for v in background[int(cy), int(cx)])
            draw.ellipse([cx - inner, cy - inner, cx + inner, cy + inner], fill=hole)
        box = (cx - r, cy - r, cx + r, cy + r)
    else:
        points = _polygon(kind, cx, cy, r, angle)
        draw.polygon(points, fill=fill)
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        box = (min(xs), min(ys), max(xs), max(ys))
    return (
        int(max(0, math.floor(box[0]))),
        int(max(0, math.floor(box[1]))),
        int(min(size, math.ceil(box[2]))),
        int(min(size, math.ceil(box[3]))),
    )


class _SplitOfShapes(Dataset):
    """What both shapes sets share: ``num_samples`` images of one split, each a pure function of its index."""

    def __init__(
        self,
        num_samples: int,
        image_size: int,
        seed: int,
        split: str,
        transform: Callable[[Image.Image], Any] | None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"Expected `split` to be one of {', '.join(_SPLIT_IDS)}, but got {split!r}.")
        if num_samples < 1 or image_size < 16:
            raise ValueError(f"Expected num_samples >= 1 and image_size >= 16, got {num_samples} and {image_size}.")
        self.num_samples = num_samples
        self.image_size = image_size
        self.seed = seed
        self.split = split
        self.transform = transform

    def __len__(self) -> int:
        return self.num_samples


def _imbalanced_targets(num_samples: int, fractions: Sequence[float]) -> list[int]:
    """``num_samples`` labels with the classes in the given proportions (each at least one image), interleaved."""
    if len(fractions) != len(SHAPE_CLASSES) or any(
        isinstance(f, bool) or not isinstance(f, (int, float)) or f <= 0 for f in fractions
    ):
        raise ValueError(
            f"Expected `class_fractions` to be {len(SHAPE_CLASSES)} positive numbers (one per shape: "
            f"{', '.join(SHAPE_CLASSES)}), but got {list(fractions)!r}."
        )
    total = float(sum(fractions))
    counts = [max(1, round(num_samples * f / total)) for f in fractions]
    counts[max(range(len(counts)), key=counts.__getitem__)] += num_samples - sum(counts)  # exactly num_samples
    # spread each class evenly over the split: the k-th image of class c sits at (k + 0.5) / n_c along it
    ranked = sorted(((k + 0.5) / n, c) for c, n in enumerate(counts) for k in range(n))
    return [c for _, c in ranked]


class ShapesDataset(_SplitOfShapes):
    """Six classes of shapes (circle, square, triangle, star, cross, ring) at random positions, sizes, rotations and
    colours over gradient-and-stripe textures with noise and clutter lines.

    Learnable in a few CPU epochs by a small CNN, but not trivially: colour carries no information, and size,
    position, rotation and background vary.

    Args:
        num_samples: images in this split (classes are balanced).
        image_size: side of the square images.
        seed: base seed; ``(seed, split, index)`` fixes every image.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``; each split renders different images.
        transform: applied to the PIL image.
        class_fractions: relative share of each class (six positive numbers), for an imbalanced set: ``[1, 1, 1, 1,
            1, 0.05]`` makes rings 5% as common as each other shape. ``None``: balanced.
    """

    classes = list(SHAPE_CLASSES)

    def __init__(
        self,
        num_samples: int = 1800,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
        class_fractions: Sequence[float] | None = None,
    ) -> None:
        super().__init__(num_samples, image_size, seed, split, transform)
        if class_fractions is None:
            self.targets = [i % len(SHAPE_CLASSES) for i in range(num_samples)]
        else:
            self.targets = _imbalanced_targets(num_samples, class_fractions)

    def render(self, index: int) -> tuple[Image.Image, int, Box]:
        """The image, its label and the object's bounding box ``(x0, y0, x1, y1)``."""
        label = self.targets[index]
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        size = self.image_size
        background, image, draw = _canvas(rng, size)
        r = rng.uniform(0.16, 0.32) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
        return image, label, _draw_shape(draw, rng, background, SHAPE_CLASSES[label], cx, cy, r)

    def box(self, index: int) -> Box:
        """The bounding box ``(x0, y0, x1, y1)`` of the object in image ``index``, in pixels."""
        return self.render(index)[2]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label, _ = self.render(index)
        return (self.transform(image) if self.transform is not None else image), label


class MultiLabelShapesDataset(_SplitOfShapes):
    """Zero to three different shapes per image, each in its own quarter of the image: the multi-label twin of
    :class:`ShapesDataset`, with the same six classes, shapes, colours and backgrounds.

    About 10% of the images hold no shape, 30% one, 35% two and 25% three, so each class is in about 29% of the
    images (in 25-33% of any few hundred). A shape sits in one cell of a 2x2 grid, with a random position inside it,
    so shapes never overlap; they are drawn smaller than in :class:`ShapesDataset` (radius 13-23% of the side) to fit.
    Items are ``(image, multi-hot float32 (6,))``.

    Args:
        num_samples: images in this split.
        image_size: side of the square images.
        seed: base seed; ``(seed, split, index)`` fixes every image and its labels.
        split: ``"train"``, ``"val"``, ``"test"`` or ``"predict"``; each split renders different images.
        transform: applied to the PIL image.

    Example:
        >>> ds = MultiLabelShapesDataset(4, image_size=32)
        >>> image, labels, boxes = ds.render(0)
        >>> len(labels) == len(boxes) and ds[0][1].shape == (6,)
        True
    """

    classes = list(SHAPE_CLASSES)
    num_classes = len(SHAPE_CLASSES)

    def __init__(
        self,
        num_samples: int = 1800,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
    ) -> None:
        super().__init__(num_samples, image_size, seed, split, transform)
        #: the label indices of each image, sorted (empty for an image without shapes)
        self.targets: list[tuple[int, ...]] = [self._labels(i) for i in range(num_samples)]

    def _rng(self, index: int, stream: int) -> np.random.Generator:
        # labels (stream 0) are drawn apart from the picture (stream 1): they are known without rendering
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index, stream])

    def _labels(self, index: int) -> tuple[int, ...]:
        rng = self._rng(index, 0)
        count = int(rng.choice(len(_SHAPE_COUNT_PROBS), p=_SHAPE_COUNT_PROBS))
        return tuple(sorted(int(c) for c in rng.choice(len(SHAPE_CLASSES), count, replace=False)))

    @property
    def label_sets(self) -> Tensor:
        """Boolean ``(N, 6)``: which shapes each image holds."""
        return multi_hot(self.targets, self.num_classes).bool()

    def render(self, index: int) -> tuple[Image.Image, tuple[int, ...], list[Box]]:
        """The image, its label indices and each shape's bounding box ``(x0, y0, x1, y1)``, in label order."""
        labels = self.targets[index]
        rng = self._rng(index, 1)
        size = self.image_size
        background, image, draw = _canvas(rng, size)
        half = size / 2
        boxes = []
        for label, cell in zip(labels, rng.permutation(4)[: len(labels)], strict=True):
            r = min(rng.uniform(0.13, 0.23) * size, half / 2 - 1)  # the shape fits its cell with a pixel to spare
            x0, y0 = (cell % 2) * half, (cell // 2) * half
            cx, cy = rng.uniform(x0 + r + 1, x0 + half - r - 1), rng.uniform(y0 + r + 1, y0 + half - r - 1)
            boxes.append(_draw_shape(draw, rng, background, SHAPE_CLASSES[label], cx, cy, r))
        return image, labels, boxes

    def boxes(self, index: int) -> list[Box]:
        """The bounding boxes of the shapes in image ``index``, in the order of ``targets[index]``."""
        return self.render(index)[2]

    def __getitem__(self, index: int) -> tuple[Any, Tensor]:
        image, labels, _ = self.render(index)
        target = multi_hot([labels], self.num_classes)[0]
        return (self.transform(image) if self.transform is not None else image), target
