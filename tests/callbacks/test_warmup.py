import math

import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from torch import nn

from lightning_cv.callbacks import LinearWarmup
from tests.conftest import make_loader, tiny_trainer

BASE_LR = 0.1


class PlainModule(LightningModule):
    """A module in the plain style of Lightning's examples, with its own per-step cosine schedule."""

    def __init__(self, total_steps: int, scheduler: str = "cosine"):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))
        self.total_steps = total_steps
        self.scheduler = scheduler

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=BASE_LR, momentum=0.9)
        if self.scheduler == "none":
            return opt
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.total_steps)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


class EffectiveLR(Callback):
    """The LR each optimizer step really uses: read inside optimizer.step, after LinearWarmup scaled it."""

    def __init__(self):
        self.lrs: list[float] = []

    def on_train_start(self, trainer, pl_module):
        trainer.optimizers[0].register_step_pre_hook(lambda opt, a, k: self.lrs.append(opt.param_groups[0]["lr"]))


def cosine(step, total):
    return BASE_LR * 0.5 * (1 + math.cos(math.pi * step / total))


def warm(step, steps, start):
    return start + (1 - start) * step / steps if step < steps else 1.0


@pytest.mark.parametrize("accumulate", [1, 2])
def test_warmup_on_a_foreign_cosine_schedule_matches_the_formula(tmp_path, accumulate):
    total = 3 * 8 // accumulate  # 3 epochs of 8 batches
    rec = EffectiveLR()
    trainer = tiny_trainer(
        tmp_path,
        max_epochs=3,
        accumulate_grad_batches=accumulate,
        callbacks=[LinearWarmup(warmup_steps=5, start_factor=0.1), rec],
    )
    trainer.fit(PlainModule(total), make_loader(num_samples=16, batch_size=2))
    expected = [cosine(s, total) * warm(s, 5, 0.1) for s in range(total)]
    assert rec.lrs == pytest.approx(expected, rel=1e-9)
    final = trainer.optimizers[0].param_groups[0]["lr"]
    assert final == pytest.approx(cosine(total, total), abs=1e-12)  # the schedule itself never saw the scaling


def test_warmup_in_epochs_without_a_scheduler(tmp_path):
    rec = EffectiveLR()
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[LinearWarmup(warmup_epochs=0.5, start_factor=0.0), rec]).fit(
        PlainModule(0, scheduler="none"), make_loader(num_samples=16, batch_size=2)
    )
    assert rec.lrs == pytest.approx([BASE_LR * min(1.0, s / 4) for s in range(16)])


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_resume_keeps_the_warmup_curve(tmp_path):
    torch.manual_seed(0)
    full = EffectiveLR()  # 3 epochs of 8 steps, the warmup (12 steps) spans the interruption after epoch 1
    tiny_trainer(tmp_path / "a", max_epochs=3, callbacks=[LinearWarmup(warmup_steps=12), full]).fit(
        PlainModule(24), make_loader(num_samples=16, batch_size=2)
    )
    first = tiny_trainer(tmp_path / "b", max_epochs=3, callbacks=[LinearWarmup(warmup_steps=12), StopAfterFirstEpoch()])
    first.fit(PlainModule(24), make_loader(num_samples=16, batch_size=2))
    first.save_checkpoint(tmp_path / "mid.ckpt")
    resumed = EffectiveLR()
    tiny_trainer(tmp_path / "b", max_epochs=3, callbacks=[LinearWarmup(warmup_steps=12), resumed]).fit(
        PlainModule(24), make_loader(num_samples=16, batch_size=2), ckpt_path=str(tmp_path / "mid.ckpt")
    )
    assert len(resumed.lrs) == 16
    assert resumed.lrs == pytest.approx(full.lrs[8:], rel=1e-12)


def test_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        LinearWarmup(warmup_steps=5, warmup_epochs=1)
    with pytest.raises(ValueError, match="a warmup of length 0 does nothing"):
        LinearWarmup()
    with pytest.raises(ValueError, match=r"Expected `start_factor` in \[0, 1\], but got 2"):
        LinearWarmup(warmup_steps=3, start_factor=2)


class OneCycleModule(PlainModule):
    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=BASE_LR)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=BASE_LR, total_steps=8)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def test_warns_on_a_schedule_that_warms_up_already(tmp_path):
    with pytest.warns(UserWarning, match="OneCycleLR schedule, which already warms up"):
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[LinearWarmup(warmup_steps=2)]).fit(
            OneCycleModule(8), make_loader(num_samples=16, batch_size=2)
        )
