"""Attention maps and attention rollout for timm Vision Transformers."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["attention_blocks", "attention_maps", "attention_rollout"]


def attention_blocks(model: nn.Module) -> list[Any]:
    """The transformer blocks of a timm Vision Transformer (``model`` or, for a LightningModule, ``model.model``).

    Also the test of whether attention maps and rollout apply to a model at all.

    Raises:
        ValueError: the model has no blocks with ``attn.attn_drop`` (a CNN, say); the message suggests GradCAM.
    """
    inner = getattr(model, "model", model)
    blocks = getattr(inner, "blocks", None)
    if blocks is None or not all(hasattr(b, "attn") and hasattr(b.attn, "attn_drop") for b in blocks):
        raise ValueError(
            "Attention maps need a timm Vision Transformer (blocks with `attn.attn_drop`), e.g. vit_small_patch16_224; "
            f"{type(inner).__name__} is not one. Use GradCAM for other architectures."
        )
    return list(blocks)


@contextlib.contextmanager
def _unfused(blocks: list[Any]) -> Iterator[None]:
    # the fused kernel (scaled_dot_product_attention) never materialises the attention matrix
    saved = [getattr(b.attn, "fused_attn", False) for b in blocks]
    try:
        for b in blocks:
            b.attn.fused_attn = False
        yield
    finally:
        for b, fused in zip(blocks, saved, strict=True):
            b.attn.fused_attn = fused


@torch.no_grad()
def attention_maps(model: nn.Module, images: Tensor, layer_idx: int | None = -1) -> Tensor | list[Tensor]:
    """Softmax attention of block ``layer_idx``: ``(batch, heads, tokens, tokens)``; ``None`` gives every block's."""
    blocks = attention_blocks(model)
    captured: list[Tensor] = []
    handles = [b.attn.attn_drop.register_forward_hook(lambda m, a, out: captured.append(a[0].detach())) for b in blocks]
    modes = {m: m.training for m in model.modules()}
    try:
        model.eval()
        with _unfused(blocks), torch.inference_mode(False):
            model(images if images.ndim == 4 else images.unsqueeze(0))
    finally:
        for h in handles:
            h.remove()
        for m, mode in modes.items():
            m.training = mode
    return captured if layer_idx is None else captured[layer_idx]


def attention_rollout(model: nn.Module, images: Tensor, discard_ratio: float = 0.0) -> Tensor:
    """Attention rollout (Abnar & Zuidema, 2020): how much each patch reaches the CLS token, ``(batch, h, w)``.

    Heads are averaged, the residual connection is added as ``0.5 * (A + I)``, and the layers are multiplied from
    the first to the last; the CLS row, without the prefix tokens, is put back on the patch grid and scaled to [0, 1].
    """
    maps = attention_maps(model, images, layer_idx=None)
    assert isinstance(maps, list)
    inner = getattr(model, "model", model)
    prefix = int(getattr(inner, "num_prefix_tokens", 1))
    tokens = maps[0].shape[-1]
    result = torch.eye(tokens).expand(maps[0].shape[0], tokens, tokens)
    for attn in maps:
        fused = attn.float().cpu().mean(dim=1)
        if discard_ratio > 0:
            flat = fused.flatten(1)
            k = int(flat.shape[1] * discard_ratio)
            low = flat.topk(k, dim=1, largest=False).indices
            flat.scatter_(1, low, 0.0)
        fused = 0.5 * fused + 0.5 * torch.eye(tokens)
        fused = fused / fused.sum(dim=-1, keepdim=True)
        result = fused @ result
    cls_to_patches = result[:, 0, prefix:]
    grid = getattr(getattr(inner, "patch_embed", None), "grid_size", None)
    h, w = (int(grid[0]), int(grid[1])) if grid is not None else (math.isqrt(cls_to_patches.shape[1]),) * 2
    rollout = cls_to_patches.reshape(-1, h, w)
    low = rollout.flatten(1).min(1).values.view(-1, 1, 1)
    high = rollout.flatten(1).max(1).values.view(-1, 1, 1)
    return (rollout - low) / (high - low).clamp_min(1e-12)
