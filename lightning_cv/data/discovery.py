"""Which images there are and what their labels mean: the class names and the records of each split.

Read from class folders (``train/``, ``val/``, ``test/`` or one folder split by ``val_split``/``test_split``), CSV or
text lists, a torchvision dataset or the embedded shapes set. :func:`discover` is what
:class:`~lightning_cv.ImageDataModule` runs once, on first use of its class names.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightning.pytorch.utilities import rank_zero_warn

from lightning_cv.data.datasets import load_torchvision_dataset, resolve_torchvision_name
from lightning_cv.data.links import SkippedPath, skipped_report
from lightning_cv.data.shapes import SHAPE_CLASSES
from lightning_cv.data.sources import (
    Record,
    class_names_of,
    find_split_dirs,
    read_list_file,
    scan_class_folders,
    stratified_split,
)

__all__ = ["Discovered", "data_source", "discover"]


@dataclass
class Discovered:
    """The classes, in label order, and the images of each split: ``(path, label index)`` records for files, or the
    torchvision datasets and the indices each split takes from them."""

    class_names: list[str]
    records: dict[str, list[tuple[str, int]]] = field(default_factory=dict)
    torchvision: dict[str, Any] = field(default_factory=dict)
    torchvision_indices: dict[str, list[int]] = field(default_factory=dict)


def discover(hp: Any) -> Discovered:
    """The classes and split records that the data module's arguments ``hp`` describe."""
    source = data_source(hp)
    if source == "shapes":
        return Discovered(list(SHAPE_CLASSES))
    if source == "torchvision":
        return _torchvision(hp)
    if source == "list":
        return _lists(hp)
    return _folders(hp)


def data_source(hp: Any) -> str:
    """Where the images come from: ``"shapes"``, ``"torchvision"``, ``"list"`` (CSV/text lists) or ``"folders"``."""
    if hp.dataset is not None:
        if hp.dataset.lower() == "shapes":
            return "shapes"
        if resolve_torchvision_name(hp.dataset) is None:
            raise ValueError(
                f"Unknown dataset {hp.dataset!r}. Use 'shapes' (embedded, offline), a torchvision dataset such as "
                "'cifar10', 'cifar100', 'mnist', 'fashion_mnist' or 'torchvision:<ClassName>', or leave `dataset` "
                "unset and pass `data_dir` (image folders) or `train_file` (a CSV list)."
            )
        if hp.data_dir is None:
            raise ValueError(f"Dataset {hp.dataset!r} needs `data_dir`: the folder it is (or will be) stored in.")
        return "torchvision"
    if hp.train_file is not None:
        return "list"
    if hp.data_dir is not None:
        return "folders"
    return "shapes"


def _split_sizes(hp: Any, has_val: bool, has_test: bool) -> list[float]:
    if has_val and hp.val_split:
        raise ValueError("The data has a validation split already; remove `val_split` or the val/ folder/file.")
    if has_test and hp.test_split:
        raise ValueError("The data has a test split already; remove `test_split` or the test/ folder/file.")
    val = 0.0 if has_val else (0.1 if hp.val_split is None else hp.val_split)
    return [val, 0.0 if has_test else hp.test_split]


def _indexed(records: dict[str, list[Record]], classes: list[str]) -> Discovered:
    index = {name: i for i, name in enumerate(classes)}
    for split, rows in records.items():
        unknown = sorted({label for _, label in rows} - set(index))
        if unknown:
            raise ValueError(
                f"The {split} split has classes the training split lacks: {unknown}. Train and {split} must "
                "have the same classes; add training images for them or remove them."
            )
    return Discovered(classes, {split: [(p, index[label]) for p, label in rows] for split, rows in records.items()})


def _split_train(hp: Any, records: dict[str, list[Record]], classes: list[str]) -> dict[str, list[Record]]:
    val, test = _split_sizes(hp, "val" in records, "test" in records)
    if not val and not test:
        return records
    train = records["train"]
    index = {name: i for i, name in enumerate(classes)}
    parts = stratified_split([index[label] for _, label in train], [val, test], hp.seed)
    out = dict(records)
    out["train"] = [train[i] for i in parts[2]]
    if val:
        out["val"] = [train[i] for i in parts[0]]
    if test:
        out["test"] = [train[i] for i in parts[1]]
    return out


def _folders(hp: Any) -> Discovered:
    root = hp.data_dir
    skipped: list[SkippedPath] = []  # from every split, for one warning
    split_dirs = find_split_dirs(root)
    split_dirs = split_dirs if "train" in split_dirs else {"train": Path(root)}

    def scan(folder: Path) -> tuple[list[Record], list[str]]:
        # the whole data folder is the boundary: a link from train/ into a shared pool beside it stays inside
        return scan_class_folders(folder, follow_links=hp.follow_links, boundary=root, skipped=skipped)

    records: dict[str, list[Record]] = {}
    train, classes = scan(split_dirs["train"])
    records["train"] = train
    for split in ("val", "test"):
        if split in split_dirs:
            rows, names = scan(split_dirs[split])
            if names != classes:
                missing, extra = sorted(set(classes) - set(names)), sorted(set(names) - set(classes))
                raise ValueError(
                    f"Class folders differ between '{split_dirs['train']}' and '{split_dirs[split]}': "
                    f"missing in {split}: {missing}, not in train: {extra}. Every split needs the same class "
                    "folders, or labels would mean different classes in each."
                )
            records[split] = rows
    if skipped:
        rank_zero_warn(skipped_report(skipped))
    return _indexed(_split_train(hp, records, classes), classes)



def _lists(hp: Any) -> Discovered:
    records = {"train": read_list_file(hp.train_file, hp.data_dir, follow_links=hp.follow_links)}
    for split, file in (("val", hp.val_file), ("test", hp.test_file)):
        if file is not None:
            records[split] = read_list_file(file, hp.data_dir, follow_links=hp.follow_links)
    classes = class_names_of([label for _, label in records["train"]])
    return _indexed(_split_train(hp, records, classes), classes)



def _torchvision(hp: Any) -> Discovered:
    name = resolve_torchvision_name(hp.dataset)
    assert name is not None
    kwargs = dict(hp.dataset_kwargs or {})
    # the class names may be wanted before prepare_data ran (the command line asks at start-up), so a dataset
    # that may download does so here too; torchvision skips the download when the files are already there
    train = load_torchvision_dataset(name, hp.data_dir, "train", download=hp.download, **kwargs)
    test = load_torchvision_dataset(name, hp.data_dir, "test", download=hp.download, **kwargs)
    targets = [int(t) for t in getattr(train, "targets", getattr(train, "labels", []))]
    if not targets:
        raise ValueError(f"torchvision.datasets.{name} exposes no `targets` or `labels`; use an image folder.")
    classes = [str(c) for c in getattr(train, "classes", range(max(targets) + 1))]
    val, _ = _split_sizes(hp, False, True)
    parts = stratified_split(targets, [val], hp.seed)
    datasets = {"train": train, "val": train, "test": test}
    indices = {"train": parts[1], "val": parts[0], "test": list(range(len(test)))}
    if not val:
        del datasets["val"], indices["val"]
    return Discovered(classes, torchvision=datasets, torchvision_indices=indices)
