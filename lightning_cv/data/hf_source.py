"""Hugging Face datasets as a source: a folder written by ``save_to_disk``, Parquet files, or a dataset on the Hub.

The images are read as their encoded bytes from the Arrow table (``Image(decode=False)``) and decoded by our own
decoder, so bad samples are skipped and counted as for files, and each image is one random-access row: the dataset
goes through the same resumable, seeded, DDP-strided path as folders and shards (exact resume, the same
augmentation whatever the process or worker count). Class names come from the label column's ``ClassLabel``
feature, else from its values (sorted). ``datasets`` is imported only when this source is used.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightning_cv.data.datasets import ByteImageDataset
from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError

__all__ = ["HFImageDataset", "HFSplit", "hf_leaks", "open_hf"]

#: the largest encoded image read from a row (as for shard members)
MAX_IMAGE_BYTES = 256 * 2**20


@dataclass
class HFSplit:
    """One split of a Hugging Face dataset: its rows, the image column, labels and class names."""

    dataset: Any
    name: str
    image_column: str
    labels: list[int]
    class_names: list[str]

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: Sequence[int]) -> HFSplit:
        chosen = list(indices)
        return HFSplit(self.dataset.select(chosen), self.name, self.image_column,
                       [self.labels[i] for i in chosen], self.class_names)  # fmt: skip

    def row_name(self, index: int) -> str:
        """``<dataset>[<split>][<row>]``: what names row ``index`` in messages and reports."""
        return f"{self.name}[{index}]"

    def image_bytes(self, index: int) -> bytes | None:
        cell = self.dataset[int(index)][self.image_column]
        if isinstance(cell, dict) and len(cell.get("bytes") or b"") > MAX_IMAGE_BYTES:
            return None  # refused like a shard member of that size
        if isinstance(cell, dict):
            return cell.get("bytes")
        return bytes(cell) if isinstance(cell, (bytes, bytearray)) else None


def _load(path: str, split: str, single_ok: bool) -> Any:
    """Split ``split`` of the dataset at ``path``. A local folder is read only from files inside it: a folder
    written by ``save_to_disk`` has its file lists checked first, and other folders are read as the Parquet files
    they hold (never through a README's ``data_files``, which may name files anywhere). A name that is not a
    folder here is a Hub dataset. ``single_ok``: a folder holding one dataset (no splits) may serve this split."""
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            "Hugging Face datasets need the `datasets` package: pip install 'lightning-cv-kit[hf]'"
        ) from err
    local = Path(path)
    if local.is_dir() and ((local / "dataset_dict.json").is_file() or (local / "state.json").is_file()):
        splits = _check_saved(local)
        if splits is None:
            if not single_ok:
                raise ValueError(
                    f"'{path}' holds one dataset without splits, so it has no split {split!r}: hold images out with "
                    "`val_split`/`test_split` instead, or save a DatasetDict with that split."
                )
            return datasets.load_from_disk(str(local))
        if split not in splits:
            raise ValueError(f"'{path}' has no split {split!r}; its splits: {', '.join(splits)}.")
        return datasets.load_from_disk(str(local / split))  # Arrow files, checked above; no code
    if local.is_dir():
        files = _parquet_files(local, split, single_ok)
        return datasets.load_dataset("parquet", data_files={split: files}, split=split)
    try:
        return datasets.load_dataset(path, split=split)  # a Hub dataset (network)
    except ValueError as err:
        if "split" in str(err).lower():
            raise ValueError(f"'{path}' has no split {split!r} ({str(err).splitlines()[0]}).") from err
        raise
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"No Hugging Face dataset at '{path}': pass a folder written by `save_to_disk`, a folder of Parquet "
            f"files, or a Hub name such as 'user/name' (this needs network) ({str(err).splitlines()[0]})."
        ) from err


def _inside(folder: Path, name: Any) -> Path:
    """``folder / name`` if ``name`` is a plain file or folder name that stays inside ``folder``; else an error."""
    text = str(name)
    target = folder / text
    if not text or "/" in text or "\\" in text or text in (".", "..") or not target.resolve().is_relative_to(
        folder.resolve()
    ):
        raise ValueError(f"'{folder}' names {text!r} in its dataset files: only plain names inside it are read.")
    return target


def _check_saved(folder: Path) -> list[str] | None:
    """The splits of a ``save_to_disk`` folder (``None`` for a single dataset), every file it names checked to be
    a plain name inside it, so loading reads nothing elsewhere."""
    import json

    def check_dataset(directory: Path) -> None:
        state = json.loads((directory / "state.json").read_text())
        for entry in state.get("_data_files") or []:
            _inside(directory, entry.get("filename") if isinstance(entry, dict) else entry)

    if (folder / "dataset_dict.json").is_file():
        splits = json.loads((folder / "dataset_dict.json").read_text()).get("splits") or []
        for name in splits:
            check_dataset(_inside(folder, name))
        return [str(n) for n in splits]
    check_dataset(folder)
    return None


def _parquet_files(folder: Path, split: str, single_ok: bool) -> list[str]:
    """The Parquet files of ``split`` inside ``folder`` (Hugging Face's naming: ``<split>-*.parquet``,
    ``<split>.parquet`` or a ``<split>/`` folder; all of them for a folder without split names)."""
    root = folder.resolve()
    found = [p for p in sorted(folder.rglob("*.parquet")) if p.resolve().is_relative_to(root)]
    if not found:
        raise FileNotFoundError(f"No Hugging Face dataset at '{folder}': no Parquet files and no save_to_disk files.")

    def split_of(path: Path) -> str | None:
        parts = path.relative_to(folder).parts
        for name in (*parts[:-1], path.stem.split("-")[0]):
            if name in ("train", "validation", "valid", "val", "test", split):
                return name
        return None

    named = {p: split_of(p) for p in found}
    chosen = [str(p) for p, name in named.items() if name == split]
    if chosen:
        return chosen
    if single_ok and not any(named.values()):
        return [str(p) for p in found]
    present = sorted({n for n in named.values() if n})
    raise ValueError(f"'{folder}' has no split {split!r}; its splits: {', '.join(present) or 'none named'}.")


def open_hf(
    path: str, split: str, image_column: str, label_column: str, class_names: list[str] | None = None
) -> HFSplit:
    """Split ``split`` of the dataset at ``path``, its columns checked and its labels as class indices.

    Args:
        class_names: the training split's classes; other splits must use the same ones.

    Raises:
        ValueError: a column that does not exist (the message lists the columns), an image column that holds no
            images, a label that is not a class, a split that does not exist.
    """
    import datasets

    data = _load(path, split, single_ok=class_names is None)
    columns = list(data.column_names)
    for kind, column in (("image", image_column), ("label", label_column)):
        if column not in columns:
            raise ValueError(
                f"The {split} split of '{path}' has no column {column!r}; its columns: {', '.join(columns)}. Pass "
                f"the right one with `--data.hf_{kind}_column`."
            )
    feature = data.features[image_column]
    if isinstance(feature, datasets.Image):
        data = data.cast_column(image_column, datasets.Image(decode=False))  # bytes: decoded by our decoder
    elif not (isinstance(feature, datasets.Value) and feature.dtype in ("binary", "large_binary")):
        raise ValueError(
            f"Column {image_column!r} of '{path}' holds {feature}, not images. Pass the image column with "
            "`--data.hf_image_column`."
        )
    label_feature = data.features[label_column]
    values = data[label_column]
    if isinstance(label_feature, datasets.ClassLabel):
        names = list(label_feature.names)
        labels = [int(v) for v in values]
    else:
        if any(isinstance(v, (list, dict)) or v is None for v in values):
            raise ValueError(
                f"Column {label_column!r} of '{path}' holds {label_feature}, not one class per image. Pass the label "
                "column with `--data.hf_label_column`."
            )
        names = class_names or sorted({str(v) for v in values}, key=lambda v: (len(v), v) if v.isdigit() else (0, v))
        index = {name: i for i, name in enumerate(names)}
        labels = [index.get(str(v), -1) for v in values]
    if class_names is not None and names != class_names:
        raise ValueError(
            f"The {split} split's classes differ from the training split's ({names[:5]} vs {class_names[:5]})."
        )
    outside = [v for v, y in zip(values, labels, strict=True) if not 0 <= y < len(names)]
    if outside:
        raise ValueError(
            f"The {split} split of '{path}' has {len(outside)} label(s) outside the {len(names)} classes, e.g. "
            f"{outside[0]!r}. Every image needs one of the training split's classes."
        )
    return HFSplit(data, f"{path}[{split}]", image_column, labels, names)


def hf_leaks(splits: dict[str, HFSplit]) -> list[tuple[str, str, str, str]]:
    """Images whose bytes are in two splits: ``(split, row name, other split, row name)``; reads every image's
    bytes (not decoded) once."""
    seen: dict[bytes, tuple[str, int]] = {}
    leaks = []
    for split, part in splits.items():
        index = 0
        # a thousand rows at a time: the column of a large dataset never sits in memory whole
        for batch in part.dataset.select_columns([part.image_column]).iter(batch_size=1000):
            for cell in batch[part.image_column]:
                data = cell.get("bytes") if isinstance(cell, dict) else cell
                if data:
                    first = seen.setdefault(hashlib.sha256(data).digest(), (split, index))
                    if first[0] != split:
                        leaks.append((first[0], f"{splits[first[0]].name}[{first[1]}]", split, f"{part.name}[{index}]"))
                index += 1
    return leaks


class HFImageDataset(ByteImageDataset):
    """The rows of an :class:`HFSplit`, decoded like files (bad samples skipped), named ``<dataset>[<split>][<row>]``.
    """

    def __init__(
        self,
        split: HFSplit,
        transform: Any = None,
        *,
        min_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(len(split), split.row_name, split.labels, transform, min_size=min_size,
                         max_pixels=max_pixels)  # fmt: skip
        self.split = split

    def read_bytes(self, index: int) -> bytes:
        data = self.split.image_bytes(index)
        if not data:  # only embedded bytes: a path stored in the data never leads to a file elsewhere
            raise BadImageError(self.paths[index], "no image bytes in the row")
        return bytes(data)
