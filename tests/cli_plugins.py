"""A callback of "your own" for the command-line tests (`LIGHTNING_CV_ALLOW_IMPORTS`)."""

from lightning.pytorch import Callback


class CountingCallback(Callback):
    fits = 0

    def on_fit_start(self, trainer, pl_module):
        type(self).fits += 1
