"""Grad-CAM for any timm classifier (CNNs and ViTs) with captum, safe to call from inside training.

captum computes the Grad-CAM; this module finds the target layer through timm's uniform interface (the last entry
of ``model.feature_info``), turns a ViT block's tokens into a grid (CLS and other prefix tokens left out) so captum
sees an ordinary ``(N, C, H, W)`` activation, and makes the call safe anywhere: it leaves inference mode, enables
gradients, runs in float32 outside autocast, and restores every module's train/eval mode and every hook afterwards.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_cv.data.batch import scores, task_of

__all__ = ["GradCAM", "class_probabilities", "find_target_layer", "overlay"]


def _unwrap(model: nn.Module) -> nn.Module:
    """The timm model inside an ImageClassifier (``.model``) or the model itself."""
    inner = getattr(model, "model", None)
    return inner if isinstance(inner, nn.Module) and hasattr(inner, "feature_info") else model


def find_target_layer(model: nn.Module) -> str:
    """The name (relative to ``model``) of the last feature stage: timm's ``feature_info[-1]["module"]``."""
    inner = _unwrap(model)
    info = getattr(inner, "feature_info", None)
    if not info:
        convs = [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]
        if not convs:
            raise ValueError(
                "Cannot find a Grad-CAM target layer: the model has no timm `feature_info` and no Conv2d. "
                "Pass `target_layer` by name (see `dict(model.named_modules())`)."
            )
        return convs[-1]
    name = str(info[-1]["module"])
    if hasattr(inner, "patch_embed") and hasattr(inner, "num_prefix_tokens"):
        # A ViT pooling the CLS token: the last block's *output* patch tokens never reach the head (zero gradient),
        # so explain the tokens entering its attention: the block's first child (timm: norm1).
        block = inner.get_submodule(name)
        first = next(iter(block.named_children()), None)
        if first is not None:
            name = f"{name}.{first[0]}"
    prefix = next((n for n, m in model.named_modules() if m is inner), "")
    return f"{prefix}.{name}" if prefix else name


@contextlib.contextmanager
def _grad_enabled_eval(model: nn.Module) -> Iterator[None]:
    modes = {m: m.training for m in model.modules()}
    device_type = next((p.device.type for p in model.parameters()), "cpu")
    try:
        with torch.inference_mode(False), torch.enable_grad(), torch.autocast(device_type, enabled=False):
            model.eval()
            yield
    finally:
        for module, mode in modes.items():
            module.training = mode


def class_probabilities(model: nn.Module, batch: Tensor) -> Tensor:
    """The model's scores in eval mode without gradients, ``(N, num_classes)`` float32 on the CPU: the softmax of
    its logits, or for a multi-label module (``hparams["task"] == "multilabel"``) one sigmoid per label.

    Every module's train/eval mode is restored afterwards. Grad-CAM's own forward pass gives no probabilities; this
    is the second, cheap one that captions need.
    """
    modes = {m: m.training for m in model.modules()}
    param = next(model.parameters(), None)
    inputs = batch if param is None else batch.to(param.device, param.dtype)
    try:
        model.eval()
        with torch.no_grad():
            logits = model(inputs)
    finally:
        for module, mode in modes.items():
            module.training = mode
    if not isinstance(logits, Tensor) or logits.ndim != 2:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"Expected the model to return logits of shape (N, num_classes), but got {shape}.")
    return scores(logits, task_of(model)).cpu()


class _TokensToGrid(nn.Module):
    """Identity on a grid: the layer captum attributes to, inserted after a ViT block by a temporary hook."""

    def forward(self, grid: Tensor) -> Tensor:
        return grid


class GradCAM:
    """Grad-CAM heatmaps for single images or batches.

    Args:
        model: an ImageClassifier, a timm model, or any module mapping images to logits.
        target_layer: a module name (``"model.layer4"``); ``None`` picks the last feature stage (CNN) or the last
            block (ViT, whose tokens are reshaped to the patch grid).

    Example:
        >>> cam = GradCAM(model)                                  # doctest: +SKIP
        >>> heatmap = cam.generate_cam(image)                     # (H, W) in [0, 1], for the predicted class
        >>> picture = cam.visualize(image, original_image)        # heatmap over the image, uint8 RGB
    """

    def __init__(self, model: nn.Module, target_layer: str | None = None) -> None:
        self.model = model
        self.target_layer = target_layer or find_target_layer(model)
        modules = dict(model.named_modules())
        if self.target_layer not in modules:
            raise ValueError(f"Unknown target layer {self.target_layer!r}; choose a name from model.named_modules().")
        self._layer = modules[self.target_layer]
        inner = _unwrap(model)
        self._prefix_tokens = int(getattr(inner, "num_prefix_tokens", 0) or 0)
        grid = getattr(getattr(inner, "patch_embed", None), "grid_size", None)
        self._grid = tuple(int(g) for g in grid) if grid is not None else None

    def _reshape_hook(self, probe: nn.Module) -> Any:
        def hook(module: nn.Module, args: Any, output: Tensor) -> Tensor | None:
            if output.ndim != 3:  # a CNN stage: nothing to reshape
                return None
            prefix, tokens = output[:, : self._prefix_tokens], output[:, self._prefix_tokens :]
            n, t, c = tokens.shape
            h, w = (
                self._grid if self._grid and self._grid[0] * self._grid[1] == t else (math.isqrt(t), t // math.isqrt(t))
            )
            grid = probe(tokens.transpose(1, 2).reshape(n, c, h, w))
            return torch.cat([prefix, grid.reshape(n, c, t).transpose(1, 2)], dim=1)

        return hook

    def generate_cam(self, image: Tensor, target_class: int | Tensor | None = None) -> Tensor:
        """Heatmaps in [0, 1] at the image's resolution: ``(H, W)`` for one image, ``(N, H, W)`` for a batch.

        Args:
            image: ``(C, H, W)`` or ``(N, C, H, W)``, normalised as the model expects.
            target_class: class index (or one per image); ``None`` explains the predicted class.
        """
        from captum.attr import LayerAttribution, LayerGradCam

        single = image.ndim == 3
        batch = image.unsqueeze(0) if single else image
        param = next(self.model.parameters(), None)
        probe = _TokensToGrid()
        handle = self._layer.register_forward_hook(self._reshape_hook(probe))
        try:
            with _grad_enabled_eval(self.model):
                inputs = batch.detach().clone().float()
                if param is not None:  # the model's own device and dtype (bf16-true / 16-true models too)
                    inputs = inputs.to(param.device, param.dtype if param.dtype.is_floating_point else None)
                inputs.requires_grad_(True)  # frozen backbones: gradients still reach the layer
                if target_class is None:
                    with torch.no_grad():
                        target = self.model(inputs).argmax(dim=1)
                else:
                    # cloned here, outside inference mode: captum saves the index for backward
                    target = torch.as_tensor(target_class, device=inputs.device).clone().expand(inputs.shape[0])
                is_vit = self._probe_is_used(inputs[:1])
                layer = probe if is_vit else self._layer
                cam = LayerGradCam(self.model, layer).attribute(inputs, target=target, relu_attributions=True)
                cam = LayerAttribution.interpolate(cam.detach(), tuple(inputs.shape[-2:]), interpolate_mode="bilinear")
        finally:
            handle.remove()
        cam = cam[:, 0].float()
        low = cam.flatten(1).min(dim=1).values.view(-1, 1, 1)
        high = cam.flatten(1).max(dim=1).values.view(-1, 1, 1)
        cam = ((cam - low) / (high - low).clamp_min(1e-12)).cpu()
        return cam[0] if single else cam

    def _probe_is_used(self, sample: Tensor) -> bool:
        seen: list[int] = []
        handle = self._layer.register_forward_hook(lambda m, a, out: seen.append(out.ndim))
        try:
            with torch.no_grad():
                self.model(sample)
        finally:
            handle.remove()
        return bool(seen) and seen[0] == 3

    def visualize(self, image: Tensor, original_image: Any = None, alpha: float = 0.5) -> np.ndarray:
        """The heatmap of the predicted class over ``original_image`` (or the image itself), as ``(H, W, 3)`` uint8."""
        cam = self.generate_cam(image if image.ndim == 3 else image[0])
        if original_image is None:
            picture = image if image.ndim == 3 else image[0]
            picture = (picture - picture.min()) / (picture.max() - picture.min()).clamp_min(1e-12)
            base = (picture.permute(1, 2, 0).cpu().numpy() * 255).astype(np.uint8)
        else:
            base = np.asarray(original_image.convert("RGB") if hasattr(original_image, "convert") else original_image)
        return overlay(base, cam, alpha=alpha)


def overlay(image: np.ndarray, cam: Tensor, alpha: float = 0.5) -> np.ndarray:
    """Blend a ``(h, w)`` heatmap in [0, 1] (jet colours) over an ``(H, W, 3)`` uint8 image."""
    import matplotlib

    heat = cam[None, None].float()
    if heat.shape[-2:] != image.shape[:2]:
        heat = F.interpolate(heat, size=image.shape[:2], mode="bilinear", align_corners=False)
    colours = matplotlib.colormaps["jet"](heat[0, 0].clamp(0, 1).numpy())[..., :3]
    blended = (1 - alpha) * image.astype(np.float32) / 255.0 + alpha * colours
    return (np.clip(blended, 0, 1) * 255).astype(np.uint8)
