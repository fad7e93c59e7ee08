import math

import pytest
import torch
from lightning.pytorch import Callback

from lightning_cv import ImageClassifier
from lightning_cv.optim.schedules import build_scheduler
from tests.conftest import make_loader, tiny_trainer


class RecordLR(Callback):
    """The learning rate of every parameter group at each optimizer step, just before the step is taken."""

    def __init__(self):
        self.steps: list[int] = []
        self.lrs: list[list[float]] = []

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        self.steps.append(trainer.global_step)
        self.lrs.append([g["lr"] for g in optimizer.param_groups])


def expected_warmup_cosine(step, total, warmup, start, base, eta_min=0.0):
    if step < warmup:
        return base * (start + (1 - start) * step / warmup)
    t = (step - warmup) / (total - warmup)
    return eta_min + (base - eta_min) * 0.5 * (1 + math.cos(math.pi * t))


@pytest.mark.parametrize("accumulate", [1, 4])
def test_warmup_cosine_matches_formula_every_step(tmp_path, accumulate):
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=False,
        lr=0.1,
        eta_min=0.001,
        warmup_steps=3,
        warmup_start_factor=0.1,
        scheduler="cosine",
    )
    rec = RecordLR()
    trainer = tiny_trainer(tmp_path, max_epochs=5, accumulate_grad_batches=accumulate, callbacks=[rec])
    trainer.fit(model, make_loader(num_samples=32, batch_size=2))  # 16 batches an epoch
    total = 5 * 16 // accumulate
    assert rec.steps == list(range(total))
    for step, lrs in zip(rec.steps, rec.lrs, strict=True):
        want = expected_warmup_cosine(step, total, 3, 0.1, 0.1, eta_min=0.001)
        assert lrs == pytest.approx([want] * len(lrs), rel=1e-9, abs=1e-12), step


def test_warmup_in_epochs_counts_optimizer_steps(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=False,
        lr=0.01,
        warmup_epochs=1.5,
        warmup_start_factor=0.0,
        scheduler="constant",
    )
    rec = RecordLR()
    tiny_trainer(tmp_path, max_epochs=3, accumulate_grad_batches=2, callbacks=[rec]).fit(
        model, make_loader(num_samples=16, batch_size=2)
    )
    # 8 batches / 2 accumulated = 4 optimizer steps an epoch, so 1.5 epochs = 6 warmup steps
    want = [0.01 * min(1.0, s / 6) for s in range(12)]
    assert [lrs[0] for lrs in rec.lrs] == pytest.approx(want)


def test_step_schedule_with_layer_decay_keeps_group_ratios(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=False,
        lr=0.1,
        scheduler="step",
        step_size=1,
        gamma=0.5,
        layer_decay=0.5,
        optimizer="sgd",
    )
    rec = RecordLR()
    tiny_trainer(tmp_path, max_epochs=3, callbacks=[rec]).fit(model, make_loader(num_samples=16, batch_size=8))
    first = rec.lrs[0]
    for step, lrs in enumerate(rec.lrs):
        factor = 0.5 ** (step // 2)
        assert lrs == pytest.approx([f * factor for f in first])
    assert max(first) == pytest.approx(0.1) and min(first) == pytest.approx(0.1 * 0.5**5)


def test_onecycle_runs_to_the_end(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet", num_classes=3, pretrained=False, lr=0.1, scheduler="onecycle", optimizer="sgd"
    )
    rec = RecordLR()
    tiny_trainer(tmp_path, max_epochs=2, accumulate_grad_batches=2, callbacks=[rec]).fit(
        model, make_loader(num_samples=16, batch_size=2)
    )
    lrs = [g[0] for g in rec.lrs]
    assert len(lrs) == 8 and max(lrs) == pytest.approx(0.1, rel=0.05) and lrs[0] < 0.01 and lrs[-1] < 0.01


def test_onecycle_with_warmup_is_refused(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet", num_classes=3, pretrained=False, scheduler="onecycle", warmup_steps=5
    )
    with pytest.raises(ValueError, match="'onecycle' schedule already warms up"):
        tiny_trainer(tmp_path, max_epochs=1).fit(model, make_loader())


def test_cosine_needs_an_end():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(ValueError, match="Set `max_epochs` or `max_steps`"):
        build_scheduler(opt, "cosine", total_steps=float("inf"), steps_per_epoch=10)


class StopAfterEpochs(Callback):
    def __init__(self, epochs):
        self.epochs = epochs

    def on_train_epoch_end(self, trainer, pl_module):
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


def test_schedule_resumes_on_the_same_curve(tmp_path):
    kwargs = dict(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.1, warmup_steps=2)
    full = RecordLR()
    tiny_trainer(tmp_path / "a", max_epochs=4, callbacks=[full]).fit(ImageClassifier(**kwargs), make_loader())
    interrupted = tiny_trainer(tmp_path / "b", max_epochs=4, callbacks=[StopAfterEpochs(2)])
    interrupted.fit(ImageClassifier(**kwargs), make_loader())
    interrupted.save_checkpoint(tmp_path / "mid.ckpt")
    resumed = RecordLR()
    tiny_trainer(tmp_path / "b", max_epochs=4, callbacks=[resumed]).fit(
        ImageClassifier(**kwargs), make_loader(), ckpt_path=str(tmp_path / "mid.ckpt")
    )
    assert resumed.steps == [4, 5, 6, 7]
    assert [lrs[0] for lrs in resumed.lrs] == pytest.approx([lrs[0] for lrs in full.lrs[4:]], rel=1e-12)


def test_longer_training_on_resume_follows_the_new_length(tmp_path):
    kwargs = dict(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.1)
    first = tiny_trainer(tmp_path, max_epochs=2)
    first.fit(ImageClassifier(**kwargs), make_loader())
    first.save_checkpoint(tmp_path / "end.ckpt")
    resumed = RecordLR()
    tiny_trainer(tmp_path, max_epochs=4, callbacks=[resumed]).fit(
        ImageClassifier(**kwargs), make_loader(), ckpt_path=str(tmp_path / "end.ckpt")
    )
    want = [expected_warmup_cosine(s, 8, 0, 0.0, 0.1) for s in range(4, 8)]
    assert [lrs[0] for lrs in resumed.lrs] == pytest.approx(want)


def test_unknown_scheduler():
    with pytest.raises(ValueError, match=r"Unknown scheduler 'cosin'\. Choose one of: cosine, onecycle, step"):
        ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, scheduler="cosin")


class Stream(torch.utils.data.IterableDataset):
    def __iter__(self):
        g = torch.Generator().manual_seed(0)
        for i in range(64):
            yield torch.randn(3, 32, 32, generator=g), i % 3


def test_iterable_data_without_length_counts_in_steps(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.1, warmup_steps=2)
    rec = RecordLR()
    loader = torch.utils.data.DataLoader(Stream(), batch_size=8)
    tiny_trainer(tmp_path, max_steps=6, callbacks=[rec]).fit(model, loader)
    assert [lrs[0] for lrs in rec.lrs] == pytest.approx([expected_warmup_cosine(s, 6, 2, 0.01, 0.1) for s in range(6)])
    with pytest.raises(ValueError, match="give the warmup as `warmup_steps`"):
        bad = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, warmup_epochs=1)
        tiny_trainer(tmp_path, max_steps=6).fit(bad, loader)


def test_onecycle_cannot_stretch_on_resume(tmp_path):
    kwargs = dict(backbone="test_resnet", num_classes=3, pretrained=False, scheduler="onecycle", optimizer="sgd")
    first = tiny_trainer(tmp_path, max_epochs=1)
    first.fit(ImageClassifier(**kwargs), make_loader())
    first.save_checkpoint(tmp_path / "one.ckpt")
    with pytest.raises(ValueError, match=r"'onecycle' schedule of this checkpoint was planned for 2 optimizer steps"):
        tiny_trainer(tmp_path, max_epochs=3).fit(
            ImageClassifier(**kwargs), make_loader(), ckpt_path=str(tmp_path / "one.ckpt")
        )
