"""Parameter groups (no weight decay on norms and biases, layer-wise LR decay) and optimizers by name."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer

__all__ = ["OPTIMIZERS", "build_optimizer", "build_param_groups", "check_optimizer"]

#: built with torch directly; any other name timm's optimizer factory knows (lamb, lars, adan, ...) also works
OPTIMIZERS = ("sgd", "adam", "adamw")

OptimizerCallable = Callable[[Iterable[Any]], Optimizer]


def _timm_optimizers() -> list[str]:
    from timm.optim import list_optimizers

    return [str(name) for name in list_optimizers()]


def check_optimizer(optimizer: str | OptimizerCallable) -> None:
    """Raise a ``ValueError`` naming the choices when ``optimizer`` is an unknown name."""
    if callable(optimizer):
        return
    if not isinstance(optimizer, str):
        raise TypeError(f"Expected argument `optimizer` to be a name or a callable, but got {optimizer!r}.")
    if optimizer.lower() in OPTIMIZERS or optimizer.lower() in _timm_optimizers():
        return
    raise ValueError(
        f"Unknown optimizer {optimizer!r}. Choose one of {', '.join(OPTIMIZERS)} "
        "(or another name from timm.optim.list_optimizers()), or pass a callable that takes parameter groups."
    )


@contextmanager
def _all_trainable(model: nn.Module) -> Iterator[None]:
    # timm's group builders skip frozen parameters; we want every parameter in the optimizer from the start so that
    # unfreezing later never has to add groups (which breaks schedulers, DDP and resume).
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p, _ in flags:
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


def build_param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """All parameters of ``model`` in groups, frozen ones included, each group with ``weight_decay`` and ``lr_scale``.

    Norm, bias and the model's ``no_weight_decay()`` parameters get no weight decay. With ``layer_decay`` the learning
    rate of each layer is scaled by ``layer_decay ** depth_from_the_head`` (BEiT / timm ``--layer-decay``).
    """
    from timm.optim import param_groups_layer_decay, param_groups_weight_decay

    no_decay_fn = getattr(model, "no_weight_decay", None)
    no_decay = set(no_decay_fn()) if callable(no_decay_fn) else set()
    with _all_trainable(model):
        if layer_decay is not None:
            groups = param_groups_layer_decay(
                model, weight_decay=weight_decay, no_weight_decay_list=no_decay, layer_decay=layer_decay
            )
        else:
            groups = param_groups_weight_decay(model, weight_decay=weight_decay, no_weight_decay_list=no_decay)
    for group in groups:
        group.setdefault("lr_scale", 1.0)
        group.pop("use_fallback", None)
    return list(groups)


def build_optimizer(
    optimizer: str | OptimizerCallable,
    param_groups: list[dict[str, Any]],
    *,
    lr: float,
    momentum: float = 0.9,
    nesterov: bool = False,
) -> Optimizer:
    """Create the optimizer and scale each group's learning rate by its ``lr_scale``."""
    check_optimizer(optimizer)
    if callable(optimizer):
        opt = optimizer(param_groups)
    else:
        name = optimizer.lower()
        if name == "sgd":
            opt = torch.optim.SGD(param_groups, lr=lr, momentum=momentum, nesterov=nesterov)
        elif name == "adam":
            opt = torch.optim.Adam(param_groups, lr=lr)
        elif name == "adamw":
            opt = torch.optim.AdamW(param_groups, lr=lr)
        else:
            from timm.optim import create_optimizer_v2

            opt = create_optimizer_v2(param_groups, opt=name, lr=lr, momentum=momentum)
    for group in opt.param_groups:
        group["lr"] = group["lr"] * group.get("lr_scale", 1.0)
    return opt
