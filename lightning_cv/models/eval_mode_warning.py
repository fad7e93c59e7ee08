"""Hide Lightning's "modules in eval mode" warning for frozen layers, only while Lightning checks, in this process.

Frozen blocks are in eval mode on purpose (their BatchNorm keeps its pretrained statistics, see
:func:`~lightning_cv.models.freezing.eval_frozen_modules`), so Lightning's generic warning ``Found N module(s) in eval
mode at the start of training`` would only alarm the user. Lightning emits it with ``warnings.warn`` (through
``rank_zero_warn``) once per fit, after ``on_fit_start`` and before ``on_train_start``; it has no switch for it.

A process-wide ``warnings.filterwarnings`` from a model hook would also hide the warning for every other model the
process trains later. Here the filter lives in a ``warnings.catch_warnings`` scope opened at fit start and closed at
train start, or on teardown or an exception when training never starts. That is a callback rather than two model
hooks because only callbacks hear about exceptions (``on_exception``): a failed sanity check must not leave the
filter behind. The scope restores the filter list as it found it, so a filter someone else adds in that window (the
sanity check runs there) goes with it.
"""

from __future__ import annotations

import warnings
from typing import Any

from lightning.pytorch import Callback, LightningModule, Trainer
from typing_extensions import override

__all__ = ["EVAL_MODE_WARNING", "FrozenEvalModeWarningFilter"]

#: the start of Lightning's message (lightning/pytorch/loops/fit_loop.py, `_warn_if_modules_in_eval_mode`)
EVAL_MODE_WARNING = r"Found \d+ module\(s\) in eval mode at the start of training"


class FrozenEvalModeWarningFilter(Callback):
    """Ignore Lightning's eval-mode warning during the fit start of a module that has frozen layer groups.

    :class:`~lightning_cv.ImageClassifier` adds it through ``configure_callbacks``; a subclass that overrides
    ``configure_callbacks`` should include ``super().configure_callbacks()``. A module without frozen groups (its
    ``num_frozen_groups`` is 0 or absent) still gets the warning: an eval-mode module it did not expect is worth one.
    """

    def __init__(self) -> None:
        self._scope: warnings.catch_warnings[Any] | None = None

    @override
    def on_fit_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()  # a scope left open by an earlier fit whose end this callback did not see
        if getattr(pl_module, "num_frozen_groups", 0) > 0:
            self._scope = warnings.catch_warnings()
            self._scope.__enter__()
            warnings.filterwarnings("ignore", message=EVAL_MODE_WARNING)

    @override
    def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._close()  # Lightning has checked: from here on the filters are the user's again

    @override
    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        self._close()

    @override
    def teardown(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        self._close()  # e.g. the fit loop was skipped (max_steps reached before a resume): no on_train_start

    def _close(self) -> None:
        if self._scope is not None:
            scope, self._scope = self._scope, None
            scope.__exit__(None, None, None)
