"""The arguments of :class:`~lightning_cv.ImageClassifier`, checked in ``__init__`` with the fix in the message."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from lightning_cv.data.batch import MULTILABEL, check_task
from lightning_cv.losses import ASL_DEFAULTS, FOCAL_DEFAULTS
from lightning_cv.models.backbone import check_backbone_name
from lightning_cv.models.compiling import check_compile_spec
from lightning_cv.optim.optimizers import check_optimizer
from lightning_cv.optim.schedules import check_scheduler
from lightning_cv.plain_data import refuse_class_specs

__all__ = ["safe_yaml_hparams", "validate_arguments"]


def safe_yaml_hparams(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Hyperparameters from a YAML file, as plain values (no Python tags such as ``!!python/name``)."""
    import yaml

    with open(path, encoding="utf-8") as stream:
        try:
            values = yaml.safe_load(stream)
        except yaml.YAMLError as err:
            raise ValueError(f"`hparams_file` '{path}' is not plain YAML ({err}).") from err
    if not isinstance(values, dict):
        raise ValueError(f"`hparams_file` '{path}' holds no mapping of hyperparameters.")
    return values


def validate_arguments(args: dict[str, Any]) -> None:
    """Fail fast, in ``__init__``, with the fix in the message."""
    num_classes = args["num_classes"]
    if num_classes is None:
        raise ValueError(
            "Expected argument `num_classes` to be an integer >= 2, but got None. Pass the number of classes, "
            "e.g. `num_classes=datamodule.num_classes`."
        )
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"Expected argument `num_classes` to be an integer >= 2, but got {num_classes!r}.")
    names: Sequence[str] | None = args["class_names"]
    if names is not None and len(names) != num_classes:
        raise ValueError(f"Expected {num_classes} `class_names` (one per class), but got {len(names)}.")
    check_backbone_name(args["backbone"])
    checks = [
        ("drop_rate", 0.0 <= args["drop_rate"] < 1.0, "in [0, 1)"),
        ("label_smoothing", 0.0 <= args["label_smoothing"] < 1.0, "in [0, 1)"),
        ("lr", args["lr"] > 0, "> 0"),
        ("weight_decay", args["weight_decay"] >= 0, ">= 0"),
        ("momentum", 0.0 <= args["momentum"] < 1.0, "in [0, 1)"),
        ("warmup_epochs", args["warmup_epochs"] >= 0, ">= 0"),
        ("warmup_steps", args["warmup_steps"] >= 0, ">= 0"),
        ("warmup_start_factor", 0.0 <= args["warmup_start_factor"] <= 1.0, "in [0, 1]"),
        ("eta_min", 0.0 <= args["eta_min"] <= args["lr"], "in [0, lr]"),
        ("step_size", args["step_size"] >= 1, ">= 1"),
        ("gamma", args["gamma"] > 0, "> 0"),
        ("top_k", args["top_k"] >= 1, ">= 1"),
        ("calibration_bins", args["calibration_bins"] >= 1, ">= 1"),
        ("freeze_layers", args["freeze_layers"] >= 0, ">= 0"),
    ]
    refuse_class_specs(args["backbone_kwargs"], "backbone_kwargs")
    refuse_class_specs(args["compile"], "compile")
    check_compile_spec(args["compile"])
    for name, ok, expected in checks:
        if not ok:
            raise ValueError(f"Expected argument `{name}` to be {expected}, but got {args[name]!r}.")
    if args["layer_decay"] is not None and not 0.0 < args["layer_decay"] <= 1.0:
        raise ValueError(f"Expected argument `layer_decay` to be in (0, 1] or None, but got {args['layer_decay']!r}.")
    if args["warmup_epochs"] > 0 and args["warmup_steps"] > 0:
        raise ValueError("Give the warmup length once: `warmup_epochs` or `warmup_steps`, not both.")
    if args["nesterov"] and args["momentum"] <= 0:
        raise ValueError("`nesterov=True` needs `momentum` > 0.")
    _check_task_settings(args)
    check_optimizer(args["optimizer"])
    check_scheduler(args["scheduler"])
    freeze = args["freeze_backbone"]
    if freeze not in (True, False, "auto"):
        raise ValueError(f"Expected argument `freeze_backbone` to be True, False or 'auto', but got {freeze!r}.")
    if freeze is not False and args["freeze_layers"]:
        raise ValueError(
            "Choose one freezing policy: `freeze_backbone` (everything but the head, or 'auto') or "
            "`freeze_layers=N` (the first N layer groups), not both."
        )
    milestones = args["unfreeze_milestones"]
    if milestones is not None:
        if (
            not milestones
            or any(not isinstance(m, int) or m < 0 for m in milestones)
            or list(milestones) != sorted(set(milestones))
        ):
            raise ValueError(
                f"Expected `unfreeze_milestones` to be increasing epoch numbers >= 0, but got {milestones!r}."
            )
        if freeze is False and not args["freeze_layers"]:
            raise ValueError(
                "`unfreeze_milestones` thaws frozen layers, but nothing is frozen. Add `freeze_backbone=True` "
                "or `freeze_layers=N`."
            )


LOSSES = ("auto", "cross_entropy", "focal", "bce", "asl")


def _check_task_settings(args: dict[str, Any]) -> None:
    """The task, its loss and the multi-label options, each refused where it cannot apply."""
    from lightning_cv.models.thresholds import check_thresholds

    task = check_task(args["task"])
    loss, pos_weight, thresholds = args["loss"], args["pos_weight"], args["thresholds"]
    if loss not in LOSSES:
        raise ValueError(f"Expected argument `loss` to be one of {', '.join(map(repr, LOSSES))}, but got {loss!r}.")
    if task == MULTILABEL and loss in ("cross_entropy", "focal"):
        raise ValueError(
            f"`loss={loss!r}` is for one class per image, but `task='multilabel'`: use `loss='bce'` (or "
            "'auto') or `loss='asl'`."
        )
    if task == MULTILABEL:
        for name, fix in (("class_weights", "`pos_weight`"), ("logit_adjustment", "`pos_weight` or `loss='asl'`")):
            if args[name] is not None:
                raise ValueError(
                    f"`{name}` is for one class per image, but `task='multilabel'`: weigh each label's positives "
                    f"with {fix} instead."
                )
    _check_class_weights(args["class_weights"], args["num_classes"])
    tau = args["logit_adjustment"]
    if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float)) or tau < 0):
        raise ValueError(f"Expected `logit_adjustment` (tau) to be a number >= 0 or None, but got {tau!r}.")
    if task != MULTILABEL:
        for name, value in (("loss", loss if loss in ("bce", "asl") else None), ("thresholds", thresholds),
                            ("pos_weight", pos_weight)):  # fmt: skip
            if value is not None:
                raise ValueError(
                    f"`{name}={value!r}` applies to multi-label models only, but `task={task!r}`. Pass "
                    f"`task='multilabel'` (command line: `--model.task multilabel`) or drop `{name}`."
                )
    check_thresholds(thresholds, args["num_classes"])
    if pos_weight is not None:
        if loss == "asl":
            raise ValueError(
                "`pos_weight` weights the positives of the binary cross entropy; the asymmetric loss balances "
                "positives and negatives through `loss_kwargs` (gamma_neg, gamma_pos, clip). Drop one of the two."
            )
        if isinstance(pos_weight, str):
            if pos_weight != "balanced":
                raise ValueError(
                    f"Expected `pos_weight` 'balanced', a list of numbers or None, but got {pos_weight!r}."
                )
        elif len(pos_weight) != args["num_classes"] or any(
            isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in pos_weight
        ):
            raise ValueError(
                f"Expected `pos_weight` to hold one positive number per class ({args['num_classes']}), but got "
                f"{list(pos_weight)!r}."
            )
    settings = args["loss_kwargs"]
    if settings is not None:
        known = {"asl": ASL_DEFAULTS, "focal": FOCAL_DEFAULTS}.get(loss)
        if known is None:
            raise ValueError(
                f"`loss_kwargs` sets the focal loss (`loss='focal'`) or the asymmetric loss (`loss='asl'`), but "
                f"`loss={loss!r}`."
            )
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"Unknown `loss_kwargs` {unknown} for `loss={loss!r}`; choose from {sorted(known)}.")
        for key, value in settings.items():
            ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
            if not ok or (key == "clip" and value >= 1):
                raise ValueError(f"Expected `loss_kwargs['{key}']` >= 0{' and < 1' if key == 'clip' else ''}, "
                                 f"but got {value!r}.")  # fmt: skip


def _check_class_weights(weights: Any, num_classes: int) -> None:
    if weights is None or weights == "balanced":
        return
    if isinstance(weights, str):
        raise ValueError(f"Expected `class_weights` 'balanced', a list of numbers or None, but got {weights!r}.")
    if len(weights) != num_classes or any(
        isinstance(w, bool) or not isinstance(w, (int, float)) or w <= 0 for w in weights
    ):
        raise ValueError(
            f"Expected `class_weights` to hold one positive number per class ({num_classes}), but got "
            f"{list(weights)!r}."
        )
