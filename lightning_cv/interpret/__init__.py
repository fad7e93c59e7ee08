"""Explanations for single images: Grad-CAM for CNNs and ViTs."""

from lightning_cv.interpret.attention import attention_maps, attention_rollout
from lightning_cv.interpret.gradcam import GradCAM, find_target_layer, overlay

__all__ = ["GradCAM", "attention_maps", "attention_rollout", "find_target_layer", "overlay"]
