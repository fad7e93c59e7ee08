"""A callback for ``benchmarks/end_to_end.py``: writes the wall-clock time of the first training step to a file.

Named on the ``lightning-cv fit`` command line (``--trainer.callbacks+=e2e_marks.FirstStepMark``, with this folder on
``PYTHONPATH`` and ``LIGHTNING_CV_ALLOW_IMPORTS=e2e_marks``), so the measured run is the real command, plus this.
"""

from __future__ import annotations

import os
import time
from typing import Any

from lightning.pytorch import Callback

MARK_ENV = "E2E_FIRST_STEP_FILE"


class FirstStepMark(Callback):
    """Appends ``<event> <time.time()>`` lines to ``$E2E_FIRST_STEP_FILE``: setup, fit start, the sanity check, the
    first training batch, each epoch's end, the end of training."""

    def __init__(self) -> None:
        self._done = False

    def _mark(self, event: str) -> None:
        path = os.environ.get(MARK_ENV)
        if path:
            with open(path, "a") as f:
                f.write(f"{event} {time.time()!r}\n")

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        self._mark("setup")

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark("fit_start")

    def on_sanity_check_start(self, trainer: Any, pl_module: Any) -> None:
        self._mark("sanity_start")

    def on_sanity_check_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark("sanity_end")

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if not self._done:
            self._mark("first_step")
        self._done = True

    def on_train_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark(f"epoch_end_{trainer.current_epoch}")

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        self._mark("fit_end")
