"""Image trees and awkward files written by the tests themselves."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, seed: int, size: int = 24, fmt: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path, format=fmt)
    return path


def make_class_tree(root: Path, classes=("cat", "dog", "owl"), per_class: int = 4, seed: int = 0) -> Path:
    for c, name in enumerate(classes):
        for i in range(per_class):
            write_image(root / name / f"{name}_{i}.png", seed=seed * 1000 + c * 100 + i)
    return root
