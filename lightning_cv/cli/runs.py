"""Run folders: where a run writes, its resolved config saved there, and removing one a refused setup left empty."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lightning_cv.models.checkpoint import RUNS_DIR

__all__ = [
    "RunConfigSaver",
    "checkpoint_root",
    "continue_run_version",
    "remove_run_without_results",
    "runs_under_root_dir",
]


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


def checkpoint_root(cfg: Any) -> str:
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


def _logger_args(cfg: Any) -> Any:
    """The ``init_args`` of the configured logger when it is one class (not ``True``/``False``/a list), else None."""
    logger = cfg.trainer.get("logger")
    return logger.get("init_args") if hasattr(logger, "get") else None


def runs_under_root_dir(cfg: Any, given: Any) -> None:
    """With ``--trainer.default_root_dir DIR``, the default logger writes under ``DIR`` instead of ``./runs``.

    Lightning puts everything a run writes under ``default_root_dir``; our default logger's fixed ``save_dir``
    would otherwise win. A ``save_dir`` the user set (``given``: the options set on the command line and in
    configs) is kept.
    """
    root = cfg.trainer.get("default_root_dir")
    init_args = _logger_args(cfg)
    if not root or init_args is None or init_args.get("save_dir") != RUNS_DIR:
        return
    value: Any = given
    for key in ("trainer", "logger", "init_args", "save_dir"):
        value = value.get(key) if hasattr(value, "get") else None
    if value is not None:
        return
    init_args.save_dir = str(root)


_VERSION = re.compile(r"version_(\d+)")


def continue_run_version(cfg: Any, ckpt_path: str, global_step: int) -> int | None:
    """Resume in the run's own folder: give the TensorBoard logger the version of the run that wrote ``ckpt_path``.

    A checkpoint at ``<save_dir>/<name>/version_N/checkpoints/*.ckpt`` of the configured TensorBoard logger belongs
    to run ``N``; without this a resume starts ``version_N+1`` and splits one training's curves and
    checkpoints across two folders. A version the user set, a logger without versions, or a checkpoint from
    elsewhere change nothing, nor do other loggers (Lightning's CSVLogger starts its ``metrics.csv`` afresh in a
    folder that has one). Returns the version chosen, or None.

    TensorBoard then also hides the events a killed run wrote after ``global_step`` (the checkpoint's), which the
    resumed run writes again: SummaryWriter's ``purge_step``, which the logger passes on.
    """
    logger = cfg.trainer.get("logger")
    init_args = _logger_args(cfg)
    if init_args is None or "version" not in init_args or init_args.get("version") is not None:
        return None
    if not str(logger.get("class_path", "")).endswith("TensorBoardLogger"):
        # TensorBoard adds a new event file to a folder; other loggers may not (CSVLogger empties metrics.csv)
        return None
    save_dir, name = init_args.get("save_dir"), init_args.get("name")
    if not save_dir:
        return None
    folder = Path(ckpt_path).resolve().parent
    match = _VERSION.fullmatch(folder.parent.name)
    if folder.name != "checkpoints" or match is None:
        return None
    expected = Path(save_dir, name) if name else Path(save_dir)
    if folder.parent.parent != expected.resolve():
        return None
    init_args.version = int(match.group(1))
    if "purge_step" in init_args and init_args.get("purge_step") is None:
        init_args.purge_step = global_step
    return init_args.version


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
