"""The ``lightning-cv`` command line, the only command-line layer of the package.

* :mod:`~lightning_cv.cli.main`: the entry point, dispatching to the subcommands;
* :mod:`~lightning_cv.cli.train`: ``fit``/``validate``/``test``/``predict`` (LightningCLI);
* :mod:`~lightning_cv.cli.deploy`: ``export``/``benchmark``/``explain`` (jsonargparse, same parser class);
* :mod:`~lightning_cv.cli.parsing`: one-line errors shared by all of them;
* :mod:`~lightning_cv.cli.checkpoint_settings`, :mod:`~lightning_cv.cli.runs`: a checkpoint's settings against the
  user's, and run folders.

Nothing below ``lightning_cv`` imports this package: the library works without its command line.
"""

from lightning_cv.cli.checkpoint_settings import apply_checkpoint_settings
from lightning_cv.cli.main import console_main, main
from lightning_cv.cli.parsing import short_error
from lightning_cv.cli.train import LightningCVCLI
from lightning_cv.models.checkpoint import find_checkpoint

__all__ = ["LightningCVCLI", "apply_checkpoint_settings", "console_main", "find_checkpoint", "main", "short_error"]

_console_main = console_main  # the console script's entry point in installs made before the package existed
