"""LightningModules around timm backbones, and the pieces they are built from."""

from lightning_cv.models.backbone import create_backbone, resolve_data_config
from lightning_cv.models.classifier import ImageClassifier
from lightning_cv.models.families import ConvNeXtClassifier, EfficientNetClassifier, ResNetClassifier, ViTClassifier
from lightning_cv.models.freezing import LayerGroup, layer_groups
from lightning_cv.models.weights import load_pretrained_file

__all__ = [
    "ConvNeXtClassifier",
    "EfficientNetClassifier",
    "ImageClassifier",
    "LayerGroup",
    "ResNetClassifier",
    "ViTClassifier",
    "create_backbone",
    "layer_groups",
    "load_pretrained_file",
    "resolve_data_config",
]
