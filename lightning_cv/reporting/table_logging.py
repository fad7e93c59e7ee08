"""Send one table (rows of a per-class report) to every logger of a run, each through its own text or table API.

Lightning has no common API for tables either: TensorBoard's writer has ``add_text`` (which renders Markdown),
``WandbLogger`` has ``log_table``, an ``MlflowClient`` logs text as a run artifact, a Comet experiment has
``log_text``, and ``CSVLogger`` takes none. :func:`log_table` gives each logger the table the way it takes one and
skips the others: unlike :func:`lightning_cv.reporting.log_image`, it writes no fallback file, because the caller
writes the table as CSV and Markdown into the run directory anyway (:func:`lightning_cv.reporting.tables.write_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import Logger

# the same tag-to-file-name rule as the image artifacts, so a table and a picture of one tag sit side by side
from lightning_cv.reporting.images import safe_tag
from lightning_cv.reporting.tables import format_cell, format_table

__all__ = ["log_table"]


def log_table(trainer: Trainer, tag: str, rows: Sequence[dict[str, Any]], step: int | None = None) -> list[Logger]:
    """Log ``rows`` (dicts with the same keys) under ``tag`` to every logger of ``trainer`` that takes text or tables.

    Each logger gets the table through its own API:

    - TensorBoard (its ``experiment`` has ``add_text``): ``add_text(tag, markdown, global_step=step)``; the TEXT tab
      shows it as a table.
    - a logger with ``log_table(key, columns, data, step)``, such as Lightning's ``WandbLogger`` (the values as they
      are), else one with ``log_text`` of that form (the values as text, 4 decimals).
    - MLflow (an ``experiment`` with ``log_text`` and a ``run_id`` on the logger): the run artifact
      ``tables/<tag>/step_<step>.md``.
    - Comet (an ``experiment`` with ``log_text`` and no ``run_id``): ``log_text(markdown, step=step,
      metadata={"tag": tag})``.
    - any other logger (``CSVLogger``, custom ones) gets nothing.

    Other processes than rank zero do nothing, so it is safe to call from every rank.

    Args:
        trainer: the running trainer.
        tag: the table's name in the loggers, e.g. ``"test_per_class"``.
        rows: the table, one dict per row, every dict with the same keys in the same order.
        step: the step to log at; ``None`` takes ``trainer.global_step``.

    Returns:
        The loggers that took the table.

    Example:
        >>> log_table(trainer, "test_per_class", [{"class": "cat", "f1": 0.91}])  # doctest: +SKIP
        [<lightning.pytorch.loggers.tensorboard.TensorBoardLogger object at ...>]
    """
    if not trainer.is_global_zero or not rows:
        return []
    step = trainer.global_step if step is None else int(step)
    markdown = format_table(rows)
    return [logger for logger in trainer.loggers if _send(logger, tag, rows, markdown, step)]


def _send(logger: Logger, tag: str, rows: Sequence[dict[str, Any]], markdown: str, step: int) -> bool:
    """Give the table to ``logger`` through its text or table API; ``False`` when it has none."""
    experiment: Any = getattr(logger, "experiment", None)
    if hasattr(experiment, "add_text"):
        experiment.add_text(tag, markdown, global_step=step)
        return True
    columns = list(rows[0])
    method = getattr(logger, "log_table", None)
    if callable(method):
        method(key=tag, columns=columns, data=[[row[c] for c in columns] for row in rows], step=step)
        return True
    method = getattr(logger, "log_text", None)
    if callable(method):
        method(key=tag, columns=columns, data=[[format_cell(row[c]) for c in columns] for row in rows], step=step)
        return True
    if hasattr(experiment, "log_text"):
        run_id = getattr(logger, "run_id", None)
        if run_id is not None:  # an MlflowClient: text is an artifact of the logger's run
            experiment.log_text(run_id, markdown, artifact_file=f"tables/{safe_tag(tag)}/step_{step:06d}.md")
        else:
            experiment.log_text(markdown, step=step, metadata={"tag": tag})
        return True
    return False
