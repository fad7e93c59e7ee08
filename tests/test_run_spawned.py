"""tests/conftest.py::run_spawned forgives gloo's abort at exit and nothing else."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from torch.multiprocessing import ProcessExitedException

from tests.conftest import GLOO_EXIT_ABORT, run_spawned


def dies(signal_name: str, worker_says: str):
    def run():
        # a child process writes to the inherited fd 2, as a spawned DDP worker does
        subprocess.run([sys.executable, "-c", f"import sys; sys.stderr.write({worker_says!r})"], check=True)
        raise ProcessExitedException(f"process 1 terminated with signal {signal_name}", 1, os.getpid(), -6, signal_name)

    return run


def test_the_gloo_abort_after_every_rank_finished_is_forgiven(tmp_path: Path):
    (tmp_path / "rank0.pt").touch()
    with pytest.warns(UserWarning, match="a DDP worker aborted during shutdown"):
        assert run_spawned(dies("SIGABRT", GLOO_EXIT_ABORT), written=[tmp_path / "rank0.pt"]) is None


@pytest.mark.parametrize(
    ("signal_name", "worker_says", "finished"),
    [
        ("SIGABRT", "Assertion `x' failed.", True),  # another abort
        ("SIGSEGV", GLOO_EXIT_ABORT, True),  # another signal
        ("SIGABRT", GLOO_EXIT_ABORT, False),  # a rank never got to the end
    ],
    ids=["other-message", "other-signal", "unfinished"],
)
def test_anything_else_is_raised(tmp_path: Path, signal_name: str, worker_says: str, finished: bool):
    if finished:
        (tmp_path / "rank0.pt").touch()
    with pytest.raises(ProcessExitedException):
        run_spawned(dies(signal_name, worker_says), written=[tmp_path / "rank0.pt"])
