"""The per-class report of an evaluation: one table, written to the run directory, printed, and logged.

Task-agnostic: the rows are plain dicts, so the multi-class table (:func:`lightning_cv.models.metrics.per_class_rows`)
and the multi-label one (``MultilabelMetrics.per_label``) go through the same call.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.utilities import rank_zero_info

from lightning_cv.reporting.table_logging import log_table
from lightning_cv.reporting.tables import print_table, write_table

__all__ = ["report_per_class"]

_SPLITS = {"val": "validation", "test": "test", "predict": "prediction", "train": "training"}


def report_per_class(
    trainer: Trainer,
    stage: str,
    rows: Sequence[dict[str, Any]],
    *,
    name: str | None = None,
    title: str | None = None,
) -> dict[str, Path] | None:
    """Write ``rows`` as ``<run dir>/per_class_<stage>.csv`` and ``.md``, print them, and log them to every logger.

    Call it on **every** process: it first asks ``trainer.log_dir``, which under DDP is a collective (rank zero
    broadcasts its answer), so asking it on rank zero alone would hang the run. Then only rank zero writes, prints
    (:func:`lightning_cv.reporting.print_table`) and logs the table under the tag ``<stage>_per_class`` (or ``name``)
    (:func:`lightning_cv.reporting.log_table`: TensorBoard's TEXT tab, a W&B table, an MLflow artifact ...).

    The run directory is ``trainer.log_dir`` (the first logger's version folder for TensorBoard and CSV, its
    ``save_dir`` for others), else ``trainer.default_root_dir``.

    Args:
        trainer: the running trainer.
        stage: ``"val"`` or ``"test"`` (any short name works): it names the files, the tag and the title.
        rows: the table, one dict per class, every dict with the same keys in the same order.
        name: the file name without extension (and the logger's tag) instead of ``per_class_<stage>``; a fixed name,
            never data.
        title: the printed title instead of "Per-class results on the <split> split".

    Returns:
        ``{"csv": path, "markdown": path}`` on rank zero; ``None`` on the other processes and when ``rows`` is empty.

    Example:
        >>> rows = per_class_rows(model.confusion_matrix, model.hparams.class_names)  # doctest: +SKIP
        >>> report_per_class(trainer, "test", rows)  # doctest: +SKIP
        {'csv': PosixPath('lightning_logs/version_0/per_class_test.csv'), 'markdown': PosixPath('...md')}
    """
    directory = trainer.log_dir or trainer.default_root_dir  # a collective: asked on every rank, before the check
    if not trainer.is_global_zero or not rows:
        return None
    paths = write_table(rows, directory, name or f"per_class_{stage}")
    print_table(rows, title or f"Per-class results on the {_SPLITS.get(stage, stage)} split")
    log_table(trainer, name or f"{stage}_per_class", rows, step=trainer.global_step)
    rank_zero_info(f"Per-class results written to {paths['csv']} and {paths['markdown']}")
    return paths
