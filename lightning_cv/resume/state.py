"""What a LightningModule must add to its checkpoints to resume exactly, and put back when training restarts.

Lightning restores weights, optimizer, schedule and loops; it leaves out the random streams (dropout, drop path) and
the gradients summed so far inside a gradient-accumulation window (a SIGTERM can stop a run between an accumulation
window's first and last batch). :class:`TrainingState` saves both in ``on_save_checkpoint`` and restores them in
``on_train_start``, not in ``on_load_checkpoint``: Lightning creates the data loaders (which draw from the global
stream) after it loads a checkpoint, so a stream restored earlier would be consumed again.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from lightning_cv.resume.keys import GRADS_KEY, RNG_KEY
from lightning_cv.resume.rng import capture_rng_state, restore_rng_state

__all__ = ["TrainingState"]


class TrainingState:
    """RNG streams and accumulated gradients of one module, from checkpoint to the start of training.

    Example (in a LightningModule)::

        self._resume = TrainingState()
        def on_save_checkpoint(self, checkpoint): self._resume.save(self, checkpoint)
        def on_load_checkpoint(self, checkpoint): self._resume.load(checkpoint, fitting=self.trainer.state.fn == "fit")
        def on_train_start(self): self._resume.restore(self)
    """

    def __init__(self) -> None:
        self._rng: dict[str, Any] | None = None
        self._grads: dict[str, Tensor] | None = None

    def save(self, module: nn.Module, checkpoint: dict[str, Any]) -> None:
        checkpoint[RNG_KEY] = capture_rng_state()
        grads = {name: p.grad.detach().cpu() for name, p in module.named_parameters() if p.grad is not None}
        if grads:
            # saved inside a gradient-accumulation window (after an optimizer step they are None): the gradients
            # summed so far belong to the resumed run's next step
            checkpoint[GRADS_KEY] = grads

    def load(self, checkpoint: dict[str, Any], fitting: bool) -> None:
        """Keep what :meth:`save` wrote, for :meth:`restore`; only when resuming a fit (evaluation draws nothing)."""
        if fitting and isinstance(checkpoint.get(RNG_KEY), dict):
            self._rng = checkpoint[RNG_KEY]
        if fitting and isinstance(checkpoint.get(GRADS_KEY), dict):
            self._grads = checkpoint[GRADS_KEY]

    def restore(self, module: nn.Module) -> None:
        """Put the kept state back (call in ``on_train_start``, after the loaders started); then forget it."""
        if self._rng is not None:
            restore_rng_state(self._rng)
            self._rng = None
        if self._grads is not None:
            for name, param in module.named_parameters():
                if name in self._grads:
                    param.grad = self._grads[name].to(param.device, param.dtype)
            self._grads = None
