"""The embedded default dataset: coloured shapes on textured backgrounds, generated on the fly, no network.

Every image is a pure function of ``(seed, split, index)``, so any worker, process or resumed run renders the same
image, and splits never share an image. The object's bounding box is known, so tests can check that an explanation
(Grad-CAM) looks at the object rather than the background.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from PIL import Image, ImageDraw
from torch.utils.data import Dataset

__all__ = ["SHAPE_CLASSES", "ShapesDataset"]

SHAPE_CLASSES = ("circle", "square", "triangle", "star", "cross", "ring")
_SPLIT_IDS = {"train": 0, "val": 1, "test": 2, "predict": 3}

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


class ShapesDataset(Dataset):
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
    """

    classes = list(SHAPE_CLASSES)

    def __init__(
        self,
        num_samples: int = 1800,
        image_size: int = 64,
        seed: int = 0,
        split: str = "train",
        transform: Callable[[Image.Image], Any] | None = None,
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
        self.targets = [i % len(SHAPE_CLASSES) for i in range(num_samples)]

    def __len__(self) -> int:
        return self.num_samples

    def render(self, index: int) -> tuple[Image.Image, int, Box]:
        """The image, its label and the object's bounding box ``(x0, y0, x1, y1)``."""
        label = self.targets[index]
        kind = SHAPE_CLASSES[label]
        rng = np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])
        size = self.image_size
        background = _background(rng, size)
        image = Image.fromarray(background.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(int(rng.integers(1, 4))):  # clutter: thin lines that belong to no class
            x0, y0, x1, y1 = rng.uniform(0, size, 4)
            draw.line([(x0, y0), (x1, y1)], fill=tuple(int(v) for v in rng.uniform(0, 255, 3)), width=1)
        r = rng.uniform(0.16, 0.32) * size
        cx, cy = rng.uniform(r + 1, size - r - 1, 2)
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
        x0, y0, x1, y1 = (
            int(max(0, math.floor(box[0]))),
            int(max(0, math.floor(box[1]))),
            int(min(size, math.ceil(box[2]))),
            int(min(size, math.ceil(box[3]))),
        )
        return image, label, (x0, y0, x1, y1)

    def box(self, index: int) -> Box:
        """The bounding box ``(x0, y0, x1, y1)`` of the object in image ``index``, in pixels."""
        return self.render(index)[2]

    def __getitem__(self, index: int) -> tuple[Any, int]:
        image, label, _ = self.render(index)
        return (self.transform(image) if self.transform is not None else image), label
