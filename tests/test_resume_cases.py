"""Exact resume in the corners: gradient accumulation, `limit_train_batches`, stops at an epoch's start, and a
second `fit` with the same data module. In-process Trainers on the embedded dataset; bitwise comparisons."""

from __future__ import annotations

import os
import signal

import pytest
import torch
from lightning.pytorch import Callback, Trainer, seed_everything
from lightning.pytorch.utilities.exceptions import SIGTERMException

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.callbacks import PreemptionCheckpoint

pytestmark = pytest.mark.slow


def data(dataset: str = "shapes") -> ImageDataModule:
    return ImageDataModule(
        dataset=dataset,
        image_size=32,
        dataset_kwargs={"num_train": 32, "num_val": 8, "num_test": 8, "image_size": 32},
        batch_size=4,
        num_workers=0,
        mixup_alpha=0.4,
        cutmix_alpha=1.0,
    )


class Stop(Callback):
    """Stops training like SIGTERM does (after a batch), or raises at an epoch's start."""

    MESSAGE = "stopped at the epoch's start"

    def __init__(self, epoch: int, batch: int | None = None) -> None:
        self.epoch, self.batch = epoch, batch

    def expected_error(self) -> tuple[type[BaseException], str | None]:
        """What `Trainer.fit` raises when this stop happens: Lightning's SIGTERM exit, or our own error."""
        return (SIGTERMException, None) if self.batch is not None else (RuntimeError, f"^{self.MESSAGE}$")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.batch is not None and trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it and stops after this batch

    def on_train_epoch_start(self, trainer, pl_module):
        if self.batch is None and trainer.current_epoch == self.epoch:
            raise RuntimeError(self.MESSAGE)


def fit(root, dm=None, callbacks=(), ckpt_path=None, task="multiclass", **trainer_kwargs):
    seed_everything(0)
    dm = dm or data("shapes" if task == "multiclass" else "shapes_multilabel")
    model = ImageClassifier(num_classes=6, backbone="test_resnet", pretrained=False, warmup_steps=3, task=task)
    kwargs = dict(
        accelerator="cpu",
        max_epochs=3,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(root),
    )
    trainer = Trainer(callbacks=list(callbacks), **{**kwargs, **trainer_kwargs})
    stop = next((c for c in callbacks if isinstance(c, Stop)), None)
    if stop is None:
        trainer.fit(model, dm, ckpt_path=ckpt_path)
    else:  # only the stop's own exit is expected, and it must happen
        error, message = stop.expected_error()
        with pytest.raises(error, match=message):
            trainer.fit(model, dm, ckpt_path=ckpt_path)
    return {k: v.clone() for k, v in model.state_dict().items()}, trainer.global_step


def assert_bitwise(a, b):
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@pytest.mark.parametrize(
    ("trainer_kwargs", "stop"),
    [
        ({"accumulate_grad_batches": 2}, Stop(epoch=0, batch=2)),  # inside an accumulation window
        ({"limit_train_batches": 3}, Stop(epoch=0, batch=2)),  # the epoch ends early, at the stop
    ],
    ids=["accumulation", "limit_train_batches"],
)
def test_resume_is_exact(tmp_path, trainer_kwargs, stop):
    reference, steps = fit(tmp_path / "ref", **trainer_kwargs)
    fit(tmp_path / "stop", callbacks=[stop, PreemptionCheckpoint(dirpath=tmp_path / "ck")], **trainer_kwargs)
    checkpoint = tmp_path / "ck" / "interrupted.ckpt"
    assert checkpoint.is_file()
    resumed, resumed_steps = fit(
        tmp_path / "resume", callbacks=[PreemptionCheckpoint(dirpath=tmp_path / "ck2")], ckpt_path=checkpoint,
        **trainer_kwargs,
    )  # fmt: skip
    assert resumed_steps == steps
    assert_bitwise(resumed, reference)


def test_a_stop_between_epochs_resumes_from_the_epoch_end_checkpoint(tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    reference, _ = fit(tmp_path / "ref")
    preemption = PreemptionCheckpoint(dirpath=tmp_path / "ck")
    epoch_end = ModelCheckpoint(dirpath=tmp_path / "ck", save_last=True)
    fit(tmp_path / "stop", callbacks=[Stop(epoch=1), preemption, epoch_end], enable_checkpointing=True)
    assert preemption.saved_path is None  # nothing trained since last.ckpt, which Lightning can resume exactly
    resumed, steps = fit(tmp_path / "resume", ckpt_path=tmp_path / "ck" / "last.ckpt")
    assert steps == 24
    assert_bitwise(resumed, reference)


def test_second_fit_with_the_same_data_module_resumes_its_position(tmp_path):
    reference, _ = fit(tmp_path / "ref")
    dm = data()
    fit(tmp_path / "stop", dm=dm, callbacks=[Stop(epoch=0, batch=4), PreemptionCheckpoint(dirpath=tmp_path / "ck")])
    resumed, _ = fit(tmp_path / "resume", dm=dm, ckpt_path=tmp_path / "ck" / "interrupted.ckpt")
    assert_bitwise(resumed, reference)


def test_multilabel_run_with_mixing_resumes_exactly_thresholds_included(tmp_path):
    """MixUp/CutMix of multi-hot targets, validation tuning the thresholds each epoch, a SIGTERM mid-epoch."""
    settings = {"task": "multilabel", "limit_val_batches": 1.0}
    reference, steps = fit(tmp_path / "ref", **settings)
    assert not torch.equal(reference["decision._extra_state"], torch.full((6,), 0.5))  # tuned, so compared below
    fit(tmp_path / "stop", callbacks=[Stop(epoch=1, batch=3), PreemptionCheckpoint(dirpath=tmp_path / "ck")],
        **settings)  # fmt: skip
    resumed, resumed_steps = fit(tmp_path / "resume", ckpt_path=tmp_path / "ck" / "interrupted.ckpt", **settings)
    assert resumed_steps == steps
    assert_bitwise(resumed, reference)
