"""PeriodicCheckpoint and PreemptionCheckpoint in a plain Lightning project, and `--ckpt_path last` resolution."""

import os
import time

import pytest
import torch
from lightning.pytorch import Callback

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import PeriodicCheckpoint, PreemptionCheckpoint
from lightning_cv.cli import find_checkpoint
from tests.conftest import make_loader, tiny_kwargs, tiny_trainer


class FailAt(Callback):
    def __init__(self, step):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise RuntimeError("out of memory (simulated)")


def test_an_exception_mid_training_leaves_a_loadable_checkpoint(tmp_path):
    preemption = PreemptionCheckpoint(dirpath=tmp_path / "ckpts")
    trainer = tiny_trainer(tmp_path, max_epochs=3, callbacks=[preemption, FailAt(step=3)])
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(num_samples=32))
    saved = torch.load(tmp_path / "ckpts" / "interrupted.ckpt", weights_only=True)
    assert saved["global_step"] == 3 and preemption.saved_path.endswith("interrupted.ckpt")
    resumed = ImageClassifier.load_from_checkpoint(tmp_path / "ckpts" / "interrupted.ckpt", weights_only=True)
    assert resumed.hparams["backbone"] == "test_resnet"


class FailAtStart(Callback):
    def on_fit_start(self, trainer, pl_module):
        raise ValueError("bad configuration (simulated)")


def test_nothing_is_saved_for_errors_outside_training(tmp_path):
    preemption = PreemptionCheckpoint(dirpath=tmp_path / "ckpts")
    trainer = tiny_trainer(tmp_path, callbacks=[preemption, FailAtStart()])
    with pytest.raises(ValueError, match="simulated"):
        trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader())
    assert not (tmp_path / "ckpts").exists() and preemption.saved_path is None


def test_periodic_checkpoints_every_n_steps_with_a_cap(tmp_path):
    periodic = PeriodicCheckpoint(every_n_steps=2, keep=2, dirpath=tmp_path / "p")
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[periodic], enable_checkpointing=True)
    trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(num_samples=48))
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["step-00000008.ckpt", "step-00000010.ckpt"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "exactly one of `every_n_steps` and `every_minutes`"),
        ({"every_n_steps": 2, "every_minutes": 1.0}, "exactly one of"),
        ({"every_n_steps": 0}, "`every_n_steps` >= 1"),
        ({"every_minutes": -1.0}, "`every_minutes` > 0"),
        ({"every_n_steps": 5, "keep": 0}, "`keep` >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PeriodicCheckpoint(**kwargs)


def test_last_means_the_newest_complete_state_of_training(tmp_path):
    for name in ("last.ckpt", "step-00000040.ckpt", "interrupted.ckpt", "best-epoch=001-val_acc=0.5.ckpt"):
        torch.save({"name": name}, tmp_path / name)
    (tmp_path / "step-00000050.ckpt").write_bytes(b"")  # cut short when its node died: skipped
    now = time.time()
    os.utime(tmp_path / "last.ckpt", (now - 30, now - 30))
    os.utime(tmp_path / "interrupted.ckpt", (now - 20, now - 20))
    os.utime(tmp_path / "step-00000040.ckpt", (now - 10, now - 10))
    assert find_checkpoint("last", tmp_path).endswith("step-00000040.ckpt")
    assert find_checkpoint("best", tmp_path).endswith("best-epoch=001-val_acc=0.5.ckpt")


def test_periodic_checkpoints_by_time_wait_for_accumulation_windows(tmp_path):
    periodic = PeriodicCheckpoint(every_minutes=1e-6, keep=10, dirpath=tmp_path / "p")  # due at every batch
    trainer = tiny_trainer(
        tmp_path, max_epochs=1, callbacks=[periodic], enable_checkpointing=True, accumulate_grad_batches=2
    )
    trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(num_samples=48))
    # 6 batches = 3 optimizer steps: saved after steps 1 and 2 (window ends), not mid-window nor at the last batch
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["step-00000001.ckpt", "step-00000002.ckpt"]


def test_last_checkpoint_is_the_newest_epoch_even_when_the_metric_stops_improving(tmp_path):
    # monitoring the step in "min" mode: only the first epoch is ever the best. Lightning 2.6's ModelCheckpoint then
    # leaves last.ckpt at that epoch; a resume from it would train the later epochs again.
    from lightning_cv.callbacks import ResumableCheckpoint

    checkpoint = ResumableCheckpoint(dirpath=tmp_path / "ckpts", monitor="step", mode="min", save_last=True)
    trainer = tiny_trainer(tmp_path, max_epochs=3, callbacks=[checkpoint], enable_checkpointing=True)
    trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(num_samples=16))
    assert checkpoint.best_model_path.endswith("step=2.ckpt")
    assert torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)["global_step"] == 6
    assert sorted(p.name for p in (tmp_path / "ckpts").iterdir()) == ["epoch=0-step=2.ckpt", "last.ckpt"]


def test_last_checkpoint_at_a_new_best_is_a_copy_of_that_file_not_a_second_serialisation(tmp_path):
    from lightning_cv.callbacks import ResumableCheckpoint
    from lightning_cv.resume import BackgroundCheckpointIO

    dumps = []

    class CountingIO(BackgroundCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            dumps.append(os.path.basename(path))
            super().save_checkpoint(checkpoint, path, storage_options)

    def run(max_epochs, ckpt_path=None):
        checkpoint = ResumableCheckpoint(dirpath=tmp_path / "ckpts", monitor="step", mode="max", save_last=True)
        trainer = tiny_trainer(
            tmp_path, max_epochs=max_epochs, callbacks=[checkpoint], enable_checkpointing=True, plugins=[CountingIO()]
        )
        trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(), ckpt_path=ckpt_path)
        return checkpoint

    run(3)  # every epoch is a new best
    # the first epoch serialises last.ckpt itself (the best file's copy of the callback state has no last file yet)
    assert dumps == ["epoch=0-step=2.ckpt", "last.ckpt", "epoch=1-step=4.ckpt", "epoch=2-step=6.ckpt"]
    folder = tmp_path / "ckpts"
    assert sorted(p.name for p in folder.iterdir()) == ["epoch=2-step=6.ckpt", "last.ckpt"]
    assert (folder / "last.ckpt").read_bytes() == (folder / "epoch=2-step=6.ckpt").read_bytes()
    # a copy, not a hard link: a writer that rewrites last.ckpt in place must not change the best file
    assert (folder / "last.ckpt").stat().st_ino != (folder / "epoch=2-step=6.ckpt").stat().st_ino
    resumed = run(4, ckpt_path=str(folder / "last.ckpt"))
    assert resumed.last_model_path == str(folder / "last.ckpt")  # not last-v1.ckpt
    assert torch.load(folder / "last.ckpt", weights_only=True)["global_step"] == 8


def test_last_checkpoint_is_serialised_with_plugins_that_may_not_have_written_the_best_yet(tmp_path):
    from lightning.pytorch.plugins.io import AsyncCheckpointIO

    from lightning_cv.callbacks import ResumableCheckpoint

    dumps = []

    class CountingAsync(AsyncCheckpointIO):
        def save_checkpoint(self, checkpoint, path, storage_options=None):
            dumps.append(os.path.basename(path))
            super().save_checkpoint(checkpoint, path, storage_options=storage_options)

    checkpoint = ResumableCheckpoint(dirpath=tmp_path / "ckpts", monitor="step", mode="max", save_last=True)
    trainer = tiny_trainer(
        tmp_path, max_epochs=2, callbacks=[checkpoint], enable_checkpointing=True, plugins=[CountingAsync()]
    )
    trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader())
    assert dumps == ["epoch=0-step=2.ckpt", "last.ckpt", "epoch=1-step=4.ckpt", "last.ckpt"]


def test_resumable_checkpoint_state_is_modelcheckpoint_state(tmp_path):
    # checkpoints from before ResumableCheckpoint (and from plain ModelCheckpoint) resume its best and last paths
    from lightning.pytorch.callbacks import ModelCheckpoint

    from lightning_cv.callbacks import ResumableCheckpoint

    ours = ResumableCheckpoint(monitor="val_acc", mode="max", save_last=True)
    assert ours.state_key == ModelCheckpoint(monitor="val_acc", mode="max", save_last=True).state_key
    assert ours.state_key.startswith("ModelCheckpoint{")
