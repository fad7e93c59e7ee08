"""Which files an explanation covers, and the unique output names their overlays get."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from lightning_cv.data.image_io import IMAGE_EXTENSIONS
from lightning_cv.data.sources import list_images

__all__ = ["collect_files", "output_stems", "overlay_name"]


def collect_files(
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]], exclude: Path
) -> tuple[list[Path], Path | None]:
    """The files to explain and the folder their names are taken relative to (for unique output names)."""
    if isinstance(images, (str, os.PathLike)):
        path = Path(images)
        if path.is_file():
            return [path], path.parent
        if not path.is_dir():
            raise FileNotFoundError(
                f"'{path}' does not exist. Pass a folder of images, an image file or a list of image files."
            )
        skip = exclude.resolve()
        files = [Path(f) for f in list_images(path)]
        files = [f for f in files if skip not in f.resolve().parents]  # our own overlays from an earlier run
        if not files:
            raise FileNotFoundError(
                f"No image files in '{path}' (searched recursively for {', '.join(IMAGE_EXTENSIONS)})."
            )
        return files, path
    if not isinstance(images, Sequence):
        raise TypeError(
            f"Expected `images` to be a folder, a file or a list of files, but got {type(images).__name__}."
        )
    files = [Path(f) for f in images]
    if not files:
        raise ValueError("Expected `images` to hold at least one file, but got an empty list.")
    try:
        root: Path | None = Path(os.path.commonpath([f.absolute().parent for f in files]))
    except ValueError:  # different drives (Windows)
        root = None
    return files, root


def output_stems(files: Sequence[Path], root: Path | None) -> list[str]:
    """The file stems, made unique (case-insensitively) by the sub-folder, then the extension, then a counter."""

    def folders(path: Path) -> list[str]:
        try:
            relative = path.absolute().relative_to(root.absolute()) if root is not None else path
        except ValueError:
            relative = path
        return [p for p in relative.parent.parts if p not in (relative.anchor, "", ".", "..")]

    keys = [f.stem for f in files]
    counts = Counter(k.casefold() for k in keys)
    keys = ["__".join([*folders(f), k]) if counts[k.casefold()] > 1 else k for f, k in zip(files, keys, strict=True)]
    counts = Counter(k.casefold() for k in keys)
    keys = [f"{k}_{f.suffix[1:].lower()}" if counts[k.casefold()] > 1 else k for f, k in zip(files, keys, strict=True)]
    seen: set[str] = set()
    unique = []
    for key in keys:
        candidate, n = key, 2
        while candidate.casefold() in seen:
            candidate, n = f"{key}_{n}", n + 1
        seen.add(candidate.casefold())
        unique.append(candidate)
    return unique


def overlay_name(stem: str, kind: str, label: int | None = None) -> str:
    """The file name of one overlay: ``<stem>_<kind>.png``, or ``<stem>_<kind>_<label index>.png`` for one label of
    several (multi-label). The label goes in by index, never by name: class names come from the data, and a name
    such as ``../x`` or ``a/b`` must not become part of a path."""
    if label is not None and (isinstance(label, bool) or not isinstance(label, int) or label < 0):
        raise ValueError(f"Expected a label index (int >= 0), but got {label!r}.")
    return f"{stem}_{kind}.png" if label is None else f"{stem}_{kind}_{label}.png"
