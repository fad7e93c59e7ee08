"""Run folders: where a run writes, its resolved config saved there, and removing one a refused setup left empty."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.cli import SaveConfigCallback

from lightning_cv.models.checkpoint import RUNS_DIR

__all__ = ["RunConfigSaver", "checkpoint_root", "remove_run_without_results"]


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
