"""lightning_cv: transfer learning for image classification with PyTorch Lightning and timm."""

from lightning_cv.data import ImageDataModule
from lightning_cv.losses import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from lightning_cv.models import (
    ConvNeXtClassifier,
    EfficientNetClassifier,
    ImageClassifier,
    ResNetClassifier,
    ViTClassifier,
)

__version__ = "0.1.0.dev0"

__all__ = [
    "ConvNeXtClassifier",
    "EfficientNetClassifier",
    "ImageClassifier",
    "ImageDataModule",
    "LabelSmoothingCrossEntropy",
    "ResNetClassifier",
    "SoftTargetCrossEntropy",
    "ViTClassifier",
    "__version__",
]
