"""Shared helpers: tiny in-memory data and a tiny CPU Trainer."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# the data module's file-index cache: one per test session, not the user's ~/.cache (subprocesses inherit it)
os.environ.setdefault("LIGHTNING_CV_CACHE", tempfile.mkdtemp(prefix="lcv-index-"))
# One intra-op thread per core a test process may call its own. Two processes that each run two OpenMP threads on the
# same two cores (two pytest-xdist workers) wait on each other's descheduled threads and slow down many times over.
_XDIST_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
_THREADS = max(1, min(2, (os.cpu_count() or 1) // _XDIST_WORKERS))
if _XDIST_WORKERS > 1:
    # the command-line subprocesses and DDP workers a test starts share the worker's cores too (unset, torch takes
    # every core, and Lightning's DDP takes cores / processes)
    os.environ.setdefault("OMP_NUM_THREADS", str(_THREADS))
torch.set_num_threads(_THREADS)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under pytest-xdist, hand out the files that hold `slow` tests first.

    ``--dist loadfile`` deals out whole files in collection order; a long file dealt out last keeps one worker busy
    while the other idles (longest first is the usual cure). A plain run keeps the collection order.
    """
    if "PYTEST_XDIST_WORKER" not in os.environ:
        return
    heavy = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in heavy)  # a stable sort: each file's own order is kept


def make_loader(
    num_samples: int = 16,
    num_classes: int = 3,
    size: int = 32,
    batch_size: int = 8,
    seed: int = 0,
    shuffle: bool = False,
) -> DataLoader:
    """Images whose class shifts the mean brightness, so a model can learn something in a few steps."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_samples) % num_classes
    images = torch.randn(num_samples, 3, size, size, generator=g) * 0.5 + labels.view(-1, 1, 1, 1).float() - 1.0
    return DataLoader(TensorDataset(images, labels), batch_size=batch_size, shuffle=shuffle)


def tiny_trainer(root: Path, **kwargs: Any) -> Trainer:
    defaults: dict[str, Any] = dict(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(root),
        num_sanity_val_steps=0,
    )
    defaults.update(kwargs)
    return Trainer(**defaults)


@pytest.fixture
def loader() -> DataLoader:
    return make_loader()


#: the four tiny timm architectures every architecture-free feature is tested on
TINY_BACKBONES = ["test_resnet", "test_vit", "test_efficientnet", "test_convnext"]


def tiny_kwargs(backbone: str, size: int = 32) -> dict[str, Any]:
    """Arguments that make a tiny backbone run on ``size`` px images without pretrained weights."""
    kwargs: dict[str, Any] = {"backbone": backbone, "pretrained": False}
    if "vit" in backbone:
        kwargs["backbone_kwargs"] = {"img_size": size}
    return kwargs


#: `lightning-cv` arguments for a tiny run: test_resnet on 24 shapes at 32 px, no progress bar, no gallery
TINY_CLI = [
    "--model.backbone=test_resnet",
    "--model.pretrained=false",
    "--data.image_size=32",
    "--data.dataset_kwargs={num_train: 24, num_val: 12, num_test: 12, image_size: 32}",
    "--data.batch_size=12",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
    "--gallery_images=0",
]


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test inside its own temporary folder (the command line writes `runs/` below the working folder)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def cli_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A checkpoint written by `lightning-cv fit` with :data:`TINY_CLI` (one epoch), shared by the CLI tests."""
    from lightning_cv.cli import LightningCVCLI

    root = tmp_path_factory.mktemp("cli-fit")
    cli = LightningCVCLI(
        args=["fit", *TINY_CLI, "--trainer.max_epochs=1", f"--trainer.logger.init_args.save_dir={root / 'runs'}"]
    )
    return str(cli.trainer.checkpoint_callback.best_model_path)


#: what libstdc++ prints when gloo's worker threads are still joinable as a spawned DDP worker exits
GLOO_EXIT_ABORT = "terminate called without an active exception"


def run_spawned(fit_or_validate: Callable[[], Any], *, written: Sequence[Path]) -> Any:
    """Run a ``ddp_spawn`` Trainer call; tolerate only the known gloo abort while worker processes shut down.

    With torch 2.14 and gloo, a spawned worker sometimes aborts ("terminate called without an active exception")
    while its process exits, after the run itself finished. The DDP tests therefore assert on files each rank
    wrote before the end (``written``), and only this abort is forgiven here: the worker died of SIGABRT, the
    workers' stderr holds exactly that message, and every file in ``written`` exists, so every rank got to the end.
    Any other failure is raised, with the workers' stderr printed.
    """
    import warnings

    from torch.multiprocessing import ProcessExitedException

    with tempfile.TemporaryFile() as log:
        try:
            with _stderr_fd_to(log):  # spawned workers inherit fd 2: this is where their dying words go
                return fit_or_validate()
        except ProcessExitedException as err:
            log.seek(0)
            aborted_at_exit = err.signal_name == "SIGABRT" and GLOO_EXIT_ABORT in log.read().decode(errors="replace")
            if not aborted_at_exit or not all(Path(path).is_file() for path in written):
                raise
            warnings.warn(f"a DDP worker aborted during shutdown: {err}", stacklevel=2)
            return None
        finally:
            log.seek(0)
            sys.stderr.write(log.read().decode(errors="replace"))  # shown with the test's report, as before


@contextlib.contextmanager
def _stderr_fd_to(sink: IO[bytes]) -> Iterator[None]:
    """Point file descriptor 2 at ``sink`` (C++ and child processes write there, not to ``sys.stderr``)."""
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(sink.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
