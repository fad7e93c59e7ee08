"""Data checks run at setup: bad files, class (or label) balance and train/val/test leakage."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lightning_cv.data.image_io import BadImageError, load_image

__all__ = [
    "ClassBalance",
    "Duplicate",
    "LabelBalance",
    "class_balance",
    "find_leaks",
    "label_balance",
    "perceptual_hash",
]


@dataclass(frozen=True)
class ClassBalance:
    """Images per class and the ratio of the largest class to the smallest."""

    counts: dict[str, int]

    @property
    def imbalance_ratio(self) -> float:
        values = [v for v in self.counts.values()]
        return max(values) / max(min(values), 1) if values else 1.0

    def __str__(self) -> str:
        width = max((len(k) for k in self.counts), default=5)
        rows = [f"  {name:<{width}} {count:>8,}" for name, count in self.counts.items()]
        return "\n".join([*rows, f"  imbalance ratio (largest / smallest class): {self.imbalance_ratio:.2f}"])


def class_balance(labels: Iterable[int], class_names: Sequence[str]) -> ClassBalance:
    counts = np.bincount(np.fromiter(labels, dtype=np.int64), minlength=len(class_names))
    return ClassBalance({name: int(c) for name, c in zip(class_names, counts, strict=True)})


@dataclass(frozen=True)
class LabelBalance:
    """Multi-label data: images carrying each label, images with no label, and the ratio of the most frequent label
    to the least frequent one (a label is counted once per image that has it, so the counts need not add up to the
    number of images)."""

    counts: dict[str, int]
    no_label: int
    num_images: int

    @property
    def imbalance_ratio(self) -> float:
        values = list(self.counts.values())
        return max(values) / max(min(values), 1) if values else 1.0

    def __str__(self) -> str:
        width = max((len(k) for k in (*self.counts, "(no label)")), default=10)
        total = max(self.num_images, 1)
        rows = [f"  {name:<{width}} {count:>8,}  {count / total:6.1%}" for name, count in self.counts.items()]
        rows.append(f"  {'(no label)':<{width}} {self.no_label:>8,}  {self.no_label / total:6.1%}")
        return "\n".join(
            [
                *rows,
                f"  images: {self.num_images:,}",
                f"  imbalance ratio (most / least frequent label): {self.imbalance_ratio:.2f}",
            ]
        )


def label_balance(label_sets: Iterable[Sequence[int]], class_names: Sequence[str]) -> LabelBalance:
    """:class:`LabelBalance` of images given by their label indices (an empty sequence: an image without labels)."""
    counts = np.zeros(len(class_names), dtype=np.int64)
    no_label = num_images = 0
    for labels in label_sets:
        num_images += 1
        if len(labels) == 0:
            no_label += 1
        counts[list(set(labels))] += 1
    return LabelBalance({name: int(c) for name, c in zip(class_names, counts, strict=True)}, no_label, num_images)


@dataclass(frozen=True)
class Duplicate:
    """Files in different splits with the same content (``kind="exact"``) or nearly the same (``"perceptual"``)."""

    kind: str
    files: tuple[tuple[str, str], ...]  # (split, path)

    def __str__(self) -> str:
        return f"{self.kind}: " + " == ".join(f"{split}:{path}" for split, path in self.files)


def _digest(path: str) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def perceptual_hash(path: str | os.PathLike[str]) -> int:
    """A 64-bit difference hash (dHash) of the image's 9x8 greyscale thumbnail; near duplicates differ in few bits."""
    image = load_image(path, min_size=32)  # decoded like training sees it: 16-bit, alpha and EXIF handled
    small = np.asarray(image.convert("L").resize((9, 8), Image.Resampling.BILINEAR), dtype=np.int16)
    bits = (small[:, 1:] > small[:, :-1]).flatten()
    return int(sum(1 << i for i, b in enumerate(bits) if b))


def find_leaks(
    splits: Mapping[str, Sequence[str]],
    *,
    perceptual: bool = False,
    max_distance: int = 4,
    digests: Mapping[str, str] | None = None,
    perceptual_hashes: Mapping[str, int] | None = None,
) -> list[Duplicate]:
    """Images that appear in more than one split: by content hash, and with ``perceptual`` by dHash distance.

    ``digests`` and ``perceptual_hashes`` are values already computed (by :func:`~lightning_cv.data.file_index.
    scan_files`); files missing from them are read here.
    """
    digests = digests or {}
    perceptual_hashes = perceptual_hashes or {}
    by_digest: dict[str, list[tuple[str, str]]] = {}
    for split, paths in splits.items():
        for path in paths:
            by_digest.setdefault(digests.get(path) or _digest(path), []).append((split, path))
    leaks = [Duplicate("exact", tuple(v)) for v in by_digest.values() if len({s for s, _ in v}) > 1]
    if perceptual:
        exact = {p for d in leaks for _, p in d.files}
        hashed: dict[str, tuple[list[str], np.ndarray]] = {}
        for split, paths in splits.items():
            kept, values = [], []
            for path in paths:
                if path in exact:
                    continue
                if path in perceptual_hashes:
                    values.append(perceptual_hashes[path])
                    kept.append(path)
                    continue
                try:
                    values.append(perceptual_hash(path))
                except (BadImageError, OSError, ValueError):
                    continue
                kept.append(path)
            hashed[split] = (kept, np.array(values, dtype=np.uint64))
        names = list(hashed)
        for a_index, a in enumerate(names):  # only across splits: n_val x n_train, not n^2 over everything
            for b in names[a_index + 1 :]:
                (a_paths, a_hash), (b_paths, b_hash) = hashed[a], hashed[b]
                for i, h in enumerate(a_hash):
                    distance = np.bitwise_count(np.bitwise_xor(b_hash, h))
                    for j in np.nonzero(distance <= max_distance)[0]:
                        leaks.append(Duplicate("perceptual", ((a, a_paths[i]), (b, b_paths[int(j)]))))
    return leaks
