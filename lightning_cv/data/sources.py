"""Find labelled image files: class-per-folder trees, CSV/text lists, folders of unlabelled images; seeded splits."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lightning_cv.data.image_io import is_image_file

__all__ = [
    "Record",
    "class_names_of",
    "find_split_dirs",
    "list_images",
    "read_list_file",
    "scan_class_folders",
    "stratified_split",
]

#: (file path, class name)
Record = tuple[str, str]

SPLIT_DIR_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_PATH_COLUMNS = ("path", "filepath", "file", "filename", "image", "image_path", "img")
_LABEL_COLUMNS = ("label", "class", "class_name", "target", "category")


def find_split_dirs(root: str | os.PathLike[str]) -> dict[str, Path]:
    """The ``train/``, ``val/`` and ``test/`` folders under ``root`` (common alternative names accepted)."""
    base = Path(root)
    found: dict[str, Path] = {}
    for split, names in SPLIT_DIR_NAMES.items():
        for name in names:
            if (base / name).is_dir():
                found[split] = base / name
                break
    return found


def list_images(root: str | os.PathLike[str]) -> list[str]:
    """All image files below ``root`` (recursive, sorted); other files such as ``.txt`` or ``.DS_Store`` are skipped."""
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"Image folder '{base}' does not exist or is not a directory.")
    files = []
    for dirpath, dirnames, filenames in os.walk(base, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        files += [os.path.join(dirpath, f) for f in sorted(filenames) if is_image_file(f)]
    return files


def scan_class_folders(root: str | os.PathLike[str]) -> tuple[list[Record], list[str]]:
    """Images in ``root/<class>/**``, and the sorted class names.

    An empty class folder is an error rather than silently dropped: dropping it would shift every later label index.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(
            f"Data folder '{base}' does not exist. Pass `data_dir` pointing at a folder with one sub-folder per class "
            "(or with train/, val/, test/ sub-folders that each hold one sub-folder per class)."
        )
    classes = sorted(d.name for d in base.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise ValueError(
            f"Data folder '{base}' has no class sub-folders. Arrange images as '{base}/<class name>/<image>'."
        )
    records: list[Record] = []
    empty = []
    for name in classes:
        files = list_images(base / name)
        if not files:
            empty.append(name)
        records += [(f, name) for f in files]
    if empty:
        raise ValueError(
            f"Class folder(s) {', '.join(repr(str(base / e)) for e in empty)} hold no images. Add images or remove "
            "the folder(s): an empty class would train a class the model can never see."
        )
    return records, classes


def _pick(columns: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [c.strip().lower() for c in columns]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


def read_list_file(path: str | os.PathLike[str], root: str | os.PathLike[str] | None = None) -> list[Record]:
    """Read ``path,label`` rows from a CSV or text list.

    A header naming a path column (path, filepath, file, filename, image) and a label column (label, class, target,
    category) selects them among any number of columns; without a header the first two columns are used. Text lists
    may separate the two by whitespace. Relative paths are taken from ``root``, or else from the list's folder.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"List file '{file}' does not exist. Pass a CSV or text file of `path,label` rows.")
    base = Path(root) if root is not None else file.parent
    text = file.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"List file '{file}' has no rows. Expected `path,label` rows.")
    delimiter = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else None)
    # without a delimiter the label is the last word and the path the rest, so paths may hold spaces
    rows = list(csv.reader(lines, delimiter=delimiter)) if delimiter else [ln.strip().rsplit(None, 1) for ln in lines]
    path_col, label_col = _pick(rows[0], _PATH_COLUMNS), _pick(rows[0], _LABEL_COLUMNS)
    has_header = path_col is not None and label_col is not None
    if has_header:
        rows = rows[1:]
    else:
        path_col, label_col = 0, 1
    assert path_col is not None and label_col is not None
    records: list[Record] = []
    for number, row in enumerate(rows, start=2 if has_header else 1):
        cells = [c.strip() for c in row]
        if len(cells) <= max(path_col, label_col) or not cells[path_col] or not cells[label_col]:
            raise ValueError(
                f"{file}, row {number}: expected a path and a label, but got {row!r}. Fix or remove the row."
            )
        image = Path(cells[path_col])
        records.append((str(image if image.is_absolute() else base / image), cells[label_col]))
    return records


def class_names_of(labels: Sequence[str]) -> list[str]:
    """Sorted class names; numerically when every label is an integer (so "10" comes after "9")."""
    unique = set(labels)
    if all(u.lstrip("-").isdigit() for u in unique):
        return sorted(unique, key=int)
    return sorted(unique)


def stratified_split(labels: Sequence[int], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split indices into ``len(fractions) + 1`` parts per class: the fractions first, the rest last.

    Each class is shuffled with ``seed`` and split on its own, so every part keeps the class proportions; a class
    with at least two images keeps at least one in the last (training) part.
    """
    rng = np.random.default_rng(seed)
    parts: list[list[int]] = [[] for _ in range(len(fractions) + 1)]
    by_class: dict[int, list[int]] = {}
    for index, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(index)
    for label in sorted(by_class):
        indices = np.array(by_class[label])
        rng.shuffle(indices)
        start = 0
        for part, fraction in enumerate(fractions):
            count = round(len(indices) * fraction)
            if fraction > 0:
                count = max(count, 1)  # a small class still gets held-out images (round(0.5) is 0)
            count = min(count, max(0, len(indices) - start - 1))
            parts[part] += indices[start : start + count].tolist()
            start += count
        parts[-1] += indices[start:].tolist()
    return [sorted(p) for p in parts]
