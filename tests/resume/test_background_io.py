"""BackgroundCheckpointIO: the state of the step asked for, atomic files, removals and loads ordered behind writes."""

import threading

import pytest
import torch

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import PreemptionCheckpoint, ResumableCheckpoint
from lightning_cv.resume import BackgroundCheckpointIO, wait_for_checkpoints
from lightning_cv.resume import background_io as module
from tests.conftest import make_loader, tiny_kwargs, tiny_trainer
from tests.resume.test_checkpointing import FailAt


def plain_io():
    from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

    return BackgroundCheckpointIO(TorchCheckpointIO())


@pytest.fixture
def slow_writes(monkeypatch):
    """Hold every background write until the test releases it."""
    gate = threading.Event()
    write = module._write_atomically

    def held(checkpoint, path):
        gate.wait(timeout=30)
        write(checkpoint, path)

    monkeypatch.setattr(module, "_write_atomically", held)
    return gate


def test_the_file_holds_the_state_at_the_save_even_when_training_changes_it_at_once(tmp_path, slow_writes):
    io = plain_io()
    weights = torch.zeros(1000)
    io.save_checkpoint({"state_dict": {"w": weights}, "global_step": 7}, tmp_path / "a.ckpt")
    weights.add_(1.0)  # the next optimizer step, in place, before the write has even started
    assert not (tmp_path / "a.ckpt").exists()  # written in the background: the caller did not wait
    slow_writes.set()
    io.wait()
    saved = torch.load(tmp_path / "a.ckpt", weights_only=True)
    assert saved["global_step"] == 7 and torch.equal(saved["state_dict"]["w"], torch.zeros(1000))
    io.teardown()


def test_a_removal_waits_for_the_pending_write_of_the_same_file(tmp_path, slow_writes):
    io = plain_io()
    io.save_checkpoint({"x": torch.ones(3)}, tmp_path / "best.ckpt")
    io.remove_checkpoint(tmp_path / "best.ckpt")  # superseded before it was even written
    slow_writes.set()
    io.wait()
    assert not (tmp_path / "best.ckpt").exists()  # out of order, the write would have recreated it
    io.teardown()


def test_a_load_waits_for_pending_writes(tmp_path, slow_writes):
    io = plain_io()
    io.save_checkpoint({"x": torch.arange(4)}, tmp_path / "a.ckpt")
    threading.Timer(0.2, slow_writes.set).start()
    assert torch.equal(io.load_checkpoint(tmp_path / "a.ckpt")["x"], torch.arange(4))
    io.teardown()


def test_a_failed_write_keeps_the_old_file_leaves_no_partial_one_and_is_reported(tmp_path, monkeypatch):
    io = plain_io()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"version": torch.tensor(1)}, path)
    io.wait()

    def disk_full(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.torch, "save", disk_full)
    io.save_checkpoint({"version": torch.tensor(2)}, path)
    with pytest.raises(OSError, match="No space left"):
        io.wait()
    monkeypatch.undo()
    assert int(torch.load(path, weights_only=True)["version"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]
    io.save_checkpoint({"version": torch.tensor(3)}, path)  # the error was reported once; saving goes on
    io.teardown()
    assert int(torch.load(path, weights_only=True)["version"]) == 3


def test_under_a_trainer_the_checkpoint_folder_ends_as_with_synchronous_writes(tmp_path):
    checkpoint = ResumableCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_acc", mode="max", save_last=True)
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet"))
    trainer = tiny_trainer(
        tmp_path, max_epochs=3, callbacks=[checkpoint], plugins=[BackgroundCheckpointIO()], enable_checkpointing=True
    )
    assert isinstance(trainer.strategy.checkpoint_io, BackgroundCheckpointIO)
    trainer.fit(model, make_loader(num_samples=16), make_loader(num_samples=8))
    files = sorted(p.name for p in (tmp_path / "ckpts").iterdir())
    assert files == sorted(["last.ckpt", checkpoint.best_model_path.rsplit("/", 1)[-1]])  # older bests removed
    last = torch.load(tmp_path / "ckpts" / "last.ckpt", weights_only=True)
    assert last["global_step"] == trainer.global_step == 6
    assert torch.equal(last["state_dict"]["model.fc.weight"], model.model.fc.weight.detach())


def test_a_preemption_checkpoint_is_on_disk_before_the_run_ends(tmp_path, slow_writes):
    preemption = PreemptionCheckpoint(dirpath=tmp_path / "ckpts")
    io = BackgroundCheckpointIO()
    trainer = tiny_trainer(tmp_path, max_epochs=3, callbacks=[preemption, FailAt(step=3)], plugins=[io])
    threading.Timer(0.3, slow_writes.set).start()
    waited = []
    original = io.wait
    io.wait = lambda: (waited.append(True), original())[1]  # type: ignore[method-assign]
    with pytest.raises(RuntimeError, match="simulated"):
        trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader(num_samples=32))
    assert waited  # the callback waited for the write instead of reporting a file that was not there yet
    assert torch.load(tmp_path / "ckpts" / "interrupted.ckpt", weights_only=True)["global_step"] == 3


def test_waiting_is_a_no_op_for_synchronous_plugins(tmp_path):
    trainer = tiny_trainer(tmp_path)
    wait_for_checkpoints(trainer)  # TorchCheckpointIO has nothing pending and no wait()


def test_a_superseded_checkpoint_is_kept_when_its_successor_could_not_be_written(tmp_path, monkeypatch):
    io = plain_io()
    io.save_checkpoint({"epoch": torch.tensor(1)}, tmp_path / "best-1.ckpt")
    io.wait()

    def disk_full(obj, f, *args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(module.torch, "save", disk_full)
    io.save_checkpoint({"epoch": torch.tensor(2)}, tmp_path / "best-2.ckpt")
    io.remove_checkpoint(tmp_path / "best-1.ckpt")  # what ModelCheckpoint does right after asking for the new best
    io.copy_checkpoint(tmp_path / "best-2.ckpt", tmp_path / "last.ckpt")
    with pytest.raises(OSError, match="No space left"):
        io.wait()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best-1.ckpt"]  # the only good checkpoint survives
    io.teardown()


def test_at_most_one_write_is_pending(tmp_path, slow_writes):
    io = plain_io()
    io.save_checkpoint({"x": torch.zeros(3)}, tmp_path / "a.ckpt")
    done = threading.Event()

    def second():
        io.save_checkpoint({"x": torch.ones(3)}, tmp_path / "b.ckpt")
        done.set()

    threading.Thread(target=second).start()
    assert not done.wait(0.3)  # the second save waits for the first write instead of queuing another copy
    slow_writes.set()
    assert done.wait(10)
    io.teardown()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.ckpt", "b.ckpt"]


def test_teardown_reports_a_failure_once(tmp_path, monkeypatch):
    io = plain_io()

    def broken(obj, f, *args, **kwargs):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(module.torch, "save", broken)
    io.save_checkpoint({"x": torch.zeros(1)}, tmp_path / "a.ckpt")
    with pytest.raises(OSError, match="Input/output"):
        io.teardown()
    io.teardown()  # a Trainer used again does not see the old failure again
