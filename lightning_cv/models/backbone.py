"""Create timm backbones by name, with pretrained weights from the hub or from a local file."""

from __future__ import annotations

import dataclasses
import difflib
import logging
import os
from collections.abc import Sequence
from typing import Any

import timm
from torch import nn

from lightning_cv.data.config import DataConfig
from lightning_cv.models.model_folder import FolderModel, check_architecture, is_model_folder_source, read_model_folder
from lightning_cv.models.weights import load_pretrained_file

__all__ = ["check_backbone_name", "create_backbone", "resolve_data_config"]

log = logging.getLogger(__name__)

_RESERVED_KWARGS = ("num_classes", "pretrained", "drop_rate")


def check_backbone_name(name: str, allowed: Sequence[str] | None = None, family: str | None = None) -> None:
    """Raise a ``ValueError`` with close matches when ``name`` is not a timm model (or not in ``allowed``)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"Expected argument `backbone` to be a timm model name, but got {name!r}.")
    candidates = list(allowed) if allowed is not None else timm.list_models()
    arch = name.split(".", 1)[0]  # "resnet50.a1_in1k" names a pretrained tag of "resnet50"
    if arch in candidates and timm.is_model(name):
        return
    if allowed is not None and timm.is_model(name):
        raise ValueError(
            f"Backbone {name!r} is a timm model but not of the {family} family. "
            f"Use `ImageClassifier(backbone={name!r})` instead, or one of: {', '.join(candidates[:8])}, ..."
        )
    close = difflib.get_close_matches(arch, candidates, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    raise ValueError(
        f"Unknown backbone {name!r}.{hint} (timm has {len(timm.list_models())} models; see timm.list_models())"
    )


def create_backbone(
    name: str,
    *,
    num_classes: int,
    pretrained: bool | str | FolderModel = False,
    drop_rate: float = 0.0,
    backbone_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Create a timm model with a ``num_classes`` head.

    Args:
        name: any name from ``timm.list_models()``, optionally with a pretrained tag
            (``"vit_small_patch16_224.augreg_in21k"``).
        num_classes: size of the new classification head.
        pretrained: ``True`` downloads timm's default weights for ``name`` (or reads them from the Hugging Face cache),
            a path loads a local ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict, a model folder (a local
            folder, ``"hf-hub:org/name"`` or its :class:`~lightning_cv.models.model_folder.FolderModel`, read
            already) loads its ``model.safetensors`` after checking its architecture, ``False`` starts from random
            weights and makes no network call.
        drop_rate: dropout before the classification head.
        backbone_kwargs: passed through to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
    """
    kwargs = dict(backbone_kwargs or {})
    reserved = [k for k in _RESERVED_KWARGS if k in kwargs]
    if reserved:
        raise ValueError(
            f"`backbone_kwargs` must not contain {reserved}: pass them as arguments of the classifier itself."
        )
    check_backbone_name(name)
    if isinstance(pretrained, os.PathLike):
        pretrained = os.fspath(pretrained)
    if isinstance(pretrained, str) and is_model_folder_source(pretrained):
        pretrained = read_model_folder(pretrained)
    if isinstance(pretrained, FolderModel):
        check_architecture(name, pretrained)
        pretrained = str(pretrained.weights)
    if isinstance(pretrained, str):
        model = timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kwargs)
        load_pretrained_file(model, pretrained)
        return model
    if not isinstance(pretrained, bool):
        raise TypeError(
            f"Expected argument `pretrained` to be a bool, a weights file, a model folder or 'hf-hub:org/name', but "
            f"got {pretrained!r}."
        )
    if not pretrained:
        return timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate, **kwargs)
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate, **kwargs)
    except Exception as err:  # hub, network and cache errors come in many types (OSError, HTTP, LocalEntryNotFound)
        if isinstance(err, (TypeError, ValueError)) and not _looks_like_download_error(err):
            raise
        raise RuntimeError(
            f"Could not get pretrained weights for backbone {name!r}: {type(err).__name__}: {err}\n"
            "If this machine is offline, either pass a local weights file "
            f"(`pretrained='path/to/{name}.safetensors'`), or download the weights once on a connected machine "
            "(`timm.create_model(name, pretrained=True)`), copy its Hugging Face cache (~/.cache/huggingface or "
            "$HF_HOME) here and set HF_HUB_OFFLINE=1. Use `pretrained=False` to train from scratch."
        ) from err


def _looks_like_download_error(err: BaseException) -> bool:
    text = f"{type(err).__name__} {err}".lower()
    return any(word in text for word in ("hub", "offline", "connect", "download", "http", "cache", "network"))


def resolve_data_config(model: nn.Module, backbone_kwargs: dict[str, Any] | None = None) -> DataConfig:
    """The input size, mean, std, interpolation and crop the backbone was pretrained with (timm's data config).

    ``img_size`` and ``in_chans`` in ``backbone_kwargs`` override the pretrained input size, since timm keeps the
    pretrained value in the model's config even when the model was built for another size.
    """
    from timm.data import resolve_model_data_config

    config = DataConfig.from_timm(resolve_model_data_config(model))
    kwargs = backbone_kwargs or {}
    if "in_chans" in kwargs:
        config = dataclasses.replace(config, in_chans=int(kwargs["in_chans"]))
    if kwargs.get("img_size") is not None:
        img = kwargs["img_size"]
        config = config.override(image_size=int(img) if isinstance(img, int) else tuple(int(v) for v in img))
    return config
