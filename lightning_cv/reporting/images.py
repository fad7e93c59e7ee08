"""Send one RGB image to every logger of a run, each through its own image API, or to PNG files when it has none.

Lightning has no common image API: TensorBoard's writer has ``add_image``, ``WandbLogger`` has ``log_image``, an
``MlflowClient`` logs an image as a run artifact, and ``CSVLogger`` takes no images at all. Code that called only
``add_image``/``add_figure`` lost its pictures silently under any other logger; :func:`log_image` sends each picture
to every logger the way that logger takes it, and saves a PNG file for the ones that take none.
"""

from __future__ import annotations

import re
import weakref
from pathlib import Path
from typing import Any

import numpy as np
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_info
from PIL import Image

__all__ = ["log_image", "safe_tag"]

#: the image folders already named to the user, per trainer (one line per run, not one per epoch)
_announced: weakref.WeakKeyDictionary[Trainer, set[Path]] = weakref.WeakKeyDictionary()


def log_image(trainer: Trainer, tag: str, image: np.ndarray | Image.Image, step: int | None = None) -> list[Path]:
    """Log ``image`` under ``tag`` to every logger of ``trainer``; return the PNG files written (rank zero only).

    Each logger gets the image through its own API:

    - TensorBoard (its ``experiment`` has ``add_image``): ``add_image(tag, image, global_step=step)``.
    - a logger with a ``log_image(key, images, step)`` method, such as Lightning's ``WandbLogger``.
    - MLflow (an ``experiment`` with ``log_image`` and a ``run_id`` on the logger): the run artifact
      ``images/<tag>/step_<step>.png``.
    - Comet (an ``experiment`` with ``log_image`` and no ``run_id``): ``log_image(image, name=tag, step=step)``.
    - any other logger (``CSVLogger``, custom ones), and a run without a logger: the file
      ``<run dir>/images/<tag>/step_<step>.png``, where the run dir is the logger's ``log_dir``, else its
      ``save_dir``, else ``trainer.default_root_dir``. Where that is is said once per run.

    In the file name the tag keeps only letters, digits, ``.``, ``_`` and ``-``, so no tag can write outside the
    folder. Other processes than rank zero do nothing, so it is safe to call from every rank.

    Args:
        trainer: the running trainer.
        tag: the image's name in the loggers, e.g. ``"val_confusion_matrix"``.
        image: an ``(H, W, 3)`` uint8 array or a PIL image.
        step: the step to log at; ``None`` takes ``trainer.global_step``.

    Returns:
        The PNG files written, one per run directory that got one; empty when every logger took the image.

    Example:
        >>> log_image(trainer, "val_samples", picture)      # doctest: +SKIP
        [PosixPath('runs/version_0/images/val_samples/step_000120.png')]   (with a CSVLogger)
    """
    if not trainer.is_global_zero:
        return []
    picture = _as_rgb(image)
    step = trainer.global_step if step is None else int(step)
    written: list[Path] = []
    loggers: list[Logger | None] = [*trainer.loggers] or [None]
    for logger in loggers:
        if logger is not None and _send(logger, tag, picture, step):
            continue
        folder = _run_dir(trainer, logger) / "images"
        path = folder / safe_tag(tag) / f"step_{step:06d}.png"
        if path in written:  # two loggers sharing one run directory
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(picture).save(path, compress_level=3)  # zlib level 3: ~3x faster than 6, ~15% larger
        written.append(path)
        _announce(trainer, logger, folder)
    return written


def _send(logger: Logger, tag: str, image: np.ndarray, step: int) -> bool:
    """Give ``image`` to ``logger`` through its image API; ``False`` when it has none."""
    experiment: Any = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_image"):
        experiment.add_image(tag, image, global_step=step, dataformats="HWC")
        return True
    method = getattr(logger, "log_image", None)
    if callable(method):
        method(key=tag, images=[image], step=step)
        return True
    if hasattr(experiment, "log_image"):
        run_id = getattr(logger, "run_id", None)
        if run_id is not None:  # an MlflowClient: images are artifacts of the logger's run
            experiment.log_image(run_id, image, artifact_file=f"images/{safe_tag(tag)}/step_{step:06d}.png")
        else:
            experiment.log_image(image, name=tag, step=step)
        return True
    return False


def _run_dir(trainer: Trainer, logger: Logger | None) -> Path:
    # What trainer.log_dir answers on rank zero, read without it: trainer.log_dir broadcasts to every process, and
    # only rank zero gets here (calling it from one rank hangs the run)
    for name in ("log_dir", "save_dir"):
        value = getattr(logger, name, None)
        if value:
            return Path(value)
    return Path(trainer.default_root_dir)


def safe_tag(tag: str) -> str:
    """``tag`` as one harmless file name: no separator, no ``..``, no leading dot, not empty."""
    name = re.sub(r"[^A-Za-z0-9_.-]+|\.{2,}", "_", tag).strip("._")
    return name[:120] or "image"


def _as_rgb(image: np.ndarray | Image.Image) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    array = np.asarray(image)
    if array.ndim != 3 or array.shape[2] != 3 or array.dtype != np.uint8:
        raise ValueError(
            f"Expected an RGB image of shape (H, W, 3) and dtype uint8, but got shape {array.shape} "
            f"and dtype {array.dtype}."
        )
    return np.ascontiguousarray(array)


def _announce(trainer: Trainer, logger: Logger | None, folder: Path) -> None:
    seen = _announced.setdefault(trainer, set())
    if folder in seen:
        return
    seen.add(folder)
    who = f"{type(logger).__name__}, which takes no images," if logger is not None else "this run (no logger)"
    rank_zero_info(f"Images for {who} are saved under '{folder}'.")
