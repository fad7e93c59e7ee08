"""The ``lightning-cv`` command line: LightningCLI over ImageClassifier and ImageDataModule.

This module wires classes together and holds no training logic: the number of classes and the class names flow from
the data to the model, the input size, mean, std and crop from the model (or its checkpoint) to the data, and
``--ckpt_path best`` / ``last`` find the newest run's checkpoint.
"""

from __future__ import annotations

import inspect
import os
import re
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from lightning.fabric.utilities.exceptions import MisconfigurationException
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
from lightning_cv.models.checkpoint import RUNS_DIR, find_checkpoint, plain_hparams, read_checkpoint
from lightning_cv.models.classifier import ImageClassifier

__all__ = ["LightningCVCLI", "find_checkpoint", "main"]

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

    def error(self, message: str, ex: Exception | None = None) -> Any:
        return super().error(short_type_error(message), ex)


_EXPECTED = re.compile(r"Expected a (?:<class '([\w.]+)'>|typing\.Literal\[(.*)\])")


def short_type_error(message: str) -> str:
    """jsonargparse's type error (key, subtypes, one line per failed subtype, value type) as one line.

    Example:
        >>> short_type_error('Parser key "trainer.max_epochs":\\n  Expected a <class \\'int\\'>. Got value: ten')
        '`--trainer.max_epochs` expects int, but got ten.'
    """
    reasons = re.findall(r"^ {4}- (.*)$", message, re.MULTILINE)  # one per Union subtype
    if any(not reason.startswith("Expected a ") for reason in reasons):
        return message  # a real reason (a denied import, a bad class path) must not be lost
    key = re.match(r'Parser key "([^"]+)":', message)
    given = re.search(r"(?:Given value|Got value): (.*)$", message, re.MULTILINE)
    expected: list[str] = []
    for match in _EXPECTED.finditer(message):
        name, literal = match.groups()
        text = ("None" if name == "NoneType" else name) if name else f"one of {literal}"
        if text not in expected:
            expected.append(text)
    if key is None or given is None or not expected:
        return message
    return f"`--{key.group(1)}` expects {' or '.join(expected)}, but got {given.group(1).strip()}."


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


#: what a run folder holds before anything has been computed: event files, and the settings written at setup
_SETUP_FILES = re.compile(r"events\.out\.tfevents\..*|hparams\.yaml|config(-\d+)?\.yaml")


def remove_run_without_results(trainer: Trainer, since: float) -> None:
    """After a run failed before training, delete its run folder if it holds nothing but what its setup wrote.

    A refused setting (a class-count mismatch, a bad data file under ``on_bad_file="error"``) is found in the data
    module's ``setup``, after the logger has made the run's folder: left behind, such empty folders bury the real
    runs under ``runs/``. A folder with anything else in it (a checkpoint, predictions, a plot), or with a file
    older than ``since`` (a folder reused from an earlier run), is kept.
    """
    if not trainer.is_global_zero or trainer.global_step > 0:
        return
    for logger in trainer.loggers:
        folder = getattr(logger, "log_dir", None)  # the logger's own property; trainer.log_dir is a collective
        if not folder or not os.path.isdir(folder):
            continue
        files = [Path(top, name) for top, _, names in os.walk(folder) for name in names]
        # a second of slack: some file systems keep modification times in whole seconds
        if all(_SETUP_FILES.fullmatch(f.name) and f.stat().st_mtime >= since - 1.0 for f in files):
            import shutil

            shutil.rmtree(folder, ignore_errors=True)


def _plain(value: Any) -> Any:
    """Values as YAML would write them, so a tuple from one side equals a list from the other."""
    if hasattr(value, "as_dict"):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


class LightningCVCLI(LightningCLI):
    """``lightning-cv fit|validate|test|predict``: LightningCLI with the defaults a practitioner adds by hand.

    TensorBoard logging under ``runs/``, checkpoints of the best (by ``val_acc``) and the last epoch, an LR monitor,
    a gallery of the worst validation predictions (``--gallery_images``),
    optional early stopping (``--early_stopping_patience``), the LR range test and batch-size finder
    (``--tune.lr_find``, ``--tune.batch_size``) and a CSV prediction writer.
    """

    def __init__(self, args: Any = None, run: bool = True, **kwargs: Any) -> None:
        from jsonargparse import set_parsing_settings

        # Options typed Any or dict (backbone_kwargs, dataset_kwargs, compile) are plain data: a class spec in them
        # is not built (jsonargparse builds it by default until its 5.0). The denylist guards typed class options.
        set_parsing_settings(import_path_denylist=EXTRA_IMPORT_DENYLIST, instantiate_subclass_spec_in_any=False)
        kwargs.setdefault("trainer_defaults", TRAINER_DEFAULTS)
        kwargs.setdefault("save_config_callback", RunConfigSaver)
        kwargs.setdefault("parser_kwargs", {"default_env": False, "prog": "lightning-cv"})
        kwargs.setdefault("parser_class", ShortErrorParser)
        # no `_instantiator` in saved hyperparameters: a checkpoint is rebuilt from plain values, never by jsonargparse
        kwargs.setdefault("load_from_checkpoint_support", False)
        started = time.time()
        try:
            super().__init__(ImageClassifier, ImageDataModule, args=args, run=run, **kwargs)
        except BaseException:
            trainer = getattr(self, "trainer", None)
            if trainer is not None:
                remove_run_without_results(trainer, since=started)
            raise

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
            checkpoint = read_checkpoint(ckpt)
            given = parser.parse_object(args, defaults=False) if isinstance(args, dict) else None
            if given is None:
                given = parser.parse_args(args, defaults=False)  # what the user set: command line and configs
            given_model = given[sub].get("model") if given.get(sub) is not None else None
            apply_checkpoint_settings(
                cfg.model, checkpoint, given_model.as_dict() if given_model is not None else {}, sub
            )
            self._data_from_checkpoint = dict(checkpoint.get("datamodule_hyper_parameters") or {})
        elif sub in ("validate", "test", "predict"):
            raise ValueError(
                f"`lightning-cv {sub}` needs a trained model: pass `--ckpt_path` with a checkpoint from "
                "`lightning-cv fit` (or `--ckpt_path best` for the newest run's best one)."
            )

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
        _check_config_files(argv)
        if argv and argv[0] in DEPLOY_COMMANDS:
            from lightning_cv.deploy.commands import run_command

            return run_command(argv[0], argv[1:])
        LightningCVCLI(args=args)
        _close_process_group()
    except SIGTERMException:
        # PreemptionCheckpoint has saved the run; a non-zero status tells the scheduler to start it again
        print("lightning-cv: stopped by SIGTERM; resume with `--ckpt_path last`.", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (ValueError, TypeError, FileNotFoundError, ExportError, MisconfigurationException) as err:
        if os.environ.get("LIGHTNING_CV_DEBUG"):
            raise
        message = str(err).strip() or type(err).__name__
        if isinstance(err, MisconfigurationException):
            message += " (a Trainer setting: check --trainer.accelerator, --trainer.devices and --trainer.strategy)"
        print(f"lightning-cv: error: {message}\n(set LIGHTNING_CV_DEBUG=1 to see the traceback)", file=sys.stderr)
        return 2
    return 0


def _check_config_files(argv: list[str]) -> None:
    """Name the file when a ``--config`` is not valid YAML (jsonargparse reports a position in "<unicode string>")."""
    import yaml

    for i, arg in enumerate(argv):
        path = argv[i + 1] if arg == "--config" and i + 1 < len(argv) else arg.partition("=")[2]
        if not (arg == "--config" or arg.startswith("--config=")) or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8") as stream:
            try:
                yaml.safe_load(stream)
            except yaml.YAMLError as err:
                mark = getattr(err, "problem_mark", None)
                where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
                problem = getattr(err, "problem", None) or str(err).splitlines()[0]
                raise ValueError(f"Config file '{path}' is not valid YAML{where}: {problem}.") from err


def _close_process_group() -> None:
    """Leave the DDP process group before the interpreter exits (gloo can abort when it is torn down at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def _console_main() -> None:
    sys.exit(main())
