"""Checkpoints for long and interruptible runs: every N steps or minutes, and on preemption or a crash.

Lightning's :class:`~lightning.pytorch.callbacks.ModelCheckpoint` saves at epoch ends by the monitored metric; a
spot instance that is preempted an hour into a two-hour epoch loses that hour. :class:`PeriodicCheckpoint` saves
every ``every_n_steps`` optimizer steps or ``every_minutes`` minutes and keeps the newest ``keep``;
:class:`PreemptionCheckpoint` saves when training stops on SIGTERM (what SLURM, Kubernetes and spot instances send
before they kill a job) or on an exception. Every checkpoint is written to a temporary file and renamed, so a file is
never left half-written (:class:`~lightning_cv.resume.background_io.BackgroundCheckpointIO` does that in a
background thread). Resume with ``--ckpt_path last``, which picks the newest of all of them.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path
from typing import Any
from weakref import proxy

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from lightning.pytorch.utilities.exceptions import SIGTERMException
from typing_extensions import override

from lightning_cv.resume.background_io import BackgroundCheckpointIO, copy_checkpoint_file, wait_for_checkpoints

__all__ = ["PeriodicCheckpoint", "PreemptionCheckpoint", "ResumableCheckpoint"]

#: exit status of a run stopped by SIGTERM after it saved its checkpoint (128 + 15, the shell's convention):
#: non-zero, so job schedulers (SLURM ``--requeue``, Kubernetes) treat the job as unfinished and restart it
PREEMPTED_EXIT_CODE = 143


class ResumableCheckpoint(ModelCheckpoint):
    """Lightning's ModelCheckpoint, with ``last.ckpt`` written at the end of every epoch when ``save_last=True``.

    Since Lightning 2.6, ``save_last=True`` writes ``last.ckpt`` only at steps where a top-k file is saved too: once
    the monitored metric stops improving, "last" stays at the last *best* epoch, and a run resumed from it silently
    trains the epochs since then again. Here it is the newest state again, as the option's name says and as
    ``--ckpt_path last`` needs. When a new best was saved at the same step, ``last.ckpt`` is a copy of that file
    instead of a second serialisation of the same state (with Lightning's file writer or
    :class:`~lightning_cv.resume.background_io.BackgroundCheckpointIO`; other plugins save it as usual).
    Everything else is ModelCheckpoint's own behaviour and arguments.
    """

    @property
    @override
    def state_key(self) -> str:
        # ModelCheckpoint's own key: its state in a checkpoint (best and last paths, scores) is read back by either
        # class, so checkpoints written before this class existed resume with it, and the other way round
        key = super().state_key
        return "ModelCheckpoint" + key[len(type(self).__qualname__) :]

    @override
    def on_train_epoch_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    @override
    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_missing(trainer)

    @override
    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        source = self._last_checkpoint_saved
        same_state = (
            filepath == self.last_model_path  # saving "last" ...
            and self._last_global_step_saved == trainer.global_step  # ... at the step a top-k file was just saved
            and bool(source)
            and source != filepath
            # ... whose own copy of this callback's state already names this file as the last one (not so at the
            # first epoch): a run resumed from either file then finds its last checkpoint under the same name
            and getattr(self, "_dumped_last_path", None) == filepath
            and "://" not in filepath + source  # local files
            and _copies_safely(trainer.strategy.checkpoint_io)
        )
        if not same_state:
            self._dumped_last_path = self.last_model_path  # what the file written now records
            super()._save_checkpoint(trainer, filepath)
            return
        if trainer.is_global_zero:
            io = trainer.strategy.checkpoint_io
            if isinstance(io, BackgroundCheckpointIO):
                io.copy_checkpoint(source, filepath)  # queued behind the pending write of `source`
            else:
                copy_checkpoint_file(Path(source), Path(filepath))
        trainer.strategy.barrier("ResumableCheckpoint._save_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))

    def _save_last_if_missing(self, trainer: Trainer) -> None:
        # skipped when this step is saved already (a new best, and last with it), outside fit and in sanity checks
        if self.save_last is True and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:  # removed by a queued deletion meanwhile: the oldest
        return float("-inf")


def _copies_safely(io: Any) -> bool:
    """Whether ``last.ckpt`` may be copied from the best file: plain files written whole, and (in the background)
    written before the copy starts. Other plugins (sharded folders, Lightning's AsyncCheckpointIO) save it."""
    if isinstance(io, BackgroundCheckpointIO):
        return type(io.checkpoint_io) is TorchCheckpointIO
    return type(io) is TorchCheckpointIO


class PeriodicCheckpoint(ModelCheckpoint):
    """Save ``step-<global step>.ckpt`` every ``every_n_steps`` optimizer steps or ``every_minutes`` minutes.

    The newest ``keep`` files are kept, older ones deleted. They hold everything a resume needs, down to the
    position inside the epoch (with :class:`~lightning_cv.data.ImageDataModule`). Saves wait for the end of a
    gradient-accumulation window, and skip an epoch's last batch (the epoch-end checkpoint comes after validation).

    Args:
        every_n_steps: save every this many optimizer steps.
        every_minutes: save every this many minutes of training (give one of the two).
        keep: how many periodic checkpoints to keep (at least 1).
        dirpath: folder; defaults to the run's ``checkpoints/`` folder, beside the best and last checkpoints.
    """

    def __init__(
        self,
        every_n_steps: int | None = None,
        every_minutes: float | None = None,
        keep: int = 2,
        dirpath: str | os.PathLike[str] | None = None,
    ) -> None:
        if (every_n_steps is None) == (every_minutes is None):
            raise ValueError(
                f"Expected exactly one of `every_n_steps` and `every_minutes`, but got every_n_steps={every_n_steps}, "
                f"every_minutes={every_minutes}."
            )
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"Expected `every_n_steps` >= 1, but got {every_n_steps}.")
        if every_minutes is not None and every_minutes <= 0:
            raise ValueError(f"Expected `every_minutes` > 0, but got {every_minutes}.")
        if keep < 1:
            raise ValueError(f"Expected `keep` >= 1, but got {keep}.")
        super().__init__(
            dirpath=os.fspath(dirpath) if dirpath is not None else None,
            filename="step-{step:08d}",
            monitor=None,
            save_top_k=-1,  # this callback prunes to `keep` itself (ModelCheckpoint has no cap without a monitor)
            every_n_train_steps=every_n_steps,
            train_time_interval=timedelta(minutes=every_minutes) if every_minutes is not None else None,
            save_on_train_epoch_end=False,
            auto_insert_metric_name=False,
        )
        self.every_n_steps = every_n_steps
        self.every_minutes = every_minutes
        self.keep = keep

    @property
    @override
    def state_key(self) -> str:
        return f"PeriodicCheckpoint{{every_n_steps={self.every_n_steps}, every_minutes={self.every_minutes}}}"

    @override
    def on_train_batch_end(
        self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        last = batch_idx + 1 >= trainer.num_training_batches
        if last or (batch_idx + 1) % trainer.accumulate_grad_batches:
            # inside a gradient-accumulation window the summed gradients are not in a checkpoint; at the epoch's
            # last batch the epoch-end checkpoint follows, after validation (a resume from here would skip it)
            return
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)

    @override
    def _save_checkpoint(self, trainer: Trainer, filepath: str) -> None:
        super()._save_checkpoint(trainer, filepath)
        if trainer.is_global_zero and self.dirpath is not None:
            # the new file may still be being written in the background: it is the newest whether on disk or not
            new = Path(filepath)
            older = [p for p in Path(self.dirpath).glob("step-*.ckpt") if p.name != new.name]
            saved = [*sorted(older, key=_mtime), new]
            for old in saved[: -self.keep]:
                trainer.strategy.remove_checkpoint(old)  # queued behind pending writes


class PreemptionCheckpoint(Callback):
    """Save ``interrupted.ckpt`` when ``fit`` stops on SIGTERM or an exception, so the run can resume.

    On SIGTERM Lightning finishes the current batch on every process and stops; this callback then writes the
    checkpoint (on every rank, as Lightning's saving requires; rank zero writes the file). Training resumed from it
    continues with the next batch, exactly as if it had not stopped. After an exception the checkpoint holds the
    state before the failing batch: resuming skips that batch. Nothing is written before the first optimizer step
    (setup errors, the validation sanity check): there is nothing to lose yet.

    Args:
        dirpath: folder; defaults to the run's ``checkpoints/`` folder.
        on_exception: also save on exceptions other than SIGTERM (not on KeyboardInterrupt, which counts too).
    """

    def __init__(self, dirpath: str | os.PathLike[str] | None = None, on_exception: bool = True) -> None:
        self.dirpath = dirpath
        self.save_on_exception = on_exception
        self.saved_path: str | None = None
        self._dirpath: Path | None = None

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        if self.dirpath is not None:
            self._dirpath = Path(self.dirpath)
            return
        callback = trainer.checkpoint_callback
        resolved = getattr(callback, "dirpath", None)  # ModelCheckpoint resolves its folder in its own setup
        if resolved is None:
            # trainer.log_dir is a collective under DDP: asked on every rank
            resolved = os.path.join(trainer.log_dir or trainer.default_root_dir, "checkpoints")
        self._dirpath = Path(resolved)

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        if trainer.state.fn != "fit" or trainer.sanity_checking or trainer.global_step == 0:
            return  # nothing trained yet (setup errors, the sanity check, the first batch): nothing to save
        epoch = trainer.fit_loop.epoch_progress.current
        if epoch.ready > getattr(epoch, "started", epoch.ready):  # stopped in on_train_epoch_start
            # Nothing has trained since the epoch-end checkpoint, and Lightning cannot resume a checkpoint taken
            # between an epoch's start and its first batch (its batch counter still holds the last epoch's count).
            rank_zero_info(
                f"Training stopped between epochs at step {trainer.global_step}: nothing to add to the epoch-end "
                "checkpoint. Resume with `--ckpt_path last`."
            )
            return
        preempted = isinstance(exception, SIGTERMException) or trainer.received_sigterm
        if not preempted and not self.save_on_exception:
            return
        if not preempted and trainer.world_size > 1:
            # one process failed: the others are not here to take part in a collective save
            rank_zero_warn("PreemptionCheckpoint: not saving after an exception under several processes.")
            return
        dirpath = self._dirpath or Path(trainer.default_root_dir) / "checkpoints"
        path = dirpath / "interrupted.ckpt"
        try:
            trainer.save_checkpoint(path)
            wait_for_checkpoints(trainer)  # on disk before the process exits
        except Exception as err:  # never hide the original exception behind a failed save
            rank_zero_warn(f"PreemptionCheckpoint could not save {path}: {err}")
            return
        self.saved_path = str(path)
        reason = "SIGTERM" if preempted else f"{type(exception).__name__}"
        rank_zero_info(
            f"Training stopped ({reason}) at step {trainer.global_step}; checkpoint saved to {path}. "
            "Resume with `--ckpt_path last` (or this file)."
        )

    def state_dict(self) -> dict[str, Any]:
        return {}
