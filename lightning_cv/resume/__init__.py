"""Exact resume: everything a run needs beyond Lightning's checkpoint to continue as if it had never stopped.

* :mod:`~lightning_cv.resume.loader`: the position inside an epoch and each image's augmentation seed
  (:class:`ResumableSampler`, :class:`SeededDataset`, :class:`ResumableDataLoader`);
* :mod:`~lightning_cv.resume.state` and :mod:`~lightning_cv.resume.rng`: random streams and gradients summed inside an
  accumulation window (:class:`TrainingState`);
* :mod:`~lightning_cv.resume.schedule`: the learning rate the schedule gives at the restored step;
* :mod:`~lightning_cv.resume.checkpointing`: periodic and preemption (SIGTERM) checkpoints;
* :mod:`~lightning_cv.resume.background_io`: checkpoints written atomically in a background thread;
* :mod:`~lightning_cv.resume.keys`: the names lightning_cv adds to a checkpoint.

Nothing here imports the rest of lightning_cv: models, data and callbacks build on it.
"""

from lightning_cv.resume.background_io import BackgroundCheckpointIO, wait_for_checkpoints
from lightning_cv.resume.checkpointing import (
    PREEMPTED_EXIT_CODE,
    PeriodicCheckpoint,
    PreemptionCheckpoint,
    ResumableCheckpoint,
)
from lightning_cv.resume.loader import ResumableDataLoader, ResumableSampler, SeededDataset, item_seed
from lightning_cv.resume.rng import capture_rng_state, restore_rng_state
from lightning_cv.resume.schedule import sync_lr_with_schedule
from lightning_cv.resume.state import TrainingState

__all__ = [
    "PREEMPTED_EXIT_CODE",
    "BackgroundCheckpointIO",
    "PeriodicCheckpoint",
    "PreemptionCheckpoint",
    "ResumableCheckpoint",
    "ResumableDataLoader",
    "ResumableSampler",
    "SeededDataset",
    "TrainingState",
    "capture_rng_state",
    "item_seed",
    "restore_rng_state",
    "sync_lr_with_schedule",
    "wait_for_checkpoints",
]
