"""Data: the ImageDataModule, datasets, transforms, batch mixing and data checks."""

from lightning_cv.data.checks import ClassBalance, Duplicate, find_leaks
from lightning_cv.data.datamodule import ImageDataModule
from lightning_cv.data.datasets import ImageFileDataset
from lightning_cv.data.image_io import BadImageError, load_image
from lightning_cv.data.mixing import BatchMixer, CutMix, MixParams, MixUp
from lightning_cv.data.resumable import ResumableDataLoader, ResumableSampler, SeededDataset
from lightning_cv.data.shapes import SHAPE_CLASSES, ShapesDataset
from lightning_cv.data.transforms import build_eval_transform, build_train_transform

__all__ = [
    "SHAPE_CLASSES",
    "BadImageError",
    "BatchMixer",
    "ClassBalance",
    "CutMix",
    "Duplicate",
    "ImageDataModule",
    "ImageFileDataset",
    "MixParams",
    "MixUp",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "ShapesDataset",
    "build_eval_transform",
    "build_train_transform",
    "find_leaks",
    "load_image",
]
