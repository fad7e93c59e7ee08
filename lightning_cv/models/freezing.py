"""Freezing policies that work for every timm architecture.

Layer groups come from timm's uniform model interface: ``model.group_matcher(coarse=True)`` names the stem, the
stages (ResNet ``layer1``..``layer4``, ConvNeXt ``stages.N``) or blocks (ViT ``blocks.N``) and the final norm; the
classification head (``model.get_classifier()``) is kept apart and is never frozen. Freezing ``n`` groups freezes the
first ``n`` of them, counted from the input side. No code here knows about any particular family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn

from lightning_cv.models.weights import head_parameter_names

__all__ = [
    "LayerGroup",
    "apply_freezing",
    "auto_frozen_groups",
    "eval_frozen_modules",
    "frozen_groups_at_epoch",
    "layer_groups",
]

#: training-set sizes of the rule of thumb behind ``freeze_backbone="auto"``
FEATURE_EXTRACTION_BELOW = 10_000
PARTIAL_FREEZING_UP_TO = 100_000


@dataclass(frozen=True)
class LayerGroup:
    """One group of backbone parameters that is frozen or trained as a unit."""

    index: int
    name: str
    param_names: tuple[str, ...]


def _common_module(modules: Sequence[str]) -> str:
    common = modules[0].split(".")
    for mod in modules[1:]:
        parts = mod.split(".")
        i = 0
        while i < min(len(common), len(parts)) and common[i] == parts[i]:
            i += 1
        common = common[:i]
    return ".".join(common)


def _group_name(names: Sequence[str]) -> str:
    """``"layer1"``, ``"blocks.3"``, or ``"blocks.5, norm"`` for a group that spans several top-level modules."""
    modules = [n.rsplit(".", 1)[0] if "." in n else n for n in names]
    by_top: dict[str, list[str]] = {}
    for mod in modules:
        by_top.setdefault(mod.split(".")[0], []).append(mod)
    parts = [_common_module(mods) for mods in by_top.values()]
    return ", ".join(parts[:4]) + (", ..." if len(parts) > 4 else "")


def layer_groups(model: nn.Module) -> list[LayerGroup]:
    """The backbone's layer groups from input to output, without the classification head.

    Uses ``model.group_matcher(coarse=True)`` when the model has it (every timm model does), otherwise the model's
    top-level children in order.
    """
    head = head_parameter_names(model)
    names = [n for n, _ in model.named_parameters() if n not in head]
    buckets: dict[int, list[str]] = {}
    group_matcher = getattr(model, "group_matcher", None)
    if callable(group_matcher):
        from timm.models import group_parameters

        grouped = group_parameters(model, group_matcher(coarse=True))
        for gid, params in grouped.items():
            buckets[int(gid)] = [p for p in params if p not in head]
    else:
        order: dict[str, int] = {}
        for n in names:
            gid = order.setdefault(n.split(".")[0], len(order))
            buckets.setdefault(gid, []).append(n)
    groups = [params for _, params in sorted(buckets.items()) if params]
    return [LayerGroup(index=i, name=_group_name(p), param_names=tuple(p)) for i, p in enumerate(groups)]


def apply_freezing(model: nn.Module, groups: Sequence[LayerGroup], num_frozen: int) -> None:
    """Freeze the first ``num_frozen`` groups and make every other parameter (head included) trainable."""
    if not 0 <= num_frozen <= len(groups):
        raise ValueError(f"Expected 0 <= num_frozen <= {len(groups)} (the number of layer groups), got {num_frozen}.")
    frozen = {n for g in groups[:num_frozen] for n in g.param_names}
    for name, param in model.named_parameters():
        param.requires_grad_(name not in frozen)


def eval_frozen_modules(module: nn.Module) -> None:
    """Put every submodule whose parameters are all frozen in eval mode.

    A frozen BatchNorm then normalises with its running statistics and never updates them, and dropout or drop-path
    inside a frozen block is off, so a frozen block computes in training exactly what it computes in evaluation.
    """
    params = list(module.parameters())
    if params and not any(p.requires_grad for p in params):
        module.eval()
        return
    for child in module.children():
        eval_frozen_modules(child)


def frozen_groups_at_epoch(epoch: int, initial: int, milestones: Sequence[int] | None) -> int:
    """How many groups are frozen at ``epoch`` under gradual unfreezing.

    The ``initial`` frozen groups thaw from the output side in equal steps, one step at each milestone epoch, and
    everything is trainable from the last milestone on. One milestone is fastai's ``fine_tune(freeze_epochs=m)``.
    """
    if not milestones:
        return initial
    passed = sum(1 for m in milestones if epoch >= m)
    total = len(milestones)
    return math.floor(initial * (total - passed) / total)


def auto_frozen_groups(num_samples: int, num_groups: int) -> tuple[int, str]:
    """The rule of thumb behind ``freeze_backbone="auto"``: how many groups to freeze, and why."""
    if num_samples < FEATURE_EXTRACTION_BELOW:
        return num_groups, (
            f"{num_samples} training images < {FEATURE_EXTRACTION_BELOW}: feature extraction "
            f"(all {num_groups} backbone groups frozen, only the head trains)"
        )
    if num_samples <= PARTIAL_FREEZING_UP_TO:
        n = num_groups // 2
        return n, (
            f"{num_samples} training images <= {PARTIAL_FREEZING_UP_TO}: partial freezing "
            f"(first {n} of {num_groups} backbone groups frozen)"
        )
    return 0, f"{num_samples} training images > {PARTIAL_FREEZING_UP_TO}: full fine-tuning (nothing frozen)"
