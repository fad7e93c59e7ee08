"""Explanations: Grad-CAM for CNNs and ViTs, ViT attention maps, and overlays for whole folders of images."""

from lightning_cv.interpret.attention import attention_blocks, attention_maps, attention_rollout
from lightning_cv.interpret.explain import ExplainedImage, ExplainReport, SkippedFile, explain_images
from lightning_cv.interpret.gradcam import GradCAM, find_target_layer, overlay

__all__ = [
    "ExplainReport",
    "ExplainedImage",
    "GradCAM",
    "SkippedFile",
    "attention_blocks",
    "attention_maps",
    "attention_rollout",
    "explain_images",
    "find_target_layer",
    "overlay",
]
