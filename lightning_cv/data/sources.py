"""Find image files: class-per-folder trees, CSV/text lists (one label or several per image), folders or lists of
unlabelled images; seeded splits."""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightning_cv.data.image_io import IMAGE_EXTENSIONS, BadImageError, check_image, is_image_file
from lightning_cv.data.links import FollowLinks, ImageTreeWalk, ListedPaths, SkippedPath, skipped_report, warn_skipped

__all__ = [
    "LabelledList",
    "MultiLabelRecord",
    "Record",
    "class_names_of",
    "find_predict_files",
    "find_split_dirs",
    "list_images",
    "multilabel_split",
    "read_labelled_list",
    "read_list_file",
    "scan_class_folders",
    "stratified_split",
]

#: (file path, class name)
Record = tuple[str, str]
#: (file path, the names of the image's labels; empty when it has none)
MultiLabelRecord = tuple[str, tuple[str, ...]]

SPLIT_DIR_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}
_PATH_COLUMNS = ("path", "filepath", "file", "filename", "image", "image_path", "img")
_LABEL_COLUMNS = ("label", "class", "class_name", "target", "category")
#: header names of a column that holds several labels per cell
_LABEL_SET_COLUMNS = ("labels", "tags")
#: what a multi-hot table's cells may hold; an empty cell is 0
_MULTI_HOT_VALUES = {"": False, "0": False, "1": True, "0.0": False, "1.0": True}


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


def list_images(
    root: str | os.PathLike[str],
    *,
    follow_links: FollowLinks = "inside",
    skipped: list[SkippedPath] | None = None,
) -> list[str]:
    """All image files below ``root`` (recursive, in ``os.walk`` order); other files such as ``.txt`` are skipped.

    Links are followed by the rule of :mod:`lightning_cv.data.links` (``follow_links``, with ``root`` as the data
    folder). What the rule leaves out is added to ``skipped``, or, without that list, reported in one warning.
    """
    base = Path(root)
    if not base.is_dir():
        raise FileNotFoundError(f"Image folder '{base}' does not exist or is not a directory.")
    walk = ImageTreeWalk(base, follow_links)
    walk.add(base, named=True)
    files = walk.finish()[""]
    warn_skipped(walk.skipped, skipped)
    return files


def scan_class_folders(
    root: str | os.PathLike[str],
    *,
    follow_links: FollowLinks = "inside",
    boundary: str | os.PathLike[str] | None = None,
    skipped: list[SkippedPath] | None = None,
) -> tuple[list[Record], list[str]]:
    """Images in ``root/<class>/**``, and the sorted class names.

    Links are followed by the rule of :mod:`lightning_cv.data.links`: with ``follow_links="inside"`` only those that
    resolve inside ``boundary`` (the data folder; default ``root``). Loops and repeats are skipped in every mode, so
    an image is listed under one class only. What is left out is added to ``skipped``, or, without that list,
    reported in one warning.

    An empty class folder is an error rather than silently dropped: dropping it would shift every later label index.
    The same holds for a class folder that is a link the rule does not follow; the error says why.
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
    walk = ImageTreeWalk(boundary if boundary is not None else base, follow_links)
    walk.mark(base)  # a link back to the data folder is a loop
    for name in classes:
        walk.add(base / name, name)
    found = walk.finish()
    empty = [name for name in classes if not found[name]]
    if empty:
        folders = [str(base / e) for e in empty]
        why = [s for s in walk.skipped if any(s.path == f or s.path.startswith(f + os.sep) for f in folders)]
        because = ("\n" + skipped_report(why)) if why else ""
        raise ValueError(
            f"Class folder(s) {', '.join(repr(f) for f in folders)} hold no images. Add images or remove "
            f"the folder(s): an empty class would train a class the model can never see.{because}"
        )
    warn_skipped(walk.skipped, skipped)
    return [(f, name) for name in classes for f in found[name]], classes


def find_predict_files(
    path: str | os.PathLike[str],
    *,
    follow_links: FollowLinks = "inside",
    skipped: list[SkippedPath] | None = None,
) -> list[str]:
    """The images that ``predict_dir`` names: a folder of images, one image file, or a list file of image paths.

    A file is one image when its name ends like an image (:data:`~lightning_cv.data.image_io.IMAGE_EXTENSIONS`) or
    when it is not text but opens as an image; any other file is a list: one path per line, or CSV rows whose first
    cell is the path (a ``path``/``file``... header is skipped). Folders follow links by the rule of
    :func:`list_images`; a list's relative paths must stay in its folder, as :func:`read_list_file` explains.
    """
    source = Path(path)
    if source.is_dir():
        files = list_images(source, follow_links=follow_links, skipped=skipped)
    elif source.is_file():
        files = [str(source)] if is_image_file(source) else _read_path_list(source, follow_links)
    else:
        raise FileNotFoundError(f"`predict_dir` '{source}' is neither a folder of images, an image nor a list file.")
    if not files:
        raise ValueError(f"`predict_dir` '{source}' holds no image files ({', '.join(IMAGE_EXTENSIONS)}).")
    return files


def _read_path_list(file: Path, follow_links: FollowLinks) -> list[str]:
    try:
        text = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as err:
        try:
            check_image(file)  # an image without an image suffix: predict it
        except BadImageError:
            raise ValueError(
                f"`predict_dir` '{file}' is neither a folder, an image ({', '.join(IMAGE_EXTENSIONS)}) nor a text "
                f"list of image paths: it is not UTF-8 text ({err.reason} at byte {err.start}) and not a readable "
                "image either."
            ) from None
        return [str(file)]
    listed = ListedPaths(file.parent, follow_links)
    files: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cell = next(csv.reader([line]), [""])[0].strip() if "," in line else line.strip()
        if not cell or (not files and cell.lower() in _PATH_COLUMNS):
            continue
        files.append(listed.resolve(cell, number))
    listed.check(file)
    return files


def _pick(columns: Sequence[str], names: Sequence[str]) -> int | None:
    lowered = [c.strip().lower() for c in columns]
    for name in names:
        if name in lowered:
            return lowered.index(name)
    return None


@dataclass(frozen=True)
class LabelledList:
    """A list file as read: one record per image, and how the file labels its images.

    Attributes:
        file: the list file.
        records: ``(path, label names)`` per row; a single-label list has one name per row.
        multilabel: whether the file gives each image a set of labels (a ``labels``/``tags`` column or a multi-hot
            table) rather than one class.
        label_column: the header's label column as written (``"labels"``, ``"class"``...); ``""`` for a multi-hot
            table or a list without a header.
        classes: a multi-hot table's class columns in header order; empty for other lists.
    """

    file: Path
    records: list[MultiLabelRecord]
    multilabel: bool = False
    label_column: str = ""
    classes: tuple[str, ...] = ()

    def describe(self) -> str:
        """How the file labels its images, for messages: "'train.csv' has a `labels` column"."""
        if self.classes:
            return f"'{self.file}' is a multi-hot table (one 0/1 column per class)"
        if self.label_column:
            return f"'{self.file}' has a `{self.label_column}` column"
        return f"'{self.file}' has one label per row"


def read_list_file(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    follow_links: FollowLinks = "inside",
    label_separator: str = ";",
) -> list[Record] | list[MultiLabelRecord]:
    """Read ``path,label`` rows, or rows with several labels per image, from a CSV or text list.

    Single label (one class per image): a header naming a path column (path, filepath, file, filename, image) and a
    label column (label, class, target, category) selects them among any number of columns; without a header the
    first two columns are used. Text lists may separate the two by whitespace. Records are ``(path, class name)``.

    Several labels per image (:func:`read_labelled_list` tells the formats apart), with ``(path, label names)``
    records:

    * a header with a path column and a ``labels`` (or ``tags``) column whose cells hold the labels separated by
      ``label_separator`` (``"cat;dog"``); an empty cell is an image with no label;
    * a multi-hot table: a header with a path column and one column per class (two or more, none of them named like
      a single-label column), cells 0 or 1 (empty counts as 0).

    Relative paths are taken from ``root``, or else from the list's folder, and must stay inside it: a row that
    climbs out with ``..`` or through a link is an error (all such rows are named) unless ``follow_links="all"``.
    Absolute paths are used as written, since the list says where those files are (see
    :class:`~lightning_cv.data.links.ListedPaths`).
    """
    listed = read_labelled_list(path, root, follow_links=follow_links, label_separator=label_separator)
    if listed.multilabel:
        return listed.records
    return [(p, labels[0]) for p, labels in listed.records]


def read_labelled_list(
    path: str | os.PathLike[str],
    root: str | os.PathLike[str] | None = None,
    *,
    follow_links: FollowLinks = "inside",
    label_separator: str = ";",
) -> LabelledList:
    """Read a list file of any format :func:`read_list_file` accepts, and say which it is.

    The header decides: a single-label column name (label, class...) makes it a single-label list, as does a file
    without a header; else a ``labels``/``tags`` column makes it a list of label sets, and two or more other columns
    beside the path a multi-hot table.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"List file '{file}' does not exist. Pass a CSV or text file of `path,label` rows.")
    listed = ListedPaths(root if root is not None else file.parent, follow_links)
    text = file.read_text(encoding="utf-8-sig")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    if not lines:
        raise ValueError(f"List file '{file}' has no rows. Expected `path,label` rows.")
    delimiter = "," if "," in lines[0] else ("\t" if "\t" in lines[0] else None)
    # without a delimiter the label is the last word and the path the rest, so paths may hold spaces
    rows = list(csv.reader(lines, delimiter=delimiter)) if delimiter else [ln.strip().rsplit(None, 1) for ln in lines]
    header = rows[0]
    path_col, sets_col = _pick(header, _PATH_COLUMNS), _pick(header, _LABEL_SET_COLUMNS)
    multi = path_col is not None and _pick(header, _LABEL_COLUMNS) is None  # a single-label column wins, as it did
    if multi and path_col is not None and sets_col is not None:
        result = _read_label_sets(file, rows, path_col, sets_col, listed, label_separator)
    elif multi and path_col is not None and len(header) >= 3:
        result = _read_multi_hot(file, rows, path_col, listed)
    else:
        result = _read_single_labels(file, rows, listed)
    listed.check(file)  # every refused row named at once, after all rows are read
    return result


def _read_single_labels(file: Path, rows: list[list[str]], listed: ListedPaths) -> LabelledList:
    path_col, label_col = _pick(rows[0], _PATH_COLUMNS), _pick(rows[0], _LABEL_COLUMNS)
    has_header = path_col is not None and label_col is not None
    column = rows[0][label_col].strip() if has_header and label_col is not None else ""
    if has_header:
        rows = rows[1:]
    else:
        path_col, label_col = 0, 1
    assert path_col is not None and label_col is not None
    records: list[MultiLabelRecord] = []
    for number, row in enumerate(rows, start=2 if has_header else 1):
        cells = [c.strip() for c in row]
        if len(cells) <= max(path_col, label_col) or not cells[path_col] or not cells[label_col]:
            raise ValueError(
                f"{file}, row {number}: expected a path and a label, but got {row!r}. Fix or remove the row."
            )
        records.append((listed.resolve(cells[path_col], number), (cells[label_col],)))
    return LabelledList(file, records, label_column=column)


def _check_width(file: Path, number: int, row: list[str], width: int, hint: str) -> list[str]:
    cells = [c.strip() for c in row]
    if len(cells) != width:
        raise ValueError(
            f"{file}, row {number}: expected {width} cells like the header, but got {len(cells)}: {row!r}. {hint}"
        )
    return cells


def _read_label_sets(
    file: Path, rows: list[list[str]], path_col: int, sets_col: int, listed: ListedPaths, separator: str
) -> LabelledList:
    header = rows[0]
    column = header[sets_col].strip()
    hint = (
        f'Fix or remove the row; a `{column}` cell that holds the delimiter needs quotes ("cat,dog"), or separate '
        f"labels with `label_separator` (now {separator!r})."
    )
    records: list[MultiLabelRecord] = []
    for number, row in enumerate(rows[1:], start=2):
        cells = _check_width(file, number, row, len(header), hint)
        if not cells[path_col]:
            raise ValueError(f"{file}, row {number}: the path cell is empty in {row!r}. Fix or remove the row.")
        # an empty cell is an image without labels; repeats collapse, the first occurrence keeps its place
        labels = dict.fromkeys(label.strip() for label in cells[sets_col].split(separator))
        labels.pop("", None)
        records.append((listed.resolve(cells[path_col], number), tuple(labels)))
    return LabelledList(file, records, multilabel=True, label_column=column)


def _read_multi_hot(file: Path, rows: list[list[str]], path_col: int, listed: ListedPaths) -> LabelledList:
    header = [c.strip() for c in rows[0]]
    classes = [name for i, name in enumerate(header) if i != path_col]
    repeated = sorted({name for name in classes if classes.count(name) > 1})
    if "" in classes or repeated:
        raise ValueError(
            f"{file}: the header of a multi-hot table needs one distinct name per class column, but has "
            f"{'an empty column name' if '' in classes else f'repeated names {repeated}'}. Name every column once."
        )
    records: list[MultiLabelRecord] = []
    for number, row in enumerate(rows[1:], start=2):
        cells = _check_width(file, number, row, len(header), "Fix or remove the row.")
        if not cells[path_col]:
            raise ValueError(f"{file}, row {number}: the path cell is empty in {row!r}. Fix or remove the row.")
        labels = []
        for i, name in enumerate(header):
            if i == path_col:
                continue
            value = _MULTI_HOT_VALUES.get(cells[i])
            if value is None:
                raise ValueError(
                    f"{file}, row {number}, column '{name}': expected 0 or 1 (empty counts as 0), but got "
                    f"{cells[i]!r}. A header with a path column and other columns is read as a multi-hot table, "
                    f"one 0/1 column per class: fix the cell; if '{name}' is not a class, remove the column, or name "
                    "the label column `label` (one class per image) or `labels` (several per image)."
                )
            if value:
                labels.append(name)
        records.append((listed.resolve(cells[path_col], number), tuple(labels)))
    return LabelledList(file, records, multilabel=True, classes=tuple(classes))


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


def multilabel_split(label_sets: Sequence[Sequence[int]], fractions: Sequence[float], seed: int) -> list[list[int]]:
    """Split multi-label images like :func:`stratified_split`, stratified by each image's rarest label.

    An approximation of true multi-label stratification (iterative stratification): each image joins the group of
    its least frequent label (images without a label form a group of their own), and every group is split in the
    proportions of ``fractions``. The rarest labels, which a plain random split can leave out of a small validation
    set, are spread evenly; frequent labels ride along and come out close to their proportions on large sets.
    """
    counts: dict[int, int] = {}
    for labels in label_sets:
        for label in labels:
            counts[int(label)] = counts.get(int(label), 0) + 1
    groups = [min((int(x) for x in labels), key=lambda x: (counts[x], x)) if labels else -1 for labels in label_sets]
    return stratified_split(groups, fractions, seed)
