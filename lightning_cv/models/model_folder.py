"""Model folders in timm's Hugging Face format: ``model.safetensors`` + ``config.json`` (``save_for_hf``).

:func:`save_model_folder` writes one from a trained :class:`~lightning_cv.ImageClassifier`: the timm model's weights
(the EMA average when the checkpoint has one, as every evaluation uses) and timm's ``config.json`` with the
architecture, ``num_classes``, ``label_names`` and the preprocessing the model was trained with, so plain timm loads
it (``timm.create_model("local-dir:my-model", pretrained=True)``, or ``"hf-hub:org/name"`` once pushed). What timm
has no field for (the task, the temperature, the reject threshold, multi-label thresholds) goes under
``"lightning_cv"`` in the same file; timm ignores it.

:func:`read_model_folder` reads one back as *data* for ``ImageClassifier(pretrained="my-model/")`` or
``pretrained="hf-hub:org/name"``: the JSON's fields are checked and only names and numbers are taken from it;
weights come from the safetensors file alone (no pickle), and nothing in the folder is imported or instantiated.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

__all__ = [
    "CONFIG_NAME",
    "HUB_PREFIX",
    "WEIGHTS_NAME",
    "FolderModel",
    "check_architecture",
    "fetch_hub_folder",
    "is_model_folder_source",
    "match_head_to_classes",
    "read_model_folder",
    "save_model_folder",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
HUB_PREFIX = "hf-hub:"
log = logging.getLogger(__name__)
#: the largest config.json read (timm's are a few kB)
MAX_CONFIG_BYTES = 4 * 2**20


@dataclass
class FolderModel:
    """What a model folder says about its model, read as data."""

    folder: Path
    architecture: str
    num_classes: int
    label_names: list[str] | None = None
    #: the ``"lightning_cv"`` block (task, temperature, min_confidence, thresholds), when written by us
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def weights(self) -> Path:
        return self.folder / WEIGHTS_NAME


def is_model_folder_source(pretrained: object) -> TypeGuard[str]:
    """Whether ``pretrained`` names a model folder: ``"hf-hub:org/name"`` or a local folder."""
    return isinstance(pretrained, str) and (pretrained.startswith(HUB_PREFIX) or Path(pretrained).is_dir())


def _network_data_config(data_config: Any) -> dict[str, Any]:
    return {
        "input_size": tuple(data_config.input_size),
        "mean": tuple(float(v) for v in data_config.mean),
        "std": tuple(float(v) for v in data_config.std),
        "interpolation": str(data_config.interpolation),
        "crop_pct": float(data_config.crop_pct),
        "crop_mode": str(data_config.crop_mode),
    }


def save_model_folder(
    network: nn.Module,
    folder: str | os.PathLike[str],
    *,
    data_config: Any,
    label_names: list[str] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``network`` (a timm model) as ``model.safetensors`` + ``config.json`` into ``folder`` with timm's
    ``save_for_hf``; returns the config written.

    Args:
        data_config: the preprocessing the model was trained with (a :class:`~lightning_cv.data.DataConfig`).
        label_names: one name per output, in output order.
        extra: plain values timm has no field for, stored under ``"lightning_cv"``.
    """
    from timm.models import save_for_hf

    network = getattr(network, "_orig_mod", network)  # a compiled model saves its original's weights
    model_config: dict[str, Any] = {}
    if label_names:
        model_config["label_names"] = [str(name) for name in label_names]
    if extra:
        model_config["lightning_cv"] = extra
    save_for_hf(
        network, str(folder), model_config=model_config, safe_serialization=True,
        data_config=_network_data_config(data_config),
    )  # fmt: skip
    return json.loads((Path(folder) / CONFIG_NAME).read_text())


def fetch_hub_folder(repo: str, cache_dir: str | None = None) -> Path:
    """Download ``config.json`` and ``model.safetensors`` of the Hub repository ``repo`` (``org/name`` or
    ``org/name@revision``) into the Hugging Face cache; returns the local folder. Nothing else is downloaded."""
    from huggingface_hub import snapshot_download

    repo_id, _, revision = repo.partition("@")
    try:
        path = snapshot_download(
            repo_id, revision=revision or None, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME], cache_dir=cache_dir
        )
    except Exception as err:  # hub, network and cache errors come in many types
        raise RuntimeError(
            f"Could not download the model folder '{HUB_PREFIX}{repo}': {type(err).__name__}: {err}\n"
            "Check the name and your network (a private repository needs `HF_TOKEN` or `hf auth login`); offline, "
            "pass a local folder instead (`pretrained='path/to/my-model'`)."
        ) from err
    return Path(path)


def read_model_folder(source: str | os.PathLike[str]) -> FolderModel:
    """The model folder ``source`` (a local folder, or ``"hf-hub:org/name"``, downloaded first), its config checked.

    Raises:
        ValueError: the folder lacks ``config.json`` or ``model.safetensors``, or its config is not timm's.
    """
    text = os.fspath(source)
    folder = fetch_hub_folder(text[len(HUB_PREFIX) :]) if text.startswith(HUB_PREFIX) else Path(text)
    config_path, weights = folder / CONFIG_NAME, folder / WEIGHTS_NAME
    for needed in (config_path, weights):
        if not needed.is_file():
            raise ValueError(
                f"'{folder}' is not a model folder: it has no {needed.name}. A model folder holds {WEIGHTS_NAME} and "
                f"{CONFIG_NAME}, as `lightning-cv package` and timm's `save_for_hf` write them."
            )
    if config_path.stat().st_size > MAX_CONFIG_BYTES:
        raise ValueError(f"'{config_path}' is larger than a model config ({MAX_CONFIG_BYTES} bytes): refused.")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"'{config_path}' is not JSON ({err}): not a timm model config.") from err
    if not isinstance(config, dict):
        raise ValueError(f"'{config_path}' is not a timm model config (not a JSON object).")
    nested = config.get("pretrained_cfg")
    pretrained_cfg: dict[str, Any] = nested if isinstance(nested, dict) else config
    architecture = config.get("architecture", pretrained_cfg.get("architecture"))
    num_classes = config.get("num_classes", pretrained_cfg.get("num_classes"))
    if not isinstance(architecture, str) or not architecture:
        raise ValueError(f"'{config_path}' names no `architecture`: not a timm model config.")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 0 <= num_classes < 10**7:
        raise ValueError(f"'{config_path}' gives `num_classes` {num_classes!r}: a non-negative int is expected.")
    names = config.get("label_names", pretrained_cfg.get("label_names"))
    if isinstance(names, dict):  # timm allows {index: name}
        names = [names.get(str(i), names.get(i)) for i in range(num_classes)]  # type: ignore[call-overload]
    if names is not None and not (
        isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)
    ):
        names = None  # unusable names are ignored: the weights still load, the data names the classes
    extra = config.get("lightning_cv")
    return FolderModel(folder, architecture, num_classes, names, _plain(extra) if isinstance(extra, dict) else {})


def _plain(value: Any) -> Any:
    """``value`` with only JSON's plain types kept (finite numbers): what a folder may hand to a model."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value if isinstance(value, (str, int, float, bool)) or value is None else None


def check_architecture(backbone: str, folder: FolderModel) -> None:
    """Refuse a folder of another architecture than ``backbone`` (a pretrained tag such as ``.a1_in1k`` aside)."""
    if backbone.split(".")[0] != folder.architecture.split(".")[0]:
        raise ValueError(
            f"The model folder '{folder.folder}' holds a {folder.architecture!r}, not a {backbone!r}: pass "
            f"`backbone='{folder.architecture}'` to fine-tune it."
        )


def match_head_to_classes(network: nn.Module, folder: FolderModel, class_names: list[str] | None) -> list[str] | None:
    """Fit the head loaded from ``folder`` to the classes asked for; returns the class names the model keeps.

    The folder's label names are reused when no names are given (and the class count matches). With names given:
    the same names in the same order keep the head; the same names in another order reorder its rows, so each
    output keeps its class; other names (same count) get a fresh head, since the old rows meant other classes.
    """
    from lightning_cv.models.weights import head_parameter_names

    names = folder.label_names
    count = int(getattr(network, "num_classes", -1))
    if names is None or count != folder.num_classes:
        return class_names  # no names to reuse, or another head size (initialised afresh when it was loaded)
    if class_names is None or list(class_names) == names:
        return list(names) if class_names is None else class_names
    if sorted(class_names) == sorted(names) and len(set(names)) == len(names):
        order = torch.tensor([names.index(c) for c in class_names])
        state = network.state_dict()
        with torch.no_grad():
            for key in head_parameter_names(network):
                if state[key].ndim >= 1 and state[key].shape[0] == count:
                    state[key].copy_(state[key][order].clone())
        log.info("Head rows of '%s' reordered to the classes %s.", folder.folder, class_names[:8])
        return class_names
    network.reset_classifier(count)  # type: ignore[operator]
    log.info("Other classes than those of '%s' (%s ...): its head is initialised afresh.", folder.folder, names[:5])
    return class_names
