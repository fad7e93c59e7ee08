"""Exact resume after SIGKILL or preemption, and the same training on 1 or 2 processes.

Every run is a real `lightning-cv fit` subprocess on the embedded dataset: a tiny ResNet with RandAugment, MixUp and
CutMix, a frozen stem thawed at epoch 1, LR warmup and EMA, `deterministic=True`. "Bitwise" means `torch.equal`
on every tensor of the final checkpoint: weights, EMA weights, optimizer state and LR schedule.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.conftest import GLOO_EXIT_ABORT

ROOT = Path(__file__).resolve().parents[1]
STEPS_PER_EPOCH = 6  # 48 training images, batch 8
# two epochs: every resume point below is still followed by an epoch's end, and those in epoch 0 by the unfreeze at
# epoch 1 (a third epoch lengthened each of the 13 runs and reached no further case)
EPOCHS = 2

pytestmark = pytest.mark.slow


def fit_args(ckpt_dir: Path, *, workers: int = 0, batch_size: int = 8, mixing: bool = True, **extra: str) -> list[str]:
    args = [
        "fit",
        "--seed_everything=0",
        "--trainer.accelerator=cpu",
        "--trainer.deterministic=true",
        f"--trainer.max_epochs={EPOCHS}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        "--trainer.num_sanity_val_steps=0",
        "--model.backbone=test_resnet",
        "--model.pretrained=false",
        "--model.lr=0.01",
        "--model.warmup_steps=4",
        "--model.freeze_layers=1",
        "--model.unfreeze_milestones=[1]",
        "--data.dataset=shapes",
        "--data.image_size=32",
        "--data.dataset_kwargs={num_train: 48, num_val: 16, num_test: 8, image_size: 32}",
        f"--data.batch_size={batch_size}",
        f"--data.num_workers={workers}",
        "--gallery_images=0",
        f"--checkpoint.dirpath={ckpt_dir}",
        "--checkpoint.save_top_k=-1",
        "--checkpoint_every_n_steps=1",
        "--checkpoint_keep=100",
        "--trainer.callbacks+=lightning_cv.callbacks.EMA",
        "--trainer.callbacks.decay=0.9",
    ]
    if mixing:
        args += ["--data.mixup_alpha=0.4", "--data.cutmix_alpha=1.0"]
    return args + [f"--{key}={value}" for key, value in extra.items()]


def run_cli(args: list[str], cwd: Path, timeout: float = 300, processes: int = 1) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "lightning_cv", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    output = result.stdout + result.stderr
    # torch 2.14 + gloo: a DDP process sometimes aborts while the interpreter exits, after training finished (the
    # same known abort tests/conftest.py::run_spawned forgives); only a multi-process run has gloo to abort, and the
    # callers check the final checkpoint anyway
    gloo_exit_abort = (
        processes > 1
        and result.returncode == -signal.SIGABRT
        and GLOO_EXIT_ABORT in output
        and "`Trainer.fit` stopped" in output
    )
    assert result.returncode == 0 or gloo_exit_abort, output[-3000:]
    return result


def final_state(ckpt_dir: Path) -> dict:
    return torch.load(ckpt_dir / "last.ckpt", map_location="cpu", weights_only=True)


def assert_same_training(a: dict, b: dict, steps: int = STEPS_PER_EPOCH * EPOCHS) -> None:
    assert a["global_step"] == b["global_step"] == steps
    assert a["epoch"] == b["epoch"]
    for key in ("state_dict", "ema_state_dict"):
        assert a[key].keys() == b[key].keys()
        different = [name for name in a[key] if not torch.equal(a[key][name], b[key][name])]
        assert not different, f"{key}: {len(different)} tensors differ, e.g. {different[:3]}"
    for opt_a, opt_b in zip(a["optimizer_states"], b["optimizer_states"], strict=True):
        for index, state in opt_a["state"].items():
            for name, value in state.items():
                other = opt_b["state"][index][name]
                assert torch.equal(value, other) if isinstance(value, torch.Tensor) else value == other, (index, name)
        assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    assert a["lr_schedulers"] == b["lr_schedulers"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One uninterrupted run per worker count, keeping a checkpoint after every step and every epoch."""
    runs = {}
    for workers in (0, 2):
        root = tmp_path_factory.mktemp(f"reference{workers}")
        run_cli(fit_args(root / "ckpts", workers=workers), cwd=root)
        runs[workers] = root / "ckpts"
    return runs


def test_worker_count_does_not_change_training(reference):
    # augmentation is seeded per (seed, epoch, image), not per worker process
    assert_same_training(final_state(reference[0]), final_state(reference[2]))


@pytest.mark.parametrize(
    ("workers", "resume_from"),
    [
        (0, "step-00000003.ckpt"),  # mid-epoch, during warmup, backbone partly frozen
        (0, f"step-{STEPS_PER_EPOCH - 1:08d}.ckpt"),  # one batch before the epoch's end
        (2, "best-000-*.ckpt"),  # at the epoch boundary, after validation
        (2, f"step-{STEPS_PER_EPOCH + 4:08d}.ckpt"),  # mid-epoch after the unfreeze, with worker processes
    ],
)
def test_resume_from_any_checkpoint_is_bitwise_exact(reference, tmp_path, workers, resume_from):
    source = next(reference[workers].glob(resume_from.replace("best-000-", "best-epoch=000-")))
    run_cli([*fit_args(tmp_path / "ckpts", workers=workers), f"--ckpt_path={source}"], cwd=tmp_path)
    assert_same_training(final_state(tmp_path / "ckpts"), final_state(reference[workers]))


def wait_for_step(ckpt_dir: Path, step: int, process: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(int(p.stem.split("-")[1]) >= step for p in ckpt_dir.glob("step-*.ckpt")):
            return
        if process.poll() is not None:
            raise AssertionError(f"training ended before step {step}: {process.stderr.read()[-2000:]}")
        time.sleep(0.05)
    raise AssertionError(f"no checkpoint of step {step} within {timeout} s")


def kill_step() -> int:
    """The step after which to SIGKILL: ``LCV_KILL_STEP`` if set (to replay a failure), else drawn from the clock."""
    last = STEPS_PER_EPOCH * EPOCHS - 3  # leave the resumed run a few steps to train
    chosen = os.environ.get("LCV_KILL_STEP")
    if chosen is None:
        return random.Random(os.environ.get("PYTEST_XDIST_WORKER", "") + str(time.time())).randint(2, last)
    if not chosen.isdigit() or not 2 <= int(chosen) <= last:
        raise ValueError(f"Expected `LCV_KILL_STEP` to be an integer in [2, {last}], but got {chosen!r}.")
    return int(chosen)


def test_sigkill_at_a_random_step_then_resume_last(reference, tmp_path):
    step = kill_step()
    print(f"killing after step {step} (replay with LCV_KILL_STEP={step})")
    ckpt_dir = tmp_path / "ckpts"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_cv", *fit_args(ckpt_dir, workers=2)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        start_new_session=True,  # the kill takes the worker processes down too
    )
    try:
        wait_for_step(ckpt_dir, step, process)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    for path in ckpt_dir.glob("*.ckpt"):  # no checkpoint is left half-written
        torch.load(path, map_location="cpu", weights_only=True)
    run_cli([*fit_args(ckpt_dir, workers=2), "--ckpt_path=last"], cwd=tmp_path)
    assert_same_training(final_state(ckpt_dir), final_state(reference[2]))


def test_sigterm_saves_a_checkpoint_and_exits_for_requeue(reference, tmp_path):
    ckpt_dir = tmp_path / "ckpts"
    process = subprocess.Popen(
        [sys.executable, "-m", "lightning_cv", *fit_args(ckpt_dir)],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    wait_for_step(ckpt_dir, 4, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr
    saved = torch.load(ckpt_dir / "interrupted.ckpt", map_location="cpu", weights_only=True)
    assert 4 <= saved["global_step"] < STEPS_PER_EPOCH * EPOCHS
    run_cli([*fit_args(ckpt_dir), "--ckpt_path=last"], cwd=tmp_path)
    assert_same_training(final_state(ckpt_dir), final_state(reference[0]))


def test_periodic_checkpoints_are_capped(tmp_path):
    run_cli(
        [*fit_args(tmp_path / "ckpts", mixing=False), "--checkpoint_keep=2", "--trainer.max_epochs=1"], cwd=tmp_path
    )
    assert sorted(p.name for p in (tmp_path / "ckpts").glob("step-*.ckpt")) == [
        f"step-{STEPS_PER_EPOCH - 2:08d}.ckpt",
        f"step-{STEPS_PER_EPOCH - 1:08d}.ckpt",  # not the last batch: the epoch-end checkpoint follows validation
    ]


# ------------------------------------------------------------------------------------------------ several processes
def ddp_args(ckpt_dir: Path, processes: int, log_dir: Path) -> list[str]:
    """The same recipe and global batch (16) on 1 or 2 processes.

    A model with LayerNorm (ConvNeXt): BatchNorm statistics are per process unless synced, and PyTorch's SyncBatchNorm
    runs on GPUs only. No mixing: each process mixes the images of its own share of the batch.
    """
    return [
        *fit_args(ckpt_dir, batch_size=16 // processes, mixing=False),
        "--model.backbone=test_convnext",
        f"--trainer.devices={processes}",
        f"--trainer.strategy={'ddp' if processes > 1 else 'auto'}",
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        f"--trainer.logger.init_args.save_dir={log_dir}",
        "--trainer.logger.init_args.name=run",
        "--trainer.logger.init_args.version=0",
    ]


def val_metrics(log_dir: Path) -> list[dict[str, float]]:
    import csv

    rows = list(csv.DictReader((log_dir / "run" / "version_0" / "metrics.csv").open()))
    return [{k: float(v) for k, v in row.items() if v and k.startswith("val_")} for row in rows if row.get("val_loss")]


@pytest.fixture(scope="module")
def ddp_reference(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp")
    run_cli(ddp_args(root / "ckpts", 2, root / "logs"), cwd=root, timeout=600, processes=2)
    return root


def test_two_processes_train_like_one_with_the_same_global_batch(ddp_reference, tmp_path):
    run_cli(ddp_args(tmp_path / "ckpts", 1, tmp_path / "logs"), cwd=tmp_path)
    one, two = val_metrics(tmp_path / "logs"), val_metrics(ddp_reference / "logs")
    assert len(one) == len(two) == EPOCHS
    for epoch, (a, b) in enumerate(zip(one, two, strict=True)):
        # stated tolerance: float summation order differs (gloo all-reduce, synced BatchNorm statistics)
        assert abs(a["val_loss"] - b["val_loss"]) < 1e-3, (epoch, a, b)
        assert a["val_acc"] == b["val_acc"], (epoch, a, b)
    single, ddp = final_state(tmp_path / "ckpts")["state_dict"], final_state(ddp_reference / "ckpts")["state_dict"]
    worst = max(float((single[k].float() - ddp[k].float()).abs().max()) for k in single)
    assert worst < 1e-3, worst


def test_resume_under_ddp_is_bitwise_exact(ddp_reference, tmp_path):
    source = ddp_reference / "ckpts" / "step-00000004.ckpt"  # mid-epoch 1 (3 steps per epoch)
    run_cli(
        [*ddp_args(tmp_path / "ckpts", 2, tmp_path / "logs"), f"--ckpt_path={source}"],
        cwd=tmp_path,
        timeout=600,
        processes=2,
    )
    assert_same_training(final_state(tmp_path / "ckpts"), final_state(ddp_reference / "ckpts"), steps=3 * EPOCHS)
    # files are written once, by rank zero: one checkpoint per step and epoch, one metrics file
    assert len(list((ddp_reference / "ckpts").glob("step-*.ckpt"))) == 2 * EPOCHS  # not at each epoch's last batch
