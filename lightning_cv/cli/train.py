"""``lightning-cv fit|validate|test|predict``: LightningCLI over ImageClassifier and ImageDataModule.

This module wires classes together and holds no training logic: the number of classes and the class names flow from
the data to the model, the input size, mean, std and crop from the model (or its checkpoint) to the data, and
``--ckpt_path best`` / ``last`` find the newest run's checkpoint.
"""

from __future__ import annotations

import sys
import time
import warnings
from pathlib import Path
from typing import Any, Literal

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI
from lightning.pytorch.utilities import rank_zero_info

from lightning_cv.callbacks.gallery import PredictionGallery
from lightning_cv.callbacks.prediction_writer import PredictionWriter
from lightning_cv.cli.checkpoint_settings import apply_checkpoint_settings
from lightning_cv.cli.decision_options import DecisionOptions
from lightning_cv.cli.parsing import ShortErrorParser, secure_parsing
from lightning_cv.cli.runs import (
    RunConfigSaver,
    checkpoint_root,
    continue_run_version,
    remove_run_without_results,
    runs_under_root_dir,
)
from lightning_cv.data.batch import MULTILABEL
from lightning_cv.data.config import OVERRIDE_KEYS
from lightning_cv.data.datamodule import ImageDataModule
from lightning_cv.models.checkpoint import RUNS_DIR, find_checkpoint, read_checkpoint
from lightning_cv.models.classifier import ImageClassifier
from lightning_cv.resume.background_io import BackgroundCheckpointIO
from lightning_cv.resume.checkpointing import PeriodicCheckpoint, PreemptionCheckpoint, ResumableCheckpoint

__all__ = ["TRAINER_DEFAULTS", "LightningCVCLI"]

TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": RUNS_DIR, "name": "lightning_cv", "default_hp_metric": False},
    },
}


class LightningCVCLI(LightningCLI):
    """``lightning-cv fit|validate|test|predict``: LightningCLI with the defaults a practitioner adds by hand.

    TensorBoard logging under ``runs/``, checkpoints of the best (by ``val_acc``, or ``val_map`` for a multi-label
    model) and the last epoch, an LR monitor,
    a gallery of the worst validation predictions (``--gallery_images``),
    optional early stopping (``--early_stopping_patience``), the LR range test and batch-size finder
    (``--tune.lr_find``, ``--tune.batch_size``) and a CSV prediction writer.
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        secure_parsing()
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_kwargs", {"default_env": False, "prog": "lightning-cv"})
        kwargs.setdefault("parser_class", ShortErrorParser)
        # no `_instantiator` in saved hyperparameters: a checkpoint is rebuilt from plain values, never by jsonargparse
        kwargs.setdefault("load_from_checkpoint_support", False)
        argv = sys.argv[1:] if args is None else args
        first = argv[0] if isinstance(argv, (list, tuple)) and argv else None
        #: the one subcommand whose parser is built (each takes ~0.1 s), or None for all of them (``--help``)
        self._requested = first if first in LightningCLI.subcommands() else None
        started = time.time()
        try:
            super().__init__(ImageClassifier, ImageDataModule, args=args, run=run, **kwargs)
        except BaseException:
            trainer = getattr(self, "trainer", None)
            if trainer is not None:
                remove_run_without_results(trainer, since=started)
            raise

    def subcommands(self) -> dict[str, set[str]]:  # type: ignore[override]
        """Lightning's subcommands; only the one asked for when the command line starts with it (a faster start)."""
        every = LightningCLI.subcommands()
        requested = getattr(self, "_requested", None)
        return {requested: every[requested]} if requested in every else every

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ResumableCheckpoint, "checkpoint")
        parser.set_defaults(
            {
                "checkpoint.monitor": "val_acc",
                "checkpoint.mode": "max",
                "checkpoint.save_last": True,
                "checkpoint.filename": "best-{epoch:03d}-{val_acc:.4f}",
            }
        )
        parser.add_lightning_class_args(PredictionWriter, "prediction")
        parser.add_argument(
            "--early_stopping_patience",
            type=int | None,
            default=None,
            help="Stop when the checkpoint's metric (val_acc, or val_map for multi-label) has not improved for this "
            "many validation rounds (default: off).",
        )
        parser.add_argument(
            "--gallery_images",
            type=int,
            default=16,
            help="Validation images shown each epoch, worst mistakes first (0: no gallery).",
        )
        parser.add_argument(
            "--checkpoint_every_n_steps",
            type=int | None,
            default=None,
            help="Also save step-<N>.ckpt every this many optimizer steps (long epochs, preemptible machines).",
        )
        parser.add_argument(
            "--checkpoint_every_minutes",
            type=float | None,
            default=None,
            help="Also save step-<N>.ckpt every this many minutes of training.",
        )
        parser.add_argument("--checkpoint_keep", type=int, default=2, help="How many periodic checkpoints to keep.")
        parser.add_argument(
            "--checkpoint_async",
            type=bool,
            default=True,
            help="Write checkpoints in a background thread while training goes on (atomically, as always).",
        )
        parser.add_argument(
            "--new_version",
            type=bool,
            default=False,
            help="With --ckpt_path, log into a new version_N folder instead of continuing the checkpoint's own run.",
        )
        parser.add_argument(
            "--tta",
            type=Literal["none", "flip", "flip_crops"] | None,
            default=None,
            help="Test-time augmentation of validate, test and predict (not of fit's validation): flip, or "
            "flip_crops (flip plus four corner crops); the views' probabilities are averaged.",
        )
        parser.add_argument(
            "--predict.min_confidence",
            type=float | None,
            default=None,
            help="predict: answer 'unknown' when the (calibrated) top probability is below this (default: the "
            "checkpoint's, set by `lightning-cv calibrate`).",
        )
        parser.add_argument(
            "--predict.coverage",
            type=float | None,
            default=None,
            help="predict: instead, the reject threshold that answers this share of the validation images (0.95).",
        )
        parser.add_argument(
            "--calibrate",
            type=bool,
            default=False,
            help="fit: afterwards, fit the best checkpoint's temperature on the validation split and write "
            "<best>.calibrated.ckpt (as `lightning-cv calibrate` does).",
        )
        parser.add_argument("--tune.lr_find", type=bool, default=False, help="Run the LR range test before fit.")
        parser.add_argument("--tune.lr_find_steps", type=int, default=100, help="Steps of the LR range test.")
        parser.add_argument("--tune.batch_size", type=bool, default=False, help="Find the largest batch size first.")

    # ------------------------------------------------------------------ parsing
    def _sub(self) -> Any:
        return self.config[self.config.subcommand] if self.config.get("subcommand") else self.config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        super().parse_arguments(parser, args)
        sub = self.config.get("subcommand")
        if sub is None:
            return
        cfg = self.config[sub]
        given: Any = None

        def user_given() -> Any:
            """What the user set (command line and configs), without defaults; parsed once, when needed."""
            nonlocal given
            if given is None:
                parsed = parser.parse_object(args, defaults=False) if isinstance(args, dict) else None
                given = parsed if parsed is not None else parser.parse_args(args, defaults=False)
                given = given.get(sub) if given.get(sub) is not None else given
            return given

        if cfg.trainer.get("default_root_dir"):
            runs_under_root_dir(cfg, user_given())
        ckpt = cfg.get("ckpt_path")
        if ckpt == "last" and sub == "fit":
            # a requeued job runs the same command every time: the first start has nothing to resume yet
            try:
                cfg.ckpt_path = ckpt = find_checkpoint(ckpt, checkpoint_root(cfg))
                rank_zero_info(f"--ckpt_path resolved to {ckpt}")
            except FileNotFoundError:
                cfg.ckpt_path = ckpt = None
                rank_zero_info("--ckpt_path last: no checkpoint yet, training starts from the beginning.")
        elif ckpt in ("best", "last"):
            cfg.ckpt_path = ckpt = find_checkpoint(ckpt, checkpoint_root(cfg))
            rank_zero_info(f"--ckpt_path resolved to {ckpt}")
        if ckpt:
            checkpoint = read_checkpoint(ckpt)
            given_model = user_given().get("model")
            apply_checkpoint_settings(
                cfg.model, checkpoint, given_model.as_dict() if given_model is not None else {}, sub
            )
            self._data_from_checkpoint = dict(checkpoint.get("datamodule_hyper_parameters") or {})
            if sub == "fit" and not cfg.get("new_version"):
                version = continue_run_version(cfg, ckpt, int(checkpoint.get("global_step") or 0))
                if version is not None:
                    # the folder holds the run's own checkpoints: that is the point, not a mistake to warn about
                    warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
                    rank_zero_info(
                        f"Resuming in the checkpoint's run folder (version_{version}); --new_version true "
                        "starts a new one."
                    )
        elif sub in ("validate", "test", "predict"):
            raise ValueError(
                f"`lightning-cv {sub}` needs a trained model: pass `--ckpt_path` with a checkpoint from "
                "`lightning-cv fit` (or `--ckpt_path best` for the newest run's best one)."
            )
        if cfg.model.get("task") == MULTILABEL and cfg.get("checkpoint") is not None:
            # a multi-label model logs no accuracy: rank checkpoints by mAP unless the user chose a metric
            chosen = user_given().get("checkpoint")
            chosen = chosen.as_dict() if chosen is not None else {}
            if chosen.get("monitor") is None:
                cfg.checkpoint.monitor = "val_map"
                if chosen.get("filename") is None:
                    cfg.checkpoint.filename = "best-{epoch:03d}-{val_map:.4f}"

    def _parse_ckpt_path(self) -> None:
        """Replaces LightningCLI's merge of the checkpoint's hyperparameters into the config (done in parse_arguments).

        LightningCLI parses them through jsonargparse, which builds any class a ``class_path`` in them names (code
        from the file runs), and lets them silently override what the user typed. :func:`apply_checkpoint_settings`
        takes them as plain values and refuses options that contradict the checkpoint.
        """

    def before_instantiate_classes(self) -> None:
        cfg = self._sub()
        data_hp = getattr(self, "_data_from_checkpoint", None)
        if data_hp is not None:
            # evaluation and prediction see images the way training did: same size, statistics and crop
            for key in OVERRIDE_KEYS:
                if cfg.data.get(key) is None and data_hp.get(key) is not None:
                    cfg.data[key] = data_hp[key]
        self._data_probe: ImageDataModule | None = None
        if cfg.model.get("num_classes") is None:
            # the classes come from the data: list it now, and keep the instance (see instantiate_classes)
            self._data_probe = data = ImageDataModule(**cfg.data.as_dict())
            cfg.model.num_classes = data.num_classes
            if cfg.model.get("class_names") is None:
                cfg.model.class_names = data.class_names

    def instantiate_classes(self) -> None:
        super().instantiate_classes()
        if self._data_probe is not None:
            # Built from the same settings, and it has listed the files already: a second listing of a large image
            # tree would cost as much again. (jsonargparse built its own instance too; its __init__ reads nothing.)
            self.datamodule = self._data_probe

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        cfg = self._sub()
        callbacks: list[Any] = trainer.callbacks  # type: ignore[attr-defined]
        if trainer.loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        predict = cfg.get("predict") or {}
        decided = (cfg.get("tta"), predict.get("min_confidence"), predict.get("coverage"))
        if any(value is not None for value in decided):
            callbacks.append(DecisionOptions(cfg.get("tta"), predict.get("min_confidence"), predict.get("coverage")))
        if cfg.get("gallery_images"):
            callbacks.append(PredictionGallery(num_images=cfg.gallery_images))
        if cfg.get("early_stopping_patience") is not None:
            chosen = cfg.get("checkpoint") or {}
            monitor, mode = chosen.get("monitor") or "val_acc", chosen.get("mode") or "max"
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode, patience=cfg.early_stopping_patience))
        if self.subcommand == "fit":
            strategy = trainer.strategy
            if cfg.get("checkpoint_async") and type(strategy.checkpoint_io) is TorchCheckpointIO:
                # a plugin the user configured (or a strategy with its own, FSDP's) is left alone
                strategy.checkpoint_io = BackgroundCheckpointIO(strategy.checkpoint_io)
            every_n, minutes = cfg.get("checkpoint_every_n_steps"), cfg.get("checkpoint_every_minutes")
            if every_n is not None or minutes is not None:
                dirpath = cfg.checkpoint.get("dirpath") if cfg.get("checkpoint") is not None else None
                callbacks.append(
                    PeriodicCheckpoint(
                        every_n_steps=every_n, every_minutes=minutes, keep=cfg.checkpoint_keep, dirpath=dirpath
                    )
                )
            callbacks.append(
                PreemptionCheckpoint(dirpath=cfg.checkpoint.get("dirpath") if cfg.get("checkpoint") else None)
            )
        return trainer

    # ------------------------------------------------------------------ subcommands
    def before_fit(self) -> None:
        cfg = self._sub()
        if cfg.tune.batch_size or cfg.tune.lr_find:
            from lightning.pytorch.tuner import Tuner

            tuner = Tuner(self.trainer)
            if cfg.tune.batch_size:
                tuner.scale_batch_size(self.model, datamodule=self.datamodule, mode="power")
                rank_zero_info(f"Batch size finder chose {self.datamodule.hparams['batch_size']}.")
            if cfg.tune.lr_find:
                steps = cfg.tune.lr_find_steps
                result = tuner.lr_find(self.model, datamodule=self.datamodule, num_training=steps)
                directory = Path(self.trainer.log_dir or RUNS_DIR)  # a collective: asked on every rank
                if result is not None and self.trainer.is_global_zero:
                    directory.mkdir(parents=True, exist_ok=True)
                    figure: Any = result.plot(suggest=True, show=False)
                    figure.savefig(directory / "lr_find.png")
                    suggestion = result.suggestion()
                    if suggestion is None:
                        print(
                            f"LR range test: no clear suggestion from {len(result.results['lr'])} steps; "
                            f"keeping lr={self.model.hparams['lr']}. Plot: {directory / 'lr_find.png'}"
                        )
                    else:
                        print(f"LR range test suggests lr={suggestion:.3g} (used). Plot: {directory / 'lr_find.png'}")

    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        lines = [f"Run directory: {self.trainer.log_dir}"]
        if isinstance(checkpoint, ModelCheckpoint) and checkpoint.best_model_path:
            score = checkpoint.best_model_score
            lines.append(
                f"Best checkpoint: {checkpoint.best_model_path}"
                + (f" ({checkpoint.monitor}={float(score):.4f})" if score is not None else "")
            )
        if self.trainer.loggers:
            lines.append(f"TensorBoard: tensorboard --logdir {self.trainer.loggers[0].save_dir}")
        if self.trainer.is_global_zero:
            print("\n".join(lines))
        if self._sub().get("calibrate") and self.trainer.is_global_zero:
            self._calibrate_best(checkpoint)

    def _calibrate_best(self, checkpoint: Any) -> None:
        """``--calibrate``: the best checkpoint's temperature, fitted on the validation split, in a new file."""
        from lightning_cv.cli.calibrate import calibrate

        best = checkpoint.best_model_path if isinstance(checkpoint, ModelCheckpoint) else ""
        if not best:
            print("--calibrate: no best checkpoint was saved (no validation ran), so there is nothing to calibrate.")
            return
        calibrate(best, overwrite=True)  # <best>.calibrated.ckpt belongs to this run: a rerun replaces it

    def before_predict(self) -> None:
        cfg = self._sub()
        if cfg.get("return_predictions") is None:
            # results stream to the prediction writer's files; keeping them all in memory helps nobody
            self.config_init[self.subcommand]["return_predictions"] = False
