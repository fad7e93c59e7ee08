"""ImageClassifier: a LightningModule around any timm backbone.

Why this file is ~670 lines: it is the LightningModule's hooks, in the order Lightning calls them, for both tasks
(one class per image, a set of labels per image), and the 90-line docstring that is the reference for every
argument. Argument checks (``arguments.py``), freezing (``freezing.py``), the backbone (``backbone.py``), checkpoint
reading (``checkpoint.py``), DDP re-wrapping (``ddp_rewrap.py``), the metrics (``metrics.py``,
``multilabel_metrics.py``), the decision settings (``decision_rules.py``: thresholds, temperature, reject threshold,
test-time augmentation; their state in ``thresholds.py`` and ``calibration.py``, the scoring in ``scoring.py``),
the label-counted loss weights (``loss_weights.py``), the losses (``lightning_cv.losses``) and the resume state
(``lightning_cv.resume``) live in their own modules.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import IO, Any, Literal

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor, nn

from lightning_cv.data.batch import (
    MULTILABEL,
    hard_labels,
    predicted_sets,
    split_batch,
    split_labelled_batch,
)
from lightning_cv.data.config import DataConfig
from lightning_cv.losses import (
    ASL_DEFAULTS,
    FOCAL_DEFAULTS,
    asymmetric_loss,
    binary_cross_entropy,
    focal_loss,
    logit_adjusted,
    soft_target_cross_entropy,
)
from lightning_cv.models.arguments import safe_yaml_hparams, validate_arguments
from lightning_cv.models.backbone import create_backbone, resolve_data_config
from lightning_cv.models.calibration import UNKNOWN, Calibration
from lightning_cv.models.ddp_rewrap import rewrap_ddp
from lightning_cv.models.decision_rules import DecisionRules
from lightning_cv.models.eval_mode_warning import FrozenEvalModeWarningFilter
from lightning_cv.models.freezing import (
    LayerGroup,
    apply_freezing,
    auto_frozen_groups,
    eval_frozen_modules,
    frozen_groups_at_epoch,
    layer_groups,
)
from lightning_cv.models.loss_weights import resolve_loss_weights
from lightning_cv.models.metrics import build_metrics, confusion_matrix_image, per_class_rows
from lightning_cv.models.model_folder import is_model_folder_source, match_head_to_classes, read_model_folder
from lightning_cv.models.multilabel_metrics import MultilabelMetrics
from lightning_cv.models.per_class_report import report_per_class
from lightning_cv.models.thresholds import DecisionThresholds, check_thresholds
from lightning_cv.optim.optimizers import OptimizerCallable, build_optimizer, build_param_groups
from lightning_cv.optim.schedules import build_scheduler
from lightning_cv.reporting import log_image
from lightning_cv.resume.keys import EMA_KEY, FREEZING_KEY
from lightning_cv.resume.schedule import sync_lr_with_schedule
from lightning_cv.resume.state import TrainingState

__all__ = ["ImageClassifier"]



class ImageClassifier(DecisionRules, LightningModule):
    """Image classification by transfer learning from any timm backbone.

    How much to freeze depends mostly on how much data you have: with fewer than ~10k images train only the head
    (``freeze_backbone=True``, feature extraction), up to ~100k freeze the early layers (``freeze_layers=N``), above
    that fine-tune everything; ``freeze_backbone="auto"`` applies this rule at fit start. ``unfreeze_milestones``
    thaws frozen groups gradually (one milestone at epoch 3 is fastai's ``fine_tune(freeze_epochs=3)``), and
    ``layer_decay`` gives layers near the input smaller learning rates (BEiT/ViT fine-tuning recipes).

    Args:
        num_classes: number of classes (at least 2); required (the command line fills it in from the data).
        backbone: a timm model name (``timm.list_models()``), optionally with a pretrained tag.
        pretrained: ``True`` for timm's pretrained weights (downloaded once, then cached), a path to a local
            ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict or checkpoint, a model folder written by
            ``lightning-cv package`` or timm's ``save_for_hf`` (a local folder, or ``"hf-hub:org/name"``: its label
            names are reused when the classes match, its head rows reordered when they come in another order), or
            ``False`` for random weights.
        backbone_kwargs: passed to ``timm.create_model`` (``drop_path_rate``, ``img_size``, ...).
        drop_rate: dropout before the classification head.
        class_names: names of the classes in label order; predictions and checkpoints carry them.
        task: ``"multiclass"`` (one class per image, softmax) or ``"multilabel"`` (a set of labels per image,
            possibly empty: one sigmoid per label, targets are multi-hot rows). Multi-label models report mAP, F1,
            precision, recall, subset accuracy and Hamming loss, and answer every label whose score reaches its
            decision threshold.
        thresholds: multi-label decision thresholds: one number for every label, one per label, or ``None`` to tune
            them on the validation split at the end of every validation of ``fit`` (each label's F1-maximising
            threshold, 0.5 for a label without positives there). They are saved in the checkpoint and used by
            test, predict, export and benchmark; a value given here always wins over the checkpoint's.
        freeze_backbone: ``True`` freezes everything but the head, ``"auto"`` chooses from the training-set size.
        freeze_layers: freeze the first N layer groups (see :attr:`layer_groups`).
        unfreeze_milestones: epochs at which the frozen groups thaw, deepest first, in equal steps; all are trainable
            from the last milestone on.
        label_smoothing: applied to hard labels and to mixed (soft) targets alike; for multi-label targets each
            binary target moves towards 0.5 (``(1 - eps) y + eps / 2``).
        loss: ``"auto"`` (cross entropy, or for multi-label binary cross entropy), ``"cross_entropy"``, ``"focal"``
            (the focal loss of Lin et al., ICCV 2017: hard, often rare-class, images weigh more), ``"bce"``
            (multi-label: binary cross entropy with logits) or ``"asl"`` (multi-label: the asymmetric loss of Ridnik
            et al., ICCV 2021, with their MS-COCO settings gamma_neg=4, gamma_pos=0, clip=0.05).
        loss_kwargs: settings of the ``"focal"`` loss (``gamma``, default 2) or of ``"asl"`` (``gamma_neg``,
            ``gamma_pos``, ``clip``).
        class_weights: multi-class: weight of each class in the loss, ``"balanced"`` (inverse class frequency, mean
            1, counted by the data module when fit starts) or one positive number per class; as
            ``F.cross_entropy(weight=...)`` applies them, to hard and mixed targets alike.
        logit_adjustment: multi-class: ``tau`` of the logit-adjusted loss (Menon et al., ICLR 2021; 1 in the paper):
            the loss sees ``logits + tau * log(class prior)``, priors counted from the training labels when fit
            starts, so the plain logits learn the balanced posterior; inference is unchanged. ``None``: off.
        pos_weight: multi-label ``"bce"``: weight of each label's positive term, ``"balanced"`` (negatives /
            positives of the training labels, counted by the data module when fit starts) or one number per label.
        optimizer: ``"sgd"``, ``"adam"``, ``"adamw"`` (or any timm optimizer name), or a callable taking parameter
            groups, as LightningCLI injects. Norm and bias parameters never get weight decay.
        lr: base learning rate (the head's, with ``layer_decay``).
        weight_decay: weight decay of weight matrices and convolution kernels.
        momentum: SGD momentum.
        nesterov: Nesterov momentum for SGD.
        layer_decay: layer-wise LR decay factor in (0, 1]; ``None`` disables it.
        scheduler: ``"cosine"``, ``"onecycle"``, ``"step"`` or ``"constant"``, stepped every optimizer step.
        warmup_epochs: linear warmup length in epochs (may be fractional); or give ``warmup_steps``.
        warmup_steps: linear warmup length in optimizer steps.
        warmup_start_factor: warmup starts at this fraction of each group's learning rate.
        eta_min: the cosine schedule's final learning rate (scaled like the groups under ``layer_decay``).
        step_size: epochs between LR drops for ``scheduler="step"``.
        gamma: LR multiplier at each drop for ``scheduler="step"``.
        top_k: also report top-k accuracy (k is capped at ``num_classes - 1``; 1 disables it).
        calibration_bins: bins of the expected calibration error.
        log_confusion_matrix: log the validation and test confusion matrix as an image to every logger (a PNG file
            under the run directory for a CSV logger or none; see :func:`lightning_cv.reporting.log_image`).
        channels_last: keep weights and inputs in channels-last memory format: faster convolutions under AMP on
            GPUs with tensor cores (the usual speed-up for CNNs is 10-30%); no effect on results.
        compile: compile the backbone with ``torch.compile`` when the Trainer sets the model up; ``True`` uses the
            defaults, a dict is passed as keyword arguments (``{"mode": "max-autotune"}``). Weights and checkpoints
            are unchanged (the module is compiled in place), so exports and reloading work as usual.

    Example:
        >>> model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_layers=2)
        >>> [g.name for g in model.layer_groups][:2], model.num_frozen_groups
        (['conv1, bn1', 'layer1'], 2)
    """

    def __init__(
        self,
        *,
        num_classes: int | None = None,
        backbone: str = "resnet50",
        pretrained: bool | str = True,
        backbone_kwargs: dict[str, Any] | None = None,
        drop_rate: float = 0.0,
        class_names: list[str] | None = None,
        task: Literal["multiclass", "multilabel"] = "multiclass",
        thresholds: float | list[float] | None = None,
        freeze_backbone: bool | Literal["auto"] = False,
        freeze_layers: int = 0,
        unfreeze_milestones: list[int] | None = None,
        label_smoothing: float = 0.0,
        loss: Literal["auto", "cross_entropy", "focal", "bce", "asl"] = "auto",
        loss_kwargs: dict[str, float] | None = None,
        pos_weight: Literal["balanced"] | list[float] | None = None,
        class_weights: Literal["balanced"] | list[float] | None = None,
        logit_adjustment: float | None = None,
        optimizer: str | OptimizerCallable = "adamw",
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        momentum: float = 0.9,
        nesterov: bool = False,
        layer_decay: float | None = None,
        scheduler: str = "cosine",
        warmup_epochs: float = 0.0,
        warmup_steps: int = 0,
        warmup_start_factor: float = 0.01,
        eta_min: float = 0.0,
        step_size: int = 30,
        gamma: float = 0.1,
        top_k: int = 5,
        calibration_bins: int = 15,
        log_confusion_matrix: bool = True,
        channels_last: bool = False,
        compile: bool | dict[str, Any] = False,
    ) -> None:
        super().__init__()
        if isinstance(pretrained, os.PathLike):
            pretrained = os.fspath(pretrained)  # hyperparameters must load with weights_only=True: no Path objects
        class_names = list(class_names) if class_names is not None else None
        validate_arguments(locals())
        self.save_hyperparameters(ignore=["optimizer"] if callable(optimizer) else None)
        if callable(optimizer):
            rank_zero_info("A callable optimizer is not saved in the checkpoint's hyperparameters.")

        self._optimizer_spec = optimizer
        assert num_classes is not None  # checked above; narrows the type
        # a model folder (local, or hf-hub:org/name) is read once: its weights, and the label names its head has
        folder = read_model_folder(pretrained) if is_model_folder_source(pretrained) else None
        self.model = create_backbone(
            backbone,
            num_classes=num_classes,
            pretrained=folder or pretrained,
            drop_rate=drop_rate,
            backbone_kwargs=backbone_kwargs,
        )
        if folder is not None:
            self.hparams["class_names"] = match_head_to_classes(self.model, folder, class_names)
        #: the backbone's pretrained input size, mean, std, interpolation and crop (``data_config.input_size`` ...)
        self.data_config: DataConfig = resolve_data_config(self.model, backbone_kwargs)
        self.example_input_array = torch.zeros(1, *self.data_config.input_size)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

        self._groups: list[LayerGroup] = layer_groups(self.model)
        if freeze_layers > len(self._groups):
            raise ValueError(
                f"`freeze_layers={freeze_layers}` is more than the {len(self._groups)} layer groups of {backbone!r} "
                f"({', '.join(g.name for g in self._groups)}). Use at most {len(self._groups)}, or "
                "`freeze_backbone=True` to freeze them all."
            )
        self._initial_frozen: int | None = None  # None until "auto" is resolved at fit start
        if freeze_backbone is True:
            self._initial_frozen = len(self._groups)
        elif freeze_backbone is False:
            self._initial_frozen = freeze_layers
        self._num_frozen = 0
        self.set_frozen_groups(self._initial_frozen or 0)
        self._resume = TrainingState()  # RNG streams and accumulated gradients, for exact resume

        self._multilabel = task == MULTILABEL
        #: multi-label: the weight of each label's positive term in the loss (``pos_weight``), set at fit start
        self.pos_weight: Tensor | None = torch.tensor(pos_weight) if isinstance(pos_weight, list) else None
        #: multi-class: the weight of each class in the loss (``class_weights``), set at fit start for "balanced"
        self.class_weights: Tensor | None = torch.tensor(class_weights) if isinstance(class_weights, list) else None
        #: multi-class ``logit_adjustment``: the log class priors of the training labels, set at fit start
        self.log_prior: Tensor | None = None
        #: the per-class rows of the last validation or test (support, precision, recall, F1 and the class most
        #: confused with; multi-label: support, AP, F1, precision, recall, threshold), written as
        #: ``per_class_test.csv``/``.md`` into the run directory after testing (``per_class_val`` when fit ends)
        self.per_class: list[dict[str, Any]] | None = None
        self._val_per_class: list[dict[str, Any]] | None = None
        if self._multilabel:
            self.decision = DecisionThresholds(num_classes, check_thresholds(thresholds, num_classes))
            self.val_metrics: Any = MultilabelMetrics(num_classes, prefix="val_")
            self.test_metrics: Any = MultilabelMetrics(num_classes, prefix="test_")
        else:
            self.val_metrics = build_metrics(
                num_classes, top_k=top_k, calibration_bins=calibration_bins, prefix="val_"
            )
            self.test_metrics = self.val_metrics.clone(prefix="test_")
            from torchmetrics.classification import MulticlassConfusionMatrix

            self.val_confmat = MulticlassConfusionMatrix(num_classes)
            self.test_confmat = MulticlassConfusionMatrix(num_classes)
            #: the temperature and reject threshold (``lightning-cv calibrate``), saved with the weights
            self.calibration = Calibration()
        self._tta = "none"
        #: multi-class test: each image's confidence and whether it was right, for the risk-coverage report
        self._answers: list[Tensor] = []
        #: the risk-coverage rows of the last test (accuracy when answering the 100/95/90/80% most confident)
        self.risk_coverage: list[dict[str, Any]] | None = None
        #: the last confusion matrix computed at validation or test end (rows: true class), on the CPU
        self.confusion_matrix: Tensor | None = None

    # ------------------------------------------------------------------ the task
    @property
    def monitor(self) -> str:
        """The validation metric that ranks checkpoints: ``val_acc``, or ``val_map`` for a multi-label model."""
        return "val_map" if self._multilabel else "val_acc"

    # ------------------------------------------------------------------ freezing
    @property
    def layer_groups(self) -> list[LayerGroup]:
        """The backbone's layer groups from input to output (the head is not one of them)."""
        return list(self._groups)

    @property
    def num_frozen_groups(self) -> int:
        """How many layer groups, counted from the input, are frozen now."""
        return self._num_frozen

    def set_frozen_groups(self, num_frozen: int) -> None:
        """Freeze the first ``num_frozen`` layer groups and unfreeze the rest.

        Every parameter is in the optimizer from the start, so this may be called at any time during training.
        """
        apply_freezing(self.model, self._groups, num_frozen)
        self._num_frozen = num_frozen
        if self.training:
            self.model.train()  # thawed blocks train again (BatchNorm statistics, dropout) ...
            eval_frozen_modules(self.model)  # ... while frozen ones stay in eval mode
        else:
            self.model.eval()

    def num_trainable_parameters(self) -> int:
        """The number of parameters that receive gradients now."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def describe_freezing(self) -> str:
        """A table of the layer groups, their sizes and which are frozen, with the trainable count."""
        rows = []
        for g in self._groups:
            size = sum(self.model.get_parameter(n).numel() for n in g.param_names)
            state = "frozen" if g.index < self._num_frozen else "trainable"
            rows.append(f"  {g.index:>3}  {g.name:<40} {size:>12,}  {state}")
        classifier = self.model.get_classifier()  # type: ignore[operator]
        head = sum(p.numel() for p in classifier.parameters())
        rows.append(f"  {'':>3}  {'head (' + type(classifier).__name__ + ')':<40} {head:>12,}  trainable")
        total = sum(p.numel() for p in self.parameters())
        return (
            f"Layer groups of {self.hparams['backbone']!r} ({self._num_frozen} of {len(self._groups)} frozen):\n"
            + "\n".join(rows)
            + f"\nTrainable parameters: {self.num_trainable_parameters():,} of {total:,}"
        )

    def train(self, mode: bool = True) -> ImageClassifier:
        super().train(mode)
        if mode:
            eval_frozen_modules(self.model)  # frozen BatchNorm keeps its running statistics
        return self

    def _train_set_size(self) -> int:
        loader = self.trainer.train_dataloader
        dataset = getattr(loader, "dataset", None)
        try:
            return len(dataset)  # type: ignore[arg-type]
        except TypeError as err:
            raise ValueError(
                "`freeze_backbone='auto'` needs the training-set size, but the training dataset has no len(). "
                "Choose a policy yourself: `freeze_backbone=True`, `freeze_layers=N` or `freeze_backbone=False`."
            ) from err

    def _apply_freeze_schedule(self) -> None:
        assert self._initial_frozen is not None
        target = frozen_groups_at_epoch(self.current_epoch, self._initial_frozen, self.hparams["unfreeze_milestones"])
        if target == self._num_frozen:
            return
        self.set_frozen_groups(target)
        rank_zero_info(
            f"Epoch {self.current_epoch}: {target} of {len(self._groups)} layer groups frozen, "
            f"{self.num_trainable_parameters():,} trainable parameters."
        )
        rewrap_ddp(self)

    def configure_callbacks(self) -> list[Callback]:
        # frozen blocks are in eval mode on purpose: hide Lightning's warning about it, for this fit only
        return [FrozenEvalModeWarningFilter()]

    def on_fit_start(self) -> None:
        self._val_per_class = None  # a second fit never reports the first one's rows
        if not self._multilabel and (self.temperature != 1.0 or self.min_confidence is not None):
            # fitted for the weights training is about to change: validation must see the model's own scores
            rank_zero_info(
                f"Training resets the temperature ({self.temperature:.4f}) and reject threshold fitted for the "
                "earlier weights; calibrate again afterwards (`lightning-cv calibrate` or `fit --calibrate true`)."
            )
            self.calibration.temperature, self.calibration.min_confidence = 1.0, None
        resolve_loss_weights(self)  # "balanced" weights and logit-adjustment priors from the training labels

    def on_train_start(self) -> None:
        if self._initial_frozen is None:
            self._initial_frozen, reason = auto_frozen_groups(self._train_set_size(), len(self._groups))
            rank_zero_info(f"freeze_backbone='auto': {reason}.")
            self.set_frozen_groups(self._initial_frozen)
            rewrap_ddp(self)
        self._apply_freeze_schedule()
        sync_lr_with_schedule(self.trainer)
        rank_zero_info(self.describe_freezing())
        self._resume.restore(self)

    def on_train_epoch_start(self) -> None:
        if self._initial_frozen is not None:
            self._apply_freeze_schedule()

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint[FREEZING_KEY] = {"initial_frozen": self._initial_frozen, "num_frozen": self._num_frozen}
        self._resume.save(self, checkpoint)
        hparams = checkpoint.get("hyper_parameters")
        if isinstance(hparams, dict) and "pretrained" in hparams:
            # The weights are in the state dict: rebuilding from the checkpoint must not download or read a file.
            hparams["pretrained"] = False

    @classmethod
    def load_from_checkpoint(  # type: ignore[override]
        cls,
        checkpoint_path: str | Path | IO[Any],
        map_location: Any = None,
        hparams_file: str | Path | None = None,
        strict: bool | None = None,
        weights_only: bool | None = None,
        *,
        trust_checkpoint: bool = False,
        **kwargs: Any,
    ) -> ImageClassifier:
        """Rebuild a classifier from a checkpoint alone: architecture, class names and weights (the EMA average
        when the ``EMA`` callback wrote one).

        The checkpoint is read as data: tensors and plain values (``weights_only=True``), and the saved
        hyperparameters go straight to the constructor. Lightning's default would rebuild a model saved by LightningCLI
        through jsonargparse, which builds any class a ``{"class_path": ...}`` in the hyperparameters names, so a
        shared file could run code; here such a file is refused.

        Args:
            checkpoint_path: the ``.ckpt`` file.
            map_location: as in :func:`torch.load`.
            hparams_file: a YAML file of hyperparameters that override the checkpoint's (plain YAML only).
            strict: whether the state dict must match the model's keys exactly.
            weights_only: must stay ``True`` (or ``None``) unless ``trust_checkpoint=True``.
            trust_checkpoint: ``True`` restores Lightning's default loading: pickled objects are unpickled and classes
                named in the hyperparameters are built (a subclass with, say, a ``loss: nn.Module`` argument saved
                by LightningCLI needs this). Only for checkpoints you made yourself or would run as code.
            kwargs: hyperparameters that override the checkpoint's (``lr=...``).
        """
        if trust_checkpoint:
            return super().load_from_checkpoint(  # type: ignore[return-value]
                checkpoint_path, map_location, hparams_file, strict, weights_only, **kwargs
            )
        if weights_only is False:
            raise ValueError(
                "`weights_only=False` unpickles arbitrary objects, which can run code. Leave it out; if you trust the "
                "file as you would trust running its code, pass `trust_checkpoint=True` as well."
            )
        if isinstance(checkpoint_path, (str, os.PathLike)):
            from lightning_cv.models.checkpoint import read_checkpoint

            read_checkpoint(checkpoint_path)  # the clear refusals: no such file, pickles, class specs, stray paths
        if hparams_file:
            kwargs = {**safe_yaml_hparams(hparams_file), **kwargs}  # Lightning would read it with yaml.full_load
        # The weights come from the checkpoint, and how the model runs is the caller's choice: a file must not make
        # it download (`pretrained`) or compile with options that name a command (`compile`).
        kwargs.setdefault("pretrained", False)
        kwargs.setdefault("compile", False)
        # ``_instantiator=None`` overrides the saved rebuild path: the constructor is called with the plain values
        return super().load_from_checkpoint(  # type: ignore[return-value]
            checkpoint_path, map_location, None, strict, True, _instantiator=None, **kwargs
        )

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        from lightning_cv.models.checkpoint import refuse_stray_paths

        refuse_stray_paths(checkpoint)  # before Lightning restores the callbacks (``Trainer.fit(ckpt_path=...)``)
        average = checkpoint.get(EMA_KEY)  # written by lightning_cv.callbacks.EMA
        fitting = self._trainer is not None and self.trainer.state.fn == "fit"
        if isinstance(average, dict) and not fitting:
            # Evaluating, predicting or exporting: use the averaged weights. Resuming a fit keeps the raw ones
            # (the EMA callback restores its average itself).
            checkpoint["state_dict"] = {**checkpoint["state_dict"], **average}
        state = checkpoint.get("state_dict")
        if not self._multilabel and isinstance(state, dict) and "calibration._extra_state" not in state:
            # written before calibration existed (or by a plain Trainer without it): uncalibrated
            checkpoint["state_dict"] = {**state, "calibration._extra_state": Calibration().get_extra_state()}
        given = self.hparams.get("thresholds")
        if self._multilabel and given is not None and isinstance(checkpoint.get("state_dict"), dict):
            # thresholds given to the constructor (or `--model.thresholds`) win over the tuned ones in the file
            checkpoint["state_dict"]["decision._extra_state"] = self.decision.get_extra_state()
        self._resume.load(checkpoint, fitting)
        state = checkpoint.get(FREEZING_KEY)
        if isinstance(state, dict):
            if state.get("initial_frozen") is not None:
                self._initial_frozen = int(state["initial_frozen"])
            self.set_frozen_groups(int(state.get("num_frozen", self._num_frozen)))

    def setup(self, stage: str) -> None:
        spec = self.hparams.get("compile")
        if spec and not _is_compiled(self.model):
            # in place: parameter names and checkpoints stay those of the plain model
            self.model.compile(**(spec if isinstance(spec, dict) else {}))

    # ------------------------------------------------------------------ steps
    def forward(self, images: Tensor) -> Tensor:
        if self.hparams.get("channels_last") and images.ndim == 4:
            images = images.contiguous(memory_format=torch.channels_last)
        return self.model(images)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        images, target = split_labelled_batch(batch)
        logits = self(images)
        smoothing = self.hparams["label_smoothing"]
        if self._multilabel:
            loss = self._multilabel_loss(logits, target, smoothing)
        else:
            loss = self._multiclass_loss(logits, target, smoothing)
        self.log("train_loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=images.shape[0])
        return loss

    def _multiclass_loss(self, logits: Tensor, target: Tensor, smoothing: float) -> Tensor:
        tau = self.hparams.get("logit_adjustment")
        if tau is not None and self.log_prior is not None:
            logits = logit_adjusted(logits, self.log_prior, tau)
        if self.hparams.get("loss") == "focal":
            gamma = {**FOCAL_DEFAULTS, **(self.hparams.get("loss_kwargs") or {})}["gamma"]
            return focal_loss(logits, target, gamma, smoothing, self.class_weights)
        return soft_target_cross_entropy(logits, target, smoothing, self.class_weights)  # indices or probabilities

    def _multilabel_loss(self, logits: Tensor, target: Tensor, smoothing: float) -> Tensor:
        if self.hparams.get("loss") == "asl":
            settings = {**ASL_DEFAULTS, **(self.hparams.get("loss_kwargs") or {})}
            return asymmetric_loss(logits, target, smoothing, **settings)
        return binary_cross_entropy(logits, target, smoothing, self.pos_weight)

    def _evaluate(self, batch: Any, stage: str) -> dict[str, Tensor]:
        if self._multilabel:
            return self._evaluate_multilabel(batch, stage)
        images, target = split_labelled_batch(batch)
        target = hard_labels(target)
        logits = self.decision_logits(images)
        loss = F.cross_entropy(logits, target)  # the NLL of the calibrated (and TTA-averaged) probabilities
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        confmat = self.val_confmat if stage == "val" else self.test_confmat
        probs = logits.float().softmax(dim=1)
        metrics.update(probs, target)
        confmat.update(probs, target)
        if stage == "test":
            confidence, predicted = probs.max(dim=1)
            self._answers.append(torch.stack([confidence, (predicted == target).float()]).detach())
        n = images.shape[0]
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True, batch_size=n)
        return {"probs": probs}  # for callbacks such as PredictionGallery

    def _evaluate_multilabel(self, batch: Any, stage: str) -> dict[str, Tensor]:
        images, target = split_labelled_batch(batch)
        logits = self.decision_logits(images)
        loss = binary_cross_entropy(logits, target)
        scores = logits.float().sigmoid()
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(scores, target, self.decision.values)
        n = images.shape[0]
        self.log(f"{stage}_loss", loss, on_epoch=True, prog_bar=stage == "val", sync_dist=True, batch_size=n)
        return {"probs": scores}

    def validation_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> dict[str, Tensor]:
        return self._evaluate(batch, "test")

    def predict_step(self, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> dict[str, Any]:
        """Predicted class indices, class probabilities and (when known) predicted class names.

        Multi-class: ``probs`` are the calibrated probabilities (the :attr:`temperature`, averaged over the
        :attr:`tta` views), ``confidence`` the highest of each row, ``preds`` its class, or -1 (``class_names``:
        ``"unknown"``) where the confidence is below :attr:`min_confidence`.
        Multi-label: ``probs`` are the sigmoid scores ``(N, C)``, ``preds`` the decisions (boolean ``(N, C)``, the
        labels whose score reaches its threshold), ``thresholds`` ``(C,)`` and, with class names, ``labels``: the
        predicted names of each image.
        """
        images, _ = split_batch(batch)  # a second tensor there is the data module's file index, not a label
        if self._multilabel:
            scores = self.decision_logits(images).sigmoid()
            thresholds = self.decision.values.to(scores.device)
            decisions = predicted_sets(scores, thresholds)
            result: dict[str, Any] = {"probs": scores, "preds": decisions, "thresholds": thresholds}
            names = self.hparams.get("class_names")
            if names:
                result["labels"] = [[names[i] for i in row.nonzero().flatten().tolist()] for row in decisions]
            return result
        probs = self.decision_logits(images).softmax(dim=1)
        conf, preds = probs.max(dim=1)
        if self.min_confidence is not None:
            preds = preds.masked_fill(conf < self.min_confidence, -1)  # "unknown": not sure enough to answer
        out: dict[str, Any] = {"preds": preds, "probs": probs, "confidence": conf}
        names = self.hparams.get("class_names")
        if names:
            out["class_names"] = [names[i] if i >= 0 else UNKNOWN for i in preds.tolist()]
        return out

    def _end_of_eval(self, stage: str) -> None:
        if self._multilabel:
            self._end_of_multilabel_eval(stage)
            return
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        confmat = self.val_confmat if stage == "val" else self.test_confmat
        if confmat.update_count == 0:
            return
        # compute() syncs the states across processes once; logging the Metric objects themselves would bypass
        # the collection's shared compute groups and report stale values for grouped metrics
        values = {k: v.float() for k, v in metrics.compute().items()}
        # already equal on every rank; sync_dist=True only tells Lightning so (averaging equal values changes nothing)
        self.log(f"{stage}_acc", values.pop(f"{stage}_acc"), prog_bar=True, sync_dist=True)
        self.log_dict(values, sync_dist=True)
        metrics.reset()
        self.confusion_matrix = confmat.compute().cpu()
        confmat.reset()
        self._report_rows(stage, per_class_rows(self.confusion_matrix, self.hparams.get("class_names")))
        if stage == "test":
            self._report_risk_coverage()
        if self.trainer.sanity_checking or not self.hparams["log_confusion_matrix"]:
            return
        if self.trainer.is_global_zero:  # every logger, each through its image API (PNG files for CSV or none)
            picture = confusion_matrix_image(self.confusion_matrix, self.hparams.get("class_names"))
            log_image(self.trainer, f"{stage}_confusion_matrix", picture, step=self.global_step)

    def _end_of_multilabel_eval(self, stage: str) -> None:
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        if metrics.update_count == 0:
            return
        # tuned on validation only: F1 at thresholds tuned on the very images scored would flatter a test; on
        # validation it is the F1 of the thresholds the checkpoint saved now carries
        values = metrics.compute_all(tune=stage == "val")
        scalars = {name: value for name, value in values.items() if value.ndim == 0}
        # equal on every rank already (torchmetrics synced them); sync_dist=True only tells Lightning so
        self.log(f"{stage}_map", scalars.pop(f"{stage}_map"), prog_bar=True, sync_dist=True)
        self.log_dict(scalars, sync_dist=True)
        self._report_rows(stage, metrics.per_label(values, self.decision.values, self.hparams.get("class_names")))
        fitting = self.trainer.state.fn == "fit"
        if stage == "val" and fitting and not self.trainer.sanity_checking and self.hparams["thresholds"] is None:
            # tuned on this validation, for the weights just evaluated: the checkpoint saved now carries them
            self.decision.values = values[f"{stage}_tuned_thresholds"].cpu()
        metrics.reset()

    def _report_rows(self, stage: str, rows: list[dict[str, Any]]) -> None:
        """Keep ``stage``'s per-class rows; a test reports them now, the last validation of fit when fit ends."""
        self.per_class = rows
        if stage == "val" and not self.trainer.sanity_checking:
            self._val_per_class = rows  # reported once, when fit ends: every epoch would flood the console
        if stage == "test":  # on every rank: report_per_class asks trainer.log_dir, a collective under DDP
            report_per_class(self.trainer, stage, rows, title=self._table_title(stage))

    def _report_risk_coverage(self) -> None:
        """The test's accuracy when answering only the most confident 100/95/90/80% (all ranks' images)."""
        from lightning_cv.models.calibration import risk_coverage

        answers = torch.cat(self._answers, dim=1) if self._answers else torch.zeros(2, 0, device=self.device)
        self._answers = []
        if self.trainer.world_size > 1:  # collectives: every rank takes part
            # ranks may hold different counts (a rank's unreadable images are dropped): pad to the largest with nan
            sizes: Any = self.all_gather(torch.tensor([answers.shape[1]], device=answers.device))
            padded = answers.new_full((2, int(sizes.max())), float("nan"))
            padded[:, : answers.shape[1]] = answers
            gathered: Any = self.all_gather(padded)  # (world, 2, most)
            answers = gathered.transpose(0, 1).reshape(2, -1)
            answers = answers[:, ~answers[0].isnan()]
        if answers.shape[1] == 0:
            return
        self.risk_coverage = risk_coverage(answers[0], answers[1].bool())
        title = "Risk-coverage on the test split (accuracy on the images answered at each reject threshold)"
        report_per_class(self.trainer, "test", self.risk_coverage, name="risk_coverage_test", title=title)

    def _table_title(self, stage: str) -> str:
        split = "test" if stage == "test" else "validation"
        at = " at the thresholds shown" if self._multilabel else ""
        return f"Per-class results on the {split} split (F1, precision and recall{at})"

    def on_fit_end(self) -> None:
        if self._val_per_class is not None:  # every rank calls this hook; report_per_class needs that
            report_per_class(self.trainer, "val", self._val_per_class, title=self._table_title("val"))

    def on_validation_epoch_end(self) -> None:
        self._end_of_eval("val")

    def on_test_epoch_start(self) -> None:
        self._answers = []

    def on_test_epoch_end(self) -> None:
        self._end_of_eval("test")

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> Any:
        hp = self.hparams
        groups = build_param_groups(self.model, hp["weight_decay"], hp["layer_decay"])
        optimizer = build_optimizer(
            self._optimizer_spec, groups, lr=hp["lr"], momentum=hp["momentum"], nesterov=hp["nesterov"]
        )
        total = self.trainer.estimated_stepping_batches
        batches = self.trainer.num_training_batches
        if math.isfinite(batches):
            per_epoch = max(1, math.ceil(int(batches) / self.trainer.accumulate_grad_batches))
        else:  # an iterable dataset without a length: epochs have no known size, so count steps
            if hp["warmup_epochs"] or hp["scheduler"] == "step":
                raise ValueError(
                    "The training data has no length, so epochs cannot be converted to steps: give the warmup as "
                    "`warmup_steps` and use a scheduler other than 'step'."
                )
            per_epoch = 1
        warmup = hp["warmup_steps"] or round(hp["warmup_epochs"] * per_epoch)
        scheduler = build_scheduler(
            optimizer,
            hp["scheduler"],
            total_steps=total,
            steps_per_epoch=per_epoch,
            warmup_steps=warmup,
            warmup_start_factor=hp["warmup_start_factor"],
            min_ratio=hp["eta_min"] / hp["lr"],
            step_size=hp["step_size"],
            gamma=hp["gamma"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"}}


def _is_compiled(module: nn.Module) -> bool:
    return getattr(module, "_compiled_call_impl", None) is not None
