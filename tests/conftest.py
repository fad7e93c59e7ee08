"""Shared helpers: tiny in-memory data and a tiny CPU Trainer."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader, TensorDataset

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
# the data module's file-index cache: one per test session, not the user's ~/.cache (subprocesses inherit it)
os.environ.setdefault("LIGHTNING_CV_CACHE", tempfile.mkdtemp(prefix="lcv-index-"))
torch.set_num_threads(min(2, os.cpu_count() or 1))


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


def run_spawned(fit_or_validate: Any) -> Any:
    """Run a ``ddp_spawn`` Trainer call; tolerate only the known gloo abort while worker processes shut down.

    With torch 2.14 and gloo, a spawned worker sometimes aborts ("terminate called without an active exception")
    while its process exits, after the run itself finished. The DDP tests therefore assert on files each rank
    wrote before the end, and only this abort is forgiven here; any other failure is raised.
    """
    import warnings

    from torch.multiprocessing import ProcessExitedException

    try:
        return fit_or_validate()
    except ProcessExitedException as err:
        if "SIGABRT" not in str(err):
            raise
        warnings.warn(f"a DDP worker aborted during shutdown: {err}", stacklevel=2)
        return None
