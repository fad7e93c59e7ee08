"""Family presets: the same classifier with a sensible default backbone, restricted to one timm family."""

from __future__ import annotations

from functools import cache
from typing import Any, ClassVar

from torch import Tensor

from lightning_cv.models.backbone import check_backbone_name
from lightning_cv.models.classifier import ImageClassifier

__all__ = ["ConvNeXtClassifier", "EfficientNetClassifier", "ResNetClassifier", "ViTClassifier"]


@cache
def _family_models(modules: tuple[str, ...]) -> tuple[str, ...]:
    import timm

    return tuple(timm.list_models(module=list(modules)))


class _FamilyClassifier(ImageClassifier):
    family: ClassVar[str]
    timm_modules: ClassVar[tuple[str, ...]]

    @classmethod
    def family_models(cls) -> list[str]:
        """Every timm model name this family class accepts as ``backbone``."""
        return list(_family_models(cls.timm_modules))

    @classmethod
    def _check_family(cls, backbone: str) -> None:
        check_backbone_name(backbone, allowed=cls.family_models(), family=cls.family)


class ResNetClassifier(_FamilyClassifier):
    """:class:`ImageClassifier` for the ResNet family (ResNet, ResNeXt, SE-/ECA-ResNet, ResNet-D ...).

    The default ``resnet50`` is the classic transfer-learning baseline: robust on small data sets and fast on GPUs.
    All other arguments are those of :class:`ImageClassifier`.
    """

    family = "ResNet"
    timm_modules = ("resnet", "resnetv2")

    def __init__(self, *, num_classes: int | None = None, backbone: str = "resnet50", **kwargs: Any) -> None:
        self._check_family(backbone)
        super().__init__(num_classes=num_classes, backbone=backbone, **kwargs)


class ViTClassifier(_FamilyClassifier):
    """:class:`ImageClassifier` for Vision Transformers (ViT, DeiT, and hybrids).

    ViTs fine-tune best with AdamW, warmup, cosine decay and ``layer_decay`` around 0.65-0.75. The default
    ``vit_small_patch16_224`` works on 224 px input; pass ``backbone_kwargs={"img_size": ...}`` for another size.
    """

    family = "ViT"
    timm_modules = ("vision_transformer", "vision_transformer_hybrid", "deit")

    def __init__(
        self, *, num_classes: int | None = None, backbone: str = "vit_small_patch16_224", **kwargs: Any
    ) -> None:
        self._check_family(backbone)
        super().__init__(num_classes=num_classes, backbone=backbone, **kwargs)

    def get_attention_maps(self, image: Tensor, layer_idx: int = -1) -> Tensor:
        """Softmax attention of one block, ``[batch, heads, tokens, tokens]`` (tokens include the CLS token)."""
        from lightning_cv.interpret.attention import attention_maps

        maps = attention_maps(self, image, layer_idx=layer_idx)
        assert isinstance(maps, Tensor)
        return maps

    def attention_rollout(self, image: Tensor) -> Tensor:
        """Attention rollout on the patch grid, ``[batch, h, w]`` in [0, 1]."""
        from lightning_cv.interpret.attention import attention_rollout

        return attention_rollout(self, image)


class EfficientNetClassifier(_FamilyClassifier):
    """:class:`ImageClassifier` for EfficientNet, MobileNet-V2/V3-style and related mobile CNNs.

    The default ``efficientnet_b0`` is accurate for its size; a good choice for CPU or edge deployment.
    """

    family = "EfficientNet"
    timm_modules = ("efficientnet", "mobilenetv3")

    def __init__(self, *, num_classes: int | None = None, backbone: str = "efficientnet_b0", **kwargs: Any) -> None:
        self._check_family(backbone)
        super().__init__(num_classes=num_classes, backbone=backbone, **kwargs)


class ConvNeXtClassifier(_FamilyClassifier):
    """:class:`ImageClassifier` for ConvNeXt: a modern CNN that fine-tunes like a ViT (AdamW, layer decay)."""

    family = "ConvNeXt"
    timm_modules = ("convnext",)

    def __init__(self, *, num_classes: int | None = None, backbone: str = "convnext_tiny", **kwargs: Any) -> None:
        self._check_family(backbone)
        super().__init__(num_classes=num_classes, backbone=backbone, **kwargs)
