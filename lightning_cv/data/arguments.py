"""The arguments of :class:`~lightning_cv.ImageDataModule`, checked when it is built (not when training starts)."""

from __future__ import annotations

from typing import Any

from lightning_cv.data.config import is_image_size
from lightning_cv.data.discovery import data_source
from lightning_cv.data.links import FOLLOW_LINKS
from lightning_cv.data.transforms import AUTO_AUGMENTS
from lightning_cv.plain_data import refuse_class_specs

__all__ = ["validate_arguments"]


def _fail(name: str, value: Any, expected: str) -> None:
    raise ValueError(f"Expected `{name}` {expected}, but got {value!r}.")


def validate_arguments(hp: Any) -> None:
    """Fail fast, in ``__init__``, naming the argument and what it should be (torchmetrics' wording)."""
    refuse_class_specs(hp.dataset_kwargs, "dataset_kwargs")
    if hp.val_split is not None and not 0.0 <= hp.val_split < 1.0:
        _fail("val_split", hp.val_split, "in [0, 1)")
    if not 0.0 <= hp.test_split < 1.0:
        _fail("test_split", hp.test_split, "in [0, 1)")
    if (hp.val_split or 0.0) + hp.test_split >= 1.0:
        _fail("val_split + test_split", (hp.val_split or 0.0) + hp.test_split, "< 1")
    separator = hp.label_separator
    if not isinstance(separator, str) or not separator.strip():
        _fail(
            "label_separator",
            separator,
            "to be a non-empty string that is not only whitespace, such as ';' (it separates the labels in a "
            "`labels` cell of a multi-label list)",
        )
    if hp.batch_size < 1:
        _fail("batch_size", hp.batch_size, ">= 1")
    if hp.eval_batch_size is not None and hp.eval_batch_size < 1:
        _fail("eval_batch_size", hp.eval_batch_size, ">= 1 or None")
    if hp.image_size is not None and not is_image_size(hp.image_size):
        _fail("image_size", hp.image_size, "to be a positive int or a (height, width) pair of positive ints")
    if hp.crop_pct is not None and not hp.crop_pct > 0:
        _fail("crop_pct", hp.crop_pct, "> 0 (the resize before the center crop divides by it)")
    for name in ("mean", "std"):
        if hp[name] is not None and len(hp[name]) not in (1, 3):
            _fail(name, hp[name], "to have 3 values (R, G, B) or 1")
    if hp.std is not None and min(hp.std) <= 0:
        _fail("std", hp.std, "to be > 0 (images are divided by it)")
    if hp.max_image_pixels < 1:
        _fail("max_image_pixels", hp.max_image_pixels, ">= 1")
    if hp.num_workers is not None and hp.num_workers < 0:
        _fail("num_workers", hp.num_workers, ">= 0 or None")
    if hp.auto_augment not in AUTO_AUGMENTS:
        _fail("auto_augment", hp.auto_augment, f"one of {', '.join(AUTO_AUGMENTS)}")
    for name in ("mixup_alpha", "cutmix_alpha"):
        if hp[name] < 0:
            _fail(name, hp[name], ">= 0")
    for name in ("mix_prob", "switch_prob", "hflip", "random_erasing"):
        if not 0.0 <= hp[name] <= 1.0:
            _fail(name, hp[name], "in [0, 1]")
    if not (len(hp.scale) == 2 and 0.0 < hp.scale[0] <= hp.scale[1] <= 1.0):
        _fail("scale", hp.scale, "(low, high) with 0 < low <= high <= 1")
    for name, allowed in (
        ("image_check", ("header", "decode", "none")),
        ("on_bad_file", ("skip", "error")),
        ("leakage_check", ("exact", "perceptual", "off")),
        ("on_leakage", ("warn", "error")),
        ("follow_links", FOLLOW_LINKS),
    ):
        if hp[name] not in allowed:
            _fail(name, hp[name], f"one of {', '.join(allowed)}")
    source = data_source(hp)  # an unknown dataset name fails here, not at setup
    if source in ("shapes", "shapes_multilabel") and hp.dataset_kwargs:
        known = {"num_train", "num_val", "num_test", "image_size"} | (
            {"train_class_fractions"} if source == "shapes" else set()
        )
        unknown = sorted(set(hp.dataset_kwargs) - known)
        if unknown:
            _fail(f"dataset_kwargs of {source!r}", unknown, f"keys from {', '.join(sorted(known))}")
    lists = [name for name in ("val_file", "test_file") if hp[name] is not None]
    if lists and hp.train_file is None:
        raise ValueError(
            f"`{lists[0]}` is read together with `train_file`, which defines the classes and their order, but no "
            "`train_file` was given (without it the list would be ignored). Pass `train_file` too (command line: "
            "`--data.train_file train.csv`)."
        )
