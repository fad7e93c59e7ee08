"""Data: the ImageDataModule, the data config and batch contract, datasets (multiclass and multi-label), transforms,
batch mixing, data checks."""

from lightning_cv.data.batch import hard_labels, split_batch
from lightning_cv.data.checks import ClassBalance, Duplicate, LabelBalance, find_leaks
from lightning_cv.data.config import DataConfig, find_data_config
from lightning_cv.data.datamodule import ImageDataModule
from lightning_cv.data.datasets import ImageFileDataset, multi_hot
from lightning_cv.data.image_io import BadImageError, load_image
from lightning_cv.data.mixing import BatchMixer, CutMix, MixParams, MixUp
from lightning_cv.data.shapes import SHAPE_CLASSES, MultiLabelShapesDataset, ShapesDataset
from lightning_cv.data.transforms import ToNormalizedTensor, build_eval_transform, build_train_transform
from lightning_cv.resume.loader import ResumableDataLoader, ResumableSampler, SeededDataset

__all__ = [
    "SHAPE_CLASSES",
    "BadImageError",
    "BatchMixer",
    "ClassBalance",
    "CutMix",
    "DataConfig",
    "Duplicate",
    "ImageDataModule",
    "ImageFileDataset",
    "LabelBalance",
    "MixParams",
    "MixUp",
    "MultiLabelShapesDataset",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "ShapesDataset",
    "ToNormalizedTensor",
    "build_eval_transform",
    "build_train_transform",
    "find_data_config",
    "find_leaks",
    "hard_labels",
    "load_image",
    "multi_hot",
    "split_batch",
]
