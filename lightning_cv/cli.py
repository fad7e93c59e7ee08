"""The ``lightning-cv`` command line: LightningCLI over ImageClassifier and ImageDataModule.

This module wires classes together and holds no training logic: the number of classes and the class names flow from
the data to the model, the input size, mean, std and crop from the model (or its checkpoint) to the data, and
``--ckpt_path best`` / ``last`` find the newest run's checkpoint.
"""

from __future__ import annotations

import os
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.utilities import rank_zero_info
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_cv.callbacks.checkpointing import PREEMPTED_EXIT_CODE, PeriodicCheckpoint, PreemptionCheckpoint
from lightning_cv.callbacks.gallery import PredictionGallery
from lightning_cv.callbacks.prediction_writer import PredictionWriter
from lightning_cv.data.datamodule import DEFAULT_DATA_CONFIG, ImageDataModule
from lightning_cv.deploy.onnx import ExportError
from lightning_cv.models.classifier import ImageClassifier

__all__ = ["LightningCVCLI", "main"]

RUNS_DIR = "runs"
#: subcommands outside LightningCLI's fit/validate/test/predict (see lightning_cv.deploy.commands)
DEPLOY_COMMANDS = ("export", "benchmark", "explain")
TRAINER_DEFAULTS: dict[str, Any] = {
    "logger": {
        "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
        "init_args": {"save_dir": RUNS_DIR, "name": "lightning_cv", "default_hp_metric": False},
    },
}
#: modules a config may not name in a class path or callable (jsonargparse refuses them); on top of its own list
EXTRA_IMPORT_DENYLIST = ["shutil", "importlib", "pickle", "socket", "ctypes", "code", "pty", "runpy", "sys"]


class ShortErrorParser(LightningArgumentParser):
    """Answers a bad argument with one usage line and the error, not the 130-line usage of every option."""

    def print_usage(self, file: Any = None) -> None:
        prog = self.prog.replace(" [options]", "")
        (file or sys.stderr).write(f"usage: {prog} [options]\n")


class RunConfigSaver(SaveConfigCallback):
    """Save the resolved config, linked values included, in the run's own directory.

    Plain LightningCLI refuses to start a second run whose log directory already holds a ``config.yaml``; each of our
    runs has its own versioned directory, and should one already hold a config the new one is numbered instead.
    """

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir or trainer.default_root_dir
        if trainer.is_global_zero:
            os.makedirs(log_dir, exist_ok=True)
            stem, ext = os.path.splitext(self.config_filename)
            path, n = os.path.join(log_dir, self.config_filename), 1
            while os.path.exists(path):
                path, n = os.path.join(log_dir, f"{stem}-{n}{ext}"), n + 1
            self.parser.save(self.config, path, skip_none=False, overwrite=False, multifile=False)
        self.already_saved = trainer.strategy.broadcast(True)


def _load_checkpoint_meta(path: str) -> dict[str, Any]:
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"Checkpoint '{path}' does not exist. Pass the .ckpt file written by `lightning-cv fit` (look under "
            f"'{RUNS_DIR}/'), or `--ckpt_path best` / `last` for the newest run's."
        )
    try:
        ckpt = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:
        raise ValueError(f"'{path}' is not a readable checkpoint ({type(err).__name__}: {err}).") from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(
            f"'{path}' is not a lightning_cv checkpoint (it has no ImageClassifier hyperparameters). Pass a checkpoint "
            "written by `lightning-cv fit` or by a Trainer fitting an ImageClassifier."
        )
    return ckpt


def find_checkpoint(kind: str, root: str | os.PathLike[str]) -> str:
    """The newest ``best-*.ckpt`` (``kind="best"``), or the newest state of training (``"last"``) below ``root``.

    The newest state is whichever was written last of ``last.ckpt`` (epoch ends), ``step-*.ckpt`` (periodic
    checkpoints) and ``interrupted.ckpt`` (preemption or a crash).
    """
    import zipfile

    patterns = ["best-*.ckpt"] if kind == "best" else ["last*.ckpt", "step-*.ckpt", "interrupted*.ckpt"]
    found = [p for pattern in patterns for p in Path(root).rglob(pattern)] if Path(root).is_dir() else []
    # a node that died mid-write can leave an empty or cut file: take the newest complete one
    found = [p for p in found if zipfile.is_zipfile(p)]
    found.sort(key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"No {kind} checkpoint found under '{root}'. Train first (`lightning-cv fit ...`) or pass the checkpoint "
            "file itself to `--ckpt_path`."
        )
    return str(found[-1])


def _checkpoint_root(cfg: Any) -> str:
    """Where this configuration's ModelCheckpoint writes: its dirpath, the logger's folder, or Lightning's default."""
    checkpoint = cfg.get("checkpoint")
    if checkpoint is not None and checkpoint.get("dirpath"):
        return str(checkpoint.dirpath)
    logger = cfg.trainer.get("logger")
    root_dir = cfg.trainer.get("default_root_dir") or "."
    if logger is False:
        return os.path.join(root_dir, "checkpoints")
    init_args = logger.get("init_args") if hasattr(logger, "get") else None
    if init_args is not None and init_args.get("save_dir"):
        return str(init_args.save_dir)
    return os.path.join(root_dir, "lightning_logs") if logger is True else RUNS_DIR


class LightningCVCLI(LightningCLI):
    """``lightning-cv fit|validate|test|predict``: LightningCLI with the defaults a practitioner adds by hand.

    TensorBoard logging under ``runs/``, checkpoints of the best (by ``val_acc``) and the last epoch, an LR monitor,
    a gallery of the worst validation predictions (``--gallery_images``),
    optional early stopping (``--early_stopping_patience``), the LR range test and batch-size finder
    (``--tune.lr_find``, ``--tune.batch_size``) and a CSV prediction writer.
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        from jsonargparse import set_parsing_settings

        set_parsing_settings(import_path_denylist=EXTRA_IMPORT_DENYLIST)  # enforces jsonargparse's denylist too
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_kwargs", {"default_env": False, "prog": "lightning-cv"})
        kwargs.setdefault("parser_class", ShortErrorParser)
        super().__init__(ImageClassifier, ImageDataModule, args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(ModelCheckpoint, "checkpoint")
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
            help="Stop when val_acc has not improved for this many validation rounds (default: off).",
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
        ckpt = cfg.get("ckpt_path")
        if ckpt == "last" and sub == "fit":
            # a requeued job runs the same command every time: the first start has nothing to resume yet
            try:
                cfg.ckpt_path = ckpt = find_checkpoint(ckpt, _checkpoint_root(cfg))
                rank_zero_info(f"--ckpt_path resolved to {ckpt}")
            except FileNotFoundError:
                cfg.ckpt_path = ckpt = None
                rank_zero_info("--ckpt_path last: no checkpoint yet, training starts from the beginning.")
        elif ckpt in ("best", "last"):
            cfg.ckpt_path = ckpt = find_checkpoint(ckpt, _checkpoint_root(cfg))
            rank_zero_info(f"--ckpt_path resolved to {ckpt}")
        if ckpt:
            _load_checkpoint_meta(ckpt)
        elif sub in ("validate", "test", "predict"):
            raise ValueError(
                f"`lightning-cv {sub}` needs a trained model: pass `--ckpt_path` with a checkpoint from "
                "`lightning-cv fit` (or `--ckpt_path best` for the newest run's best one)."
            )

    def before_instantiate_classes(self) -> None:
        cfg = self._sub()
        ckpt_path = cfg.get("ckpt_path")
        if ckpt_path:
            # evaluation and prediction see images the way training did: same size, statistics and crop
            data_hp = _load_checkpoint_meta(ckpt_path).get("datamodule_hyper_parameters") or {}
            for key in DEFAULT_DATA_CONFIG:
                if cfg.data.get(key) is None and data_hp.get(key) is not None:
                    cfg.data[key] = data_hp[key]
        if cfg.model.get("num_classes") is None:
            data = ImageDataModule(**cfg.data.as_dict())
            cfg.model.num_classes = data.num_classes
            if cfg.model.get("class_names") is None:
                cfg.model.class_names = data.class_names

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = super().instantiate_trainer(**kwargs)
        cfg = self._sub()
        callbacks: list[Any] = trainer.callbacks  # type: ignore[attr-defined]
        if trainer.loggers:
            callbacks.append(LearningRateMonitor(logging_interval="step"))
        if cfg.get("gallery_images"):
            callbacks.append(PredictionGallery(num_images=cfg.gallery_images))
        if cfg.get("early_stopping_patience") is not None:
            callbacks.append(EarlyStopping(monitor="val_acc", mode="max", patience=cfg.early_stopping_patience))
        if self.subcommand == "fit":
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

    def before_predict(self) -> None:
        cfg = self._sub()
        if cfg.get("return_predictions") is None:
            # results stream to the prediction writer's files; keeping them all in memory helps nobody
            self.config_init[self.subcommand]["return_predictions"] = False


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lightning-cv`` and ``python -m lightning_cv``; returns the exit code.

    ``fit``, ``validate``, ``test`` and ``predict`` go to :class:`LightningCVCLI`; ``export``, ``benchmark`` and
    ``explain`` to :func:`lightning_cv.deploy.commands.run_command`.
    """
    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    argv = list(sys.argv[1:] if args is None else args)
    try:
        if argv and argv[0] in DEPLOY_COMMANDS:
            from lightning_cv.deploy.commands import run_command

            return run_command(argv[0], argv[1:])
        LightningCVCLI(args=args)
        _close_process_group()
    except SIGTERMException:
        # PreemptionCheckpoint has saved the run; a non-zero status tells the scheduler to start it again
        print("lightning-cv: stopped by SIGTERM; resume with `--ckpt_path last`.", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (ValueError, FileNotFoundError, ExportError) as err:
        if os.environ.get("LIGHTNING_CV_DEBUG"):
            raise
        print(f"lightning-cv: error: {err}\n(set LIGHTNING_CV_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0


def _close_process_group() -> None:
    """Leave the DDP process group before the interpreter exits (gloo can abort when it is torn down at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _console_main() -> None:
    sys.exit(main())
