"""``lightning-cv`` and ``python -m lightning_cv``: one entry point for every subcommand."""

from __future__ import annotations

import os
import sys
import warnings

from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_cv.cli.parsing import check_config_files, error_line

__all__ = ["console_main", "main"]


def main(args: list[str] | None = None) -> int:
    """Entry point of ``lightning-cv`` and ``python -m lightning_cv``; returns the exit code.

    ``fit``, ``validate``, ``test`` and ``predict`` go to :class:`~lightning_cv.cli.train.LightningCVCLI`;
    ``calibrate``, ``export``, ``benchmark``, ``explain``, ``shard`` and ``package`` to
    :func:`lightning_cv.cli.deploy.run_deploy_command`. Bad input
    (``ValueError``, ``TypeError``, ``OSError`` such as a missing file or a failed download, an export failure, a
    Trainer setting the machine cannot run) is one line on stderr and exit code 2; argument errors exit with 2
    through the parser.
    """
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from lightning_cv.deploy.onnx import ExportError
    from lightning_cv.resume.checkpointing import PREEMPTED_EXIT_CODE

    warnings.filterwarnings("ignore", message=r".*litlogger.*")
    argv = list(sys.argv[1:] if args is None else args)
    try:
        check_config_files(argv)
        from lightning_cv.cli.deploy import DEPLOY_COMMANDS, run_deploy_command

        if argv and argv[0] in DEPLOY_COMMANDS:
            return run_deploy_command(argv[0], argv[1:])
        from lightning_cv.cli.train import LightningCVCLI

        LightningCVCLI(args=args)
        _close_process_group()
    except SIGTERMException:
        # PreemptionCheckpoint has saved the run; a non-zero status tells the scheduler to start it again
        print("lightning-cv: stopped by SIGTERM; resume with `--ckpt_path last`.", file=sys.stderr)
        return PREEMPTED_EXIT_CODE
    except (ValueError, TypeError, OSError, ExportError, MisconfigurationException) as err:
        if os.environ.get("LIGHTNING_CV_DEBUG"):
            raise
        print(error_line(err), file=sys.stderr)
        return 2
    return 0


def _close_process_group() -> None:
    """Leave the DDP process group before the interpreter exits (gloo can abort when it is torn down at exit)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def console_main() -> None:
    sys.exit(main())
