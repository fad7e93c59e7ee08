import pytest
import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import EMA
from lightning_cv.callbacks.ema import ema_decay
from tests.conftest import make_loader, tiny_trainer


class SmallNet(LightningModule):
    """A plain module with BatchNorm (float and integer buffers) and its own optimizer."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_acc", (self(batch[0]).argmax(1) == batch[1]).float().mean())

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class RecordWeights(Callback):
    """The raw weights after every optimizer step, to compute a reference EMA independently."""

    def __init__(self):
        self.snapshots = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.snapshots.append({k: v.detach().clone() for k, v in pl_module.state_dict().items()})


def reference_ema(snapshots, initial, decay):
    ema = {k: v.clone().double() if v.dtype.is_floating_point else v.clone() for k, v in initial.items()}
    for n, weights in enumerate(snapshots):
        d = min(decay, 1 - (1 + n) ** (-2 / 3))
        for k, v in weights.items():
            ema[k] = d * ema[k] + (1 - d) * v.double() if v.dtype.is_floating_point else v.clone()
    return ema


def test_average_matches_an_independent_reference(tmp_path):
    torch.manual_seed(0)
    module = SmallNet()
    initial = {k: v.detach().clone() for k, v in module.state_dict().items()}
    ema, rec = EMA(decay=0.9), RecordWeights()
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[rec, ema]).fit(module, make_loader())
    expected = reference_ema(rec.snapshots, initial, 0.9)
    assert ema.num_updates == len(rec.snapshots) == 4
    for key, value in module.state_dict().items():  # at the end of training the module holds the average
        if value.dtype.is_floating_point:
            torch.testing.assert_close(value.double(), expected[key], rtol=1e-5, atol=1e-6, msg=key)
        else:
            assert torch.equal(value, rec.snapshots[-1][key]), key  # num_batches_tracked: copied, not averaged
    assert int(module.state_dict()["net.1.num_batches_tracked"]) == 4


def test_decay_warmup():
    assert ema_decay(0, 0.9998) == 0.0 and ema_decay(9, 0.9998) == pytest.approx(1 - 10 ** (-2 / 3))
    assert ema_decay(10**9, 0.9998) == 0.9998 and ema_decay(0, 0.99, warmup=False) == 0.99


class WeightsSeenByValidation(Callback):
    def __init__(self):
        self.first = []

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if batch_idx == 0:
            self.first.append(pl_module.net[0].weight.detach().clone())


def test_validation_uses_raw_weights_before_the_first_update_and_the_average_after(tmp_path):
    torch.manual_seed(0)
    module = SmallNet()
    start = module.net[0].weight.detach().clone()
    seen, ema = WeightsSeenByValidation(), EMA(decay=0.5, warmup=False, log_raw_metrics=True)
    trainer = tiny_trainer(tmp_path, max_epochs=1, num_sanity_val_steps=1, callbacks=[ema, seen])
    trainer.fit(module, make_loader(), make_loader())
    assert torch.equal(seen.first[0], start)  # sanity check: no update yet, the raw (initial) weights
    assert not torch.equal(seen.first[1], start)
    assert {"val_acc_raw", "val_loss_raw", "val_acc"} <= set(trainer.callback_metrics)


def test_checkpoint_keeps_raw_weights_and_the_average_for_inference(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.05)
    ckpt_cb = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    ema, rec = EMA(decay=0.5), RecordWeights()
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[rec, ema, ckpt_cb], enable_checkpointing=True)
    trainer.fit(model, make_loader(), make_loader())
    raw = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    key = "model.conv1.0.weight"
    # resuming without the callback continues the real training: state_dict holds the raw weights
    torch.testing.assert_close(raw["state_dict"][key], rec.snapshots[-1][key], rtol=0, atol=0)
    assert not torch.equal(raw["state_dict"][key], raw["ema_state_dict"][key])
    torch.testing.assert_close(model.state_dict()[key], raw["ema_state_dict"][key])  # the module ends on the average
    after = tmp_path / "after.ckpt"
    trainer.save_checkpoint(after)  # saved after training: still raw in state_dict, the average beside it
    saved = torch.load(after, weights_only=True)
    torch.testing.assert_close(saved["state_dict"][key], rec.snapshots[-1][key], rtol=0, atol=0)
    reloaded = ImageClassifier.load_from_checkpoint(tmp_path / "ckpt" / "last.ckpt")
    torch.testing.assert_close(reloaded.state_dict()[key], raw["ema_state_dict"][key])  # inference: the average


class StopAfterFirstEpoch(Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_crash_and_resume_gives_the_same_average(tmp_path):
    def module():
        torch.manual_seed(0)
        return SmallNet()

    straight = EMA(decay=0.8)
    tiny_trainer(tmp_path / "a", max_epochs=3, callbacks=[straight]).fit(module(), make_loader())
    first = tiny_trainer(tmp_path / "b", max_epochs=3, callbacks=[EMA(decay=0.8), StopAfterFirstEpoch()])
    first.fit(module(), make_loader())
    first.save_checkpoint(tmp_path / "mid.ckpt")
    resumed_ema = EMA(decay=0.8)
    resumed = module()
    tiny_trainer(tmp_path / "b", max_epochs=3, callbacks=[resumed_ema]).fit(
        resumed, make_loader(), ckpt_path=str(tmp_path / "mid.ckpt")
    )
    assert resumed_ema.num_updates == straight.num_updates == 6
    reference = module()
    tiny_trainer(tmp_path / "c", max_epochs=3, callbacks=[EMA(decay=0.8)]).fit(reference, make_loader())
    for (name, a), (_, b) in zip(reference.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name  # bitwise, on the CPU


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected `decay` in \(0, 1\), but got 1.0"):
        EMA(decay=1.0)


def test_update_every_n_steps_and_cpu_copy(tmp_path):
    torch.manual_seed(0)
    ema = EMA(decay=0.9, update_every_n_steps=2, cpu_offload=True)
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[ema]).fit(SmallNet(), make_loader(num_samples=24, batch_size=4))
    assert ema.num_updates == 6  # 12 optimizer steps, every second one
    assert all(t.device.type == "cpu" for t in ema._ema.values())


def test_raw_metrics_exist_before_the_first_update(tmp_path):
    ema = EMA(decay=0.9, update_every_n_steps=100, log_raw_metrics=True)
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[ema])
    trainer.fit(SmallNet(), make_loader(), make_loader())
    assert ema.num_updates == 0 and "val_acc_raw" in trainer.callback_metrics


def test_reused_for_another_model_starts_afresh(tmp_path):
    ema = EMA(decay=0.5)
    tiny_trainer(tmp_path / "a", max_epochs=1, callbacks=[ema]).fit(SmallNet(), make_loader())
    torch.manual_seed(1)
    second = SmallNet()
    start = second.net[0].weight.detach().clone()
    seen = WeightsSeenByValidation()
    tiny_trainer(tmp_path / "b", max_epochs=1, num_sanity_val_steps=1, callbacks=[ema, seen]).fit(
        second, make_loader(), make_loader()
    )
    assert torch.equal(seen.first[0], start)  # not the first model's weights
    assert ema.num_updates == 2


def test_warns_when_checkpoints_cannot_hold_the_average(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_weights_only=True)
    with pytest.warns(UserWarning, match="save_weights_only=True"):
        tiny_trainer(tmp_path, max_epochs=1, callbacks=[EMA(), ckpt], enable_checkpointing=True).fit(
            SmallNet(), make_loader()
        )
