"""Checkpoints written in a background thread, atomically, while training goes on.

Writing a ResNet-18 checkpoint (weights and AdamW state, ~135 MB) takes ~0.15 s on a laptop-class CPU, twice per
epoch with the best and the last checkpoint: on small images that is several percent of an epoch in which training
waits for the disk. :class:`BackgroundCheckpointIO` takes a snapshot of the tensors on the training thread (so a
file holds exactly the state of the step it was asked at) and serialises and writes it in one background thread.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.plugins.io import AsyncCheckpointIO
from typing_extensions import override

__all__ = ["BackgroundCheckpointIO", "copy_checkpoint_file", "wait_for_checkpoints"]


class BackgroundCheckpointIO(AsyncCheckpointIO):
    """Lightning's :class:`~lightning.pytorch.plugins.io.AsyncCheckpointIO` with the guarantees resuming relies on.

    * Atomic on local disks: a checkpoint is written to a hidden ``.<name>.partial-<pid>`` file in its own folder
      and renamed over the final name, so a kill at any moment leaves either the old file or
      the new one, never a cut one under the final name. (Lightning's writer stages the file in the system's
      temporary folder and moves it, which is a copy when that is another file system.) Other paths (``s3://``...)
      and another wrapped ``checkpoint_io`` are written by the wrapped plugin, in the background.
    * Ordered: removing a checkpoint (ModelCheckpoint deletes the superseded best right after asking for the new
      one) is queued behind the pending writes, and skipped when one of them failed; loading one waits for them.
    * Bounded: the tensors are copied to the CPU (no second copy of the state in GPU memory), and at most one write
      is pending; a save asked for while the previous one is still being written waits for it.
    * :meth:`wait` blocks until every requested checkpoint is on disk (a preempted run calls it before it exits),
      and re-raises a failed write; so do the next save and the end of the run.

    Use it with any LightningModule: ``Trainer(plugins=[BackgroundCheckpointIO()])`` (the strategy supplies the
    plugin it wraps, :class:`~lightning.fabric.plugins.io.torch_io.TorchCheckpointIO` by default).
    ``lightning-cv fit`` uses it unless ``--checkpoint_async false``.
    """

    def __init__(self, checkpoint_io: Any = None) -> None:
        super().__init__(checkpoint_io)
        self._lock = threading.Lock()  # the writer thread sets the error, the training thread reads and clears it
        self._pending_write: Future[None] | None = None

    def _submit(self, function: Callable[..., Any], *args: Any, after_failure: bool = True) -> Future[None]:
        """Queue ``function(*args)``; with ``after_failure=False`` it is skipped while an earlier failure is unreported
        (a superseded best checkpoint is not removed when the new best could not be written)."""

        def run() -> None:
            if not after_failure and self._error is not None:
                return
            try:
                function(*args)
            except BaseException as err:  # reported by the next save, wait() or teardown
                with self._lock:
                    self._error = self._error or err

        self._ensure_setup()
        assert self._executor is not None
        return self._executor.submit(run)

    @override
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        wrapped = self.checkpoint_io
        if type(wrapped) is TorchCheckpointIO and storage_options is None and "://" not in os.fspath(path):
            from lightning_utilities.core.apply_func import apply_to_collection

            # One write in flight at most: each pending one holds a full copy of the state in memory. The previous
            # write has had a whole save interval to finish, so this rarely waits.
            if self._pending_write is not None:
                self._pending_write.result()
            self._raise_pending_error()
            # the snapshot, on the CPU (no second copy of the state in GPU memory): training changes the tensors
            # in place as soon as this returns
            snapshot = apply_to_collection(checkpoint, torch.Tensor, lambda t: t.detach().to("cpu", copy=True))
            self._pending_write = self._submit(_write_atomically, snapshot, Path(path))
        else:
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)

    def copy_checkpoint(self, source: Any, path: Any) -> None:
        """Make ``path`` a copy of the checkpoint ``source`` once ``source`` is written (atomically)."""
        self._submit(copy_checkpoint_file, Path(source), Path(path), after_failure=False)

    @override
    def remove_checkpoint(self, path: Any) -> None:
        assert self.checkpoint_io is not None
        self._submit(self.checkpoint_io.remove_checkpoint, path, after_failure=False)

    @override
    def load_checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        self.wait()
        assert self.checkpoint_io is not None
        return self.checkpoint_io.load_checkpoint(*args, **kwargs)

    def wait(self) -> None:
        """Block until every checkpoint asked for so far is written (or removed); re-raise a failure."""
        if self._executor is not None:
            self._executor.submit(lambda: None).result()
        self._raise_pending_error()

    @override
    def teardown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None
        self._pending_write = None
        self._raise_pending_error()  # once: a Trainer used again does not raise it a second time

    def _raise_pending_error(self) -> None:
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error


def _write_atomically(checkpoint: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        with open(partial, "wb") as f:
            torch.save(checkpoint, f)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def copy_checkpoint_file(source: Path, path: Path) -> None:
    """``path`` becomes a copy of ``source``, atomically: copied under a temporary name in the same folder, then
    renamed over ``path``.

    A copy, not a hard link: a writer that rewrites a file in place (fsspec moving a temporary file from another file
    system copies into the existing file) would change both names of a linked pair.
    """
    import shutil

    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        shutil.copyfile(source, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def wait_for_checkpoints(trainer: Any) -> None:
    """Block until the trainer's checkpoint plugin has written everything it was asked to (no-op when synchronous)."""
    wait = getattr(trainer.strategy.checkpoint_io, "wait", None)
    if callable(wait):
        wait()
