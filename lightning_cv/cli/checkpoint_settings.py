"""A checkpoint's saved model settings against what the user typed: one rule for every subcommand."""

from __future__ import annotations

import inspect
from typing import Any

from lightning_cv.models.checkpoint import plain_hparams
from lightning_cv.models.classifier import ImageClassifier

__all__ = ["ARCHITECTURE_OPTIONS", "NOT_FROM_CHECKPOINT", "RUNTIME_OPTIONS", "apply_checkpoint_settings"]


#: model options that define the weights' shapes and meaning: a checkpoint's weights fit only its own
ARCHITECTURE_OPTIONS = ("backbone", "backbone_kwargs", "num_classes", "class_names", "task")
#: model options that change how the model runs, not what it computes: the user's (or the default), never the file's
#: (a shared checkpoint's `compile` options could name a compiler command to run)
RUNTIME_OPTIONS = ("compile", "channels_last")
#: a checkpoint brings its weights: `pretrained` is always False, so a file cannot make the model download anything
NOT_FROM_CHECKPOINT = {*RUNTIME_OPTIONS, "pretrained"}


def apply_checkpoint_settings(
    model_cfg: Any, checkpoint: dict[str, Any], given: dict[str, Any], subcommand: str
) -> None:
    """Fill ``model_cfg`` from the checkpoint's saved model settings, as plain values; refuse contradictions.

    What the user set (``given``: command line and config files, without defaults) must agree with the checkpoint
    where the checkpoint decides: its architecture and classes always (the weights fit nothing else), and every
    setting when resuming with ``fit`` (the run continues with its optimizer and schedule state, so a new ``lr``
    could not take effect). In ``validate``/``test``/``predict`` the evaluation settings (``top_k``,
    ``label_smoothing``, ...) given by the user apply. ``compile`` and ``channels_last`` are never taken from the
    checkpoint, and ``pretrained`` is always False (the weights come from the checkpoint).
    """
    known = set(inspect.signature(ImageClassifier.__init__).parameters) - {"self"}
    saved = plain_hparams(checkpoint.get("hyper_parameters"), allowed=known)
    conflicts = []
    model_cfg["pretrained"] = False
    for key, value in saved.items():
        if key in NOT_FROM_CHECKPOINT:
            continue
        if key in given and _plain(given[key]) != _plain(value):
            if subcommand != "fit" and key not in ARCHITECTURE_OPTIONS:
                continue  # the user's value applies
            conflicts.append(f"`model.{key}` is {given[key]!r} here but {value!r} in the checkpoint")
        model_cfg[key] = value
    if not conflicts:
        return
    if subcommand == "fit":
        why = (
            "`fit --ckpt_path` resumes that run exactly: its model settings, optimizer and schedule state come from "
            "the checkpoint. Drop the option(s) to resume, or start a new run from the checkpoint's weights with "
            "`--model.pretrained <checkpoint>` instead of `--ckpt_path` (the new settings then apply)."
        )
    else:
        why = "The checkpoint's weights fit only its own architecture and classes: drop the option(s)."
    raise ValueError(f"{'; '.join(conflicts)}. {why}")


def _plain(value: Any) -> Any:
    """Values as YAML would write them, so a tuple from one side equals a list from the other."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value
