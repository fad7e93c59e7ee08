"""Which images there are and what their labels mean: the class names and the records of each split.

Read from class folders (``train/``, ``val/``, ``test/`` or one folder split by ``val_split``/``test_split``), CSV or
text lists (one label or a set of labels per image), a torchvision dataset or the embedded shapes sets.
:func:`discover` is what :class:`~lightning_cv.ImageDataModule` runs once, on first use of its class names.

Multi-label lists (a ``labels`` column or a multi-hot table, see :func:`~lightning_cv.data.sources.read_list_file`)
make a ``"multilabel"`` task: the classes are the labels the training list uses (sorted like folder classes) or a
multi-hot table's columns in the training table's order, and every record holds the indices of its image's labels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from lightning.pytorch.utilities import rank_zero_warn

from lightning_cv.data.batch import MULTICLASS, MULTILABEL
from lightning_cv.data.datasets import load_torchvision_dataset, resolve_torchvision_name
from lightning_cv.data.links import SkippedPath, skipped_report
from lightning_cv.data.shapes import SHAPE_CLASSES
from lightning_cv.data.sources import (
    LabelledList,
    Record,
    class_names_of,
    find_split_dirs,
    multilabel_split,
    read_labelled_list,
    scan_class_folders,
    stratified_split,
)

__all__ = ["Discovered", "IndexedRecord", "data_source", "discover"]

#: (file path, label index) for one class per image, (file path, label indices) for a set of labels per image
IndexedRecord = tuple[str, int | tuple[int, ...]]
LabelSetRecord = tuple[str, tuple[int, ...]]
R = TypeVar("R")


@dataclass
class Discovered:
    """The classes, in label order, and the images of each split: ``(path, label index)`` records for files
    (``(path, label indices)`` for a multi-label task), or the torchvision datasets and the indices each split takes
    from them.

    ``task`` is ``"multiclass"`` or ``"multilabel"``; ``evidence`` says what made it so, for messages ("'train.csv'
    has a `labels` column").
    """

    class_names: list[str]
    records: dict[str, list[IndexedRecord]] = field(default_factory=dict)
    torchvision: dict[str, Any] = field(default_factory=dict)
    torchvision_indices: dict[str, list[int]] = field(default_factory=dict)
    #: WebDataset shards: each split's :class:`~lightning_cv.data.shard_reader.ShardSplit`
    shards: dict[str, Any] = field(default_factory=dict)
    task: str = MULTICLASS
    evidence: str = ""


def discover(hp: Any) -> Discovered:
    """The classes and split records that the data module's arguments ``hp`` describe."""
    source = data_source(hp)
    if source == "shapes":
        return Discovered(list(SHAPE_CLASSES), evidence="dataset 'shapes' has one shape per image")
    if source == "shapes_multilabel":
        return Discovered(
            list(SHAPE_CLASSES), task=MULTILABEL, evidence="dataset 'shapes_multilabel' has up to 3 shapes per image"
        )
    if source == "torchvision":
        return _torchvision(hp)
    if source == "shards":
        return _shards(hp)
    if source == "huggingface":
        return _huggingface(hp)
    if source == "list":
        return _lists(hp)
    return _folders(hp)


def data_source(hp: Any) -> str:
    """Where the images come from: ``"shapes"``, ``"shapes_multilabel"``, ``"torchvision"``, ``"shards"`` (WebDataset
    tar shards), ``"huggingface"`` (a Hugging Face dataset), ``"list"`` (CSV/text lists) or ``"folders"``."""
    if hp.shards is not None or hp.hf_dataset is not None:
        given = [n for n in ("shards", "hf_dataset", "data_dir", "dataset", "train_file") if getattr(hp, n) is not None]
        if len(given) > 1:
            raise ValueError(
                f"Give `{given[0]}` or `{given[1]}`, not both: each names where the training images are."
            )
        return "shards" if hp.shards is not None else "huggingface"
    if hp.val_shards is not None or hp.test_shards is not None:
        raise ValueError("`val_shards`/`test_shards` need the training shards too: pass `shards`.")
    if hp.dataset is not None:
        if hp.dataset.lower() in ("shapes", "shapes_multilabel"):
            return str(hp.dataset.lower())
        if resolve_torchvision_name(hp.dataset) is None:
            raise ValueError(
                f"Unknown dataset {hp.dataset!r}. Use 'shapes' (embedded, offline; 'shapes_multilabel' for several "
                "shapes per image), a torchvision dataset such as "
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


def _indexed(records: dict[str, list[Record]], classes: list[str], evidence: str = "") -> Discovered:
    index = {name: i for i, name in enumerate(classes)}
    for split, rows in records.items():
        unknown = sorted({label for _, label in rows} - set(index))
        if unknown:
            raise ValueError(
                f"The {split} split has classes the training split lacks: {unknown}. Train and {split} must "
                "have the same classes; add training images for them or remove them."
            )
    indexed: dict[str, list[IndexedRecord]] = {
        s: [(p, index[label]) for p, label in rows] for s, rows in records.items()
    }
    return Discovered(classes, indexed, evidence=evidence)


def _split_train(hp: Any, records: dict[str, list[Record]], classes: list[str]) -> dict[str, list[Record]]:
    index = {name: i for i, name in enumerate(classes)}
    return _hold_out(hp, records, lambda rows, parts: stratified_split([index[y] for _, y in rows], parts, hp.seed))


def _hold_out(
    hp: Any, records: dict[str, list[R]], split: Callable[[list[R], Sequence[float]], list[list[int]]]
) -> dict[str, list[R]]:
    """``records`` with the val and test images that ``val_split`` and ``test_split`` ask for taken from training;
    ``split`` gives the indices of each part (val, test, train) for the fractions."""
    val, test = _split_sizes(hp, "val" in records, "test" in records)
    if not val and not test:
        return records
    train = records["train"]
    parts = split(train, [val, test])
    out = dict(records)
    out["train"] = [train[i] for i in parts[2]]
    if val:
        out["val"] = [train[i] for i in parts[0]]
    if test:
        out["test"] = [train[i] for i in parts[1]]
    return out


def _shards(hp: Any) -> Discovered:
    """WebDataset shards: the classes from the training shards' index, each split's images from its shards."""
    from lightning_cv.data.shard_reader import open_shards

    splits = {"train": open_shards(hp.shards, "train")}
    classes = splits["train"].class_names
    for split, pattern in (("val", hp.val_shards), ("test", hp.test_shards)):
        if pattern is not None:
            splits[split] = open_shards(pattern, split)
            if splits[split].class_names != classes:
                raise ValueError(
                    f"The {split} shards' classes differ from the training shards' ({splits[split].class_names[:5]} "
                    f"vs {classes[:5]}): write all splits with one `lightning-cv shard` run."
                )
    if splits["train"].multilabel:
        evidence = "the shards' index is multi-label (each image has a set of labels)"
        return Discovered(classes, shards=_held_out(hp, splits), task=MULTILABEL, evidence=evidence)
    return Discovered(classes, shards=_held_out(hp, splits), evidence="the shards' index has one class per image")


def _huggingface(hp: Any) -> Discovered:
    """A Hugging Face dataset: its training split's classes, each split's rows (held out of training if not given)."""
    from lightning_cv.data.hf_source import open_hf

    columns = (hp.hf_image_column, hp.hf_label_column)
    splits = {"train": open_hf(hp.hf_dataset, hp.hf_split, *columns)}
    classes = splits["train"].class_names
    for split, name in (("val", hp.hf_val_split), ("test", hp.hf_test_split)):
        if name is not None:
            splits[split] = open_hf(hp.hf_dataset, name, *columns, class_names=classes)
    evidence = "the dataset's label column has one class per row"
    return Discovered(classes, shards=_held_out(hp, splits), evidence=evidence)


def _held_out(hp: Any, splits: dict[str, Any]) -> dict[str, Any]:
    """``splits`` (each with ``subset`` and ``labels``: class indices, or label-index tuples) with
    ``val_split``/``test_split`` taken from training where a split is not given, stratified and seeded as for
    folders."""
    train = splits["train"]
    labels = list(train.labels)
    if not labels:
        raise ValueError("The training split has no images: check the shards or the dataset and its split name.")
    rows = {split: list(range(len(part))) for split, part in splits.items()}
    stratify = multilabel_split if isinstance(labels[0], tuple) else stratified_split
    held = _hold_out(hp, rows, lambda chosen, parts: stratify([labels[i] for i in chosen], parts, hp.seed))
    return {split: (splits[split] if split in splits and split != "train" else train).subset(indices)
            for split, indices in held.items()}  # fmt: skip


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
    return _indexed(_split_train(hp, records, classes), classes, "the images are in class folders")


def _lists(hp: Any) -> Discovered:
    def read(file: str) -> LabelledList:
        return read_labelled_list(file, hp.data_dir, follow_links=hp.follow_links, label_separator=hp.label_separator)

    lists = {"train": read(hp.train_file)}
    for split, file in (("val", hp.val_file), ("test", hp.test_file)):
        if file is not None:
            lists[split] = read(file)
    train = lists["train"]
    for split, other in lists.items():
        if other.multilabel != train.multilabel:
            raise ValueError(
                f"{train.describe()} but {other.describe()}: the training and {split} lists must label images the "
                f"same way (one label per image, or a set of labels per image). Rewrite '{other.file}' in the "
                f"format of '{train.file}'."
            )
    if train.multilabel:
        return _multilabel_lists(hp, lists)
    records = {split: [(p, labels[0]) for p, labels in listed.records] for split, listed in lists.items()}
    classes = class_names_of([label for _, label in records["train"]])
    joined = [name for name in classes if hp.label_separator in name]
    if joined:
        rank_zero_warn(
            f"{train.describe()}, so {joined[:3]} "
            f"{'is a class of its own' if len(joined) == 1 else 'are classes of their own'}. If an image carries "
            "several labels, give the list a `path,labels` header: each cell is then a set of labels separated by "
            f"{hp.label_separator!r} (and the model needs `task='multilabel'`)."
        )
    return _indexed(_split_train(hp, records, classes), classes, train.describe())


def _multilabel_lists(hp: Any, lists: dict[str, LabelledList]) -> Discovered:
    train = lists["train"]
    used = {label for _, labels in train.records for label in labels}
    if not used:
        raise ValueError(
            f"No image in '{train.file}' has a label ({len(train.records)} rows, every one empty or all 0). Label "
            "the training images: a multi-label model learns nothing from images without labels alone."
        )
    classes = list(train.classes) if train.classes else class_names_of(sorted(used))
    for split, listed in lists.items():
        if split != "train":
            _check_same_classes(listed, train, classes)
    index = {name: i for i, name in enumerate(classes)}
    records = {
        split: [(p, tuple(sorted(index[label] for label in labels))) for p, labels in listed.records]
        for split, listed in lists.items()
    }
    records = _hold_out(hp, records, lambda rows, parts: multilabel_split([y for _, y in rows], parts, hp.seed))
    _check_positives(records["train"], classes, train)
    indexed: dict[str, list[IndexedRecord]] = {split: list(rows) for split, rows in records.items()}
    return Discovered(classes, indexed, task=MULTILABEL, evidence=train.describe())


def _check_same_classes(listed: LabelledList, train: LabelledList, classes: list[str]) -> None:
    if listed.classes:
        extra = [c for c in listed.classes if c not in classes]
        missing = [c for c in classes if c not in listed.classes]
        if extra or missing:
            raise ValueError(
                f"The class columns of '{listed.file}' differ from the training classes ({train.describe()}): "
                f"column(s) not in training: {extra}, training class(es) without a column: {missing}. Give every "
                "multi-hot table the same class columns (their order may differ)."
            )
        return
    unknown = sorted({label for _, labels in listed.records for label in labels} - set(classes))
    if unknown:
        raise ValueError(
            f"'{listed.file}' has label(s) that no training image has in '{train.file}': {unknown}. Every label must "
            "occur in training: add training images with them, or remove them from the list."
        )


def _check_positives(rows: list[LabelSetRecord], classes: list[str], train: LabelledList) -> None:
    seen = {label for _, labels in rows for label in labels}
    empty = [name for i, name in enumerate(classes) if i not in seen]
    if empty:
        raise ValueError(
            f"Class(es) {empty} have no image in the training split ({train.describe()}). Add training images with "
            "them, remove the column(s), or hold fewer images out (`val_split`, `test_split`): a class without a "
            "training image trains a label the model can never see."
        )


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
    evidence = f"torchvision.datasets.{name} has one class per image"
    return Discovered(classes, torchvision=datasets, torchvision_indices=indices, evidence=evidence)
