"""The classifier under DDP with 2 CPU processes (gloo): unfreezing and metric syncing."""

import pytest
import torch
from lightning.pytorch import Callback

from lightning_cv import ImageClassifier
from tests.conftest import make_loader, run_spawned, tiny_trainer


class SaveRankWeights(Callback):
    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_train_end(self, trainer, pl_module):
        # parameters: BatchNorm running statistics are per rank by design (DDP broadcasts rank 0's at each forward)
        weights = {k: v.detach().clone() for k, v in pl_module.model.named_parameters()}
        torch.save(
            {"weights": weights, "frozen": pl_module.num_frozen_groups},
            f"{self.out_dir}/rank{trainer.global_rank}.pt",
        )


@pytest.mark.slow
def test_unfrozen_layers_stay_identical_across_ranks(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone="test_resnet",
        num_classes=3,
        pretrained=False,
        freeze_backbone=True,
        unfreeze_milestones=[1],
        lr=0.05,
    )
    initial = model.model.conv1[0].weight.detach().clone()
    trainer = tiny_trainer(
        tmp_path, max_epochs=2, strategy="ddp_spawn", devices=2, callbacks=[SaveRankWeights(tmp_path)]
    )
    run_spawned(
        lambda: trainer.fit(model, make_loader(num_samples=32, batch_size=4, shuffle=True)),
        written=[tmp_path / f"rank{r}.pt" for r in (0, 1)],
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    assert ranks[0]["frozen"] == ranks[1]["frozen"] == 0
    assert not torch.equal(ranks[0]["weights"]["conv1.0.weight"], initial)  # the thawed stem did train
    for key, value in ranks[0]["weights"].items():
        torch.testing.assert_close(ranks[1]["weights"][key], value, msg=key)


class SaveRankMetrics(Callback):
    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_validation_end(self, trainer, pl_module):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        torch.save(metrics, f"{self.out_dir}/metrics{trainer.global_rank}.pt")


@pytest.mark.slow
def test_validation_metrics_are_synced_across_ranks(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=4, pretrained=False, top_k=2)
    loader = make_loader(num_samples=40, num_classes=4, batch_size=5)  # 20 a rank: no padding by the sampler
    single = tiny_trainer(tmp_path / "one").validate(model, loader, verbose=False)[0]
    ddp = tiny_trainer(tmp_path / "two", strategy="ddp_spawn", devices=2, callbacks=[SaveRankMetrics(tmp_path)])
    run_spawned(
        lambda: ddp.validate(model, loader, verbose=False), written=[tmp_path / f"metrics{r}.pt" for r in (0, 1)]
    )
    for rank in (0, 1):  # every rank reports the metrics of the whole set
        metrics = torch.load(tmp_path / f"metrics{rank}.pt", weights_only=True)
        assert set(metrics) == set(single)
        for name, value in single.items():
            assert metrics[name] == pytest.approx(value, abs=1e-5), (rank, name)


class SaveRankThresholds(Callback):
    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_validation_end(self, trainer, pl_module):
        # the module has tuned its thresholds in on_validation_epoch_end, which ran before this
        state = {
            "thresholds": pl_module.thresholds.clone(),
            "weights": {k: v.detach().clone() for k, v in pl_module.state_dict().items()},
            "metrics": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val_")},
        }
        torch.save(state, f"{self.out_dir}/tuned{trainer.global_rank}.pt")


@pytest.mark.slow
def test_multilabel_metrics_and_tuned_thresholds_cover_every_rank(tmp_path):
    from torch.utils.data import DataLoader, TensorDataset

    from lightning_cv.models.thresholds import tune_thresholds

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(40, 3, generator=g) < 0.4).float()
    images = torch.randn(40, 3, 32, 32, generator=g) * 0.5 + targets.view(-1, 3, 1, 1)
    loader = DataLoader(TensorDataset(images, targets), batch_size=5)  # 20 a rank: no padding by the sampler
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, task="multilabel", lr=0.01)
    save = SaveRankThresholds(tmp_path)
    ddp = tiny_trainer(tmp_path, max_epochs=1, strategy="ddp_spawn", devices=2, callbacks=[save])
    run_spawned(lambda: ddp.fit(model, loader, loader), written=[tmp_path / f"tuned{r}.pt" for r in (0, 1)])
    ranks = [torch.load(tmp_path / f"tuned{r}.pt", weights_only=True) for r in (0, 1)]
    assert torch.equal(ranks[0]["thresholds"], ranks[1]["thresholds"])
    assert ranks[0]["metrics"] == ranks[1]["metrics"]

    # one process, the same weights, all 40 images: the same thresholds and metrics
    model.load_state_dict(ranks[0]["weights"])
    model.eval()
    with torch.no_grad():
        scores = model(images).sigmoid()
    torch.testing.assert_close(ranks[0]["thresholds"], tune_thresholds(scores, targets)[0])
    single = tiny_trainer(tmp_path / "one").validate(model, loader, verbose=False)[0]
    assert ranks[0]["metrics"]["val_map"] == pytest.approx(single["val_map"], abs=1e-5)
