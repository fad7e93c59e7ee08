"""Load local pretrained weights safely: safetensors or ``torch.load(weights_only=True)``, never arbitrary pickles.

Written here rather than taken from ``timm.models.load_checkpoint`` because we also accept Lightning checkpoints
(keys under ``state_dict`` with a ``model.`` prefix), strip any wrapper prefix, and report a mismatch by key name.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

__all__ = ["LoadReport", "head_parameter_names", "load_pretrained_file", "read_state_dict"]

log = logging.getLogger(__name__)

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_NESTED_KEYS = ("state_dict", "model_state_dict", "model", "module", "state_dict_ema")


@dataclass
class LoadReport:
    """What :func:`load_pretrained_file` did: how many tensors it loaded and whether the head was kept."""

    path: str
    loaded: int
    prefix: str = ""
    head_reinitialized: list[str] = field(default_factory=list)


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict of tensors from ``path`` without executing code from the file."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"Pretrained weights file '{file}' does not exist. Pass an existing .safetensors/.pth/.pt/.bin file, "
            "`pretrained=True` to download timm's weights, or `pretrained=False` to train from scratch."
        )
    if file.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(file), device="cpu"))
        except Exception as err:  # safetensors raises its own SafetensorError (and others) for a damaged file
            raise ValueError(_not_weights(file, err, "a safetensors file")) from err
    try:
        obj = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        found = re.findall(r"GLOBAL (\S+)", str(err))
        if not found:  # not a pickle of objects: random bytes or a damaged file
            raise ValueError(_not_weights(file, "no valid pickle of tensors inside", "a PyTorch weights file")) from err
        what = f" ({', '.join(found)})" if found else ""
        raise ValueError(
            f"Refusing to load '{file}': it holds Python objects other than tensors{what}, and unpickling them could "
            "run arbitrary code. Re-save only the weights, e.g. `torch.save(model.state_dict(), path)` or "
            "`safetensors.torch.save_file(model.state_dict(), 'weights.safetensors')`."
        ) from err
    except Exception as err:  # a cut zip, random bytes, a text file: torch raises RuntimeError, EOFError, ...
        raise ValueError(_not_weights(file, err, "a PyTorch weights file")) from err
    return _extract_tensors(obj, file)


def _not_weights(file: Path, err: BaseException | str, kind: str) -> str:
    if isinstance(err, BaseException):
        err = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:200]}"
    return (
        f"'{file}' is not {kind} that can be read ({err}). Check that the file is complete "
        "and what its name says, e.g. re-save it with `safetensors.torch.save_file(model.state_dict(), path)`."
    )


def _extract_tensors(obj: object, file: Path) -> dict[str, Tensor]:
    if isinstance(obj, Mapping):
        for key in _NESTED_KEYS:
            if isinstance(obj.get(key), Mapping):
                return _extract_tensors(obj[key], file)
        tensors = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, Tensor)}
        if tensors:
            return tensors
    raise ValueError(
        f"'{file}' holds no state dict of tensors (found {type(obj).__name__}). Save `model.state_dict()` "
        "rather than the model object."
    )


def head_parameter_names(model: nn.Module) -> set[str]:
    """Names of the parameters and buffers of the classification head (``model.get_classifier()``)."""
    get_classifier = getattr(model, "get_classifier", None)
    head = get_classifier() if callable(get_classifier) else None
    if not isinstance(head, nn.Module):
        return set()
    for mod_name, module in model.named_modules():
        if module is head:
            prefix = f"{mod_name}." if mod_name else ""
            names = {prefix + n for n, _ in head.named_parameters()}
            return names | {prefix + n for n, _ in head.named_buffers()}
    return set()


def _common_prefix(keys: list[str], model_keys: set[str]) -> str:
    """The wrapper prefix (``"model."``, ``"module."``, ...) that maps most file keys onto model keys."""
    votes: Counter[str] = Counter()
    for key in keys:
        parts = key.split(".")
        for i in range(len(parts)):
            if ".".join(parts[i:]) in model_keys:
                votes[".".join(parts[:i]) + "." if i else ""] += 1
                break
    return votes.most_common(1)[0][0] if votes else ""


def load_pretrained_file(model: nn.Module, path: str | os.PathLike[str]) -> LoadReport:
    """Load weights from a local file into ``model``, replacing a classifier head of another size.

    The file may be a plain state dict, a timm checkpoint or a Lightning checkpoint (also one written by
    :class:`~lightning_cv.ImageClassifier`). A head whose shape differs (another number of classes) or that the file
    lacks stays freshly initialised; any other missing, unexpected or mis-shaped key is an error naming the keys.
    """
    state = read_state_dict(path)
    target = model.state_dict()
    prefix = _common_prefix(list(state), set(target))
    if prefix:
        state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    head = head_parameter_names(model)
    reinit = sorted(k for k in head if k not in state or state[k].shape != target[k].shape)
    state = {k: v for k, v in state.items() if k not in reinit}

    missing = sorted(k for k in target if k not in state and k not in head)
    unexpected = sorted(k for k in state if k not in target)
    mismatched = sorted(
        f"{k}: file {tuple(v.shape)} vs model {tuple(target[k].shape)}"
        for k, v in state.items()
        if k in target and v.shape != target[k].shape
    )
    if missing or unexpected or mismatched:
        problems = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatch", mismatched)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                problems.append(f"{label}: {shown}")
        raise ValueError(
            f"Weights file '{path}' does not fit this backbone ({type(model).__name__}): "
            + "; ".join(problems)
            + ". Check that the file was saved from the same timm architecture (and `backbone_kwargs` such as "
            "img_size), or pass that architecture as `backbone`."
        )
    model.load_state_dict(state, strict=False)
    if reinit:
        log.info("Classifier head %s initialised afresh (absent from '%s' or of another size).", reinit, path)
    return LoadReport(path=str(path), loaded=len(state), prefix=prefix, head_reinitialized=reinit)
