"""A checkpoint's saved model settings against what the user typed: one rule for every subcommand."""

from __future__ import annotations

import inspect
from typing import Any

from lightning_cv.models.checkpoint import plain_hparams
from lightning_cv.models.classifier import ImageClassifier

__all__ = ["ARCHITECTURE_OPTIONS", "RUNTIME_OPTIONS", "apply_checkpoint_settings"]


#: model options that define the weights' shapes and meaning: a checkpoint's weights fit only its own
ARCHITECTURE_OPTIONS = ("backbone", "backbone_kwargs", "num_classes", "class_names")
#: model options that change how the model runs, not what it computes: free to differ from the checkpoint
RUNTIME_OPTIONS = ("compile", "channels_last")


def apply_checkpoint_settings(
    model_cfg: Any, checkpoint: dict[str, Any], given: dict[str, Any], subcommand: str
) -> None:
    """Fill ``model_cfg`` from the checkpoint's saved model settings, as plain values; refuse contradictions.

    What the user set (``given``: command line and config files, without defaults) must agree with the checkpoint
    where the checkpoint decides: its architecture and classes always (the weights fit nothing else), and every
    setting when resuming with ``fit`` (the run continues with its optimizer and schedule state, so a new ``lr``
    could not take effect). ``compile`` and ``channels_last`` may always differ; in ``validate``/``test``/``predict``
    the evaluation settings (``top_k``, ``label_smoothing``, ...) given by the user apply. ``pretrained`` is the
    checkpoint's (the weights come from it).
    """
    known = set(inspect.signature(ImageClassifier.__init__).parameters) - {"self"}
    saved = plain_hparams(checkpoint.get("hyper_parameters"), allowed=known)
    conflicts = []
    for key, value in saved.items():
        if key in given and key != "pretrained" and _plain(given[key]) != _plain(value):
            if key in RUNTIME_OPTIONS or (subcommand != "fit" and key not in ARCHITECTURE_OPTIONS):
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
