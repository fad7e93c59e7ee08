"""The batch and target contract (lightning_cv.data.batch), and callbacks that read dict batches through it."""

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn
from torch.utils.data import DataLoader, Dataset

from lightning_cv.callbacks import EMA, GradCAMLogger, ONNXExport, PredictionGallery
from lightning_cv.data import hard_labels, split_batch
from lightning_cv.data.batch import IMAGE_KEYS, TARGET_KEYS, is_soft, split_labelled_batch, try_split_batch
from tests.conftest import make_loader, tiny_trainer

IMAGES = torch.randn(4, 3, 8, 8)
LABELS = torch.tensor([0, 2, 1, 2])


@pytest.mark.parametrize(
    "batch",
    [(IMAGES, LABELS), [IMAGES, LABELS], (IMAGES, LABELS, ["a.png"] * 4)]
    + [{image: IMAGES, target: LABELS} for image in IMAGE_KEYS for target in TARGET_KEYS],
    ids=lambda b: type(b).__name__ + (f"-{'-'.join(b)}" if isinstance(b, dict) else f"-{len(b)}"),
)
def test_labelled_forms(batch):
    images, targets = split_batch(batch)
    assert images is IMAGES and targets is LABELS
    assert split_labelled_batch(batch) == (IMAGES, LABELS)


@pytest.mark.parametrize(
    "batch", [IMAGES, (IMAGES,), [IMAGES, ["a.png"] * 4], {"image": IMAGES}, {"images": IMAGES, "label": [0, 1]}]
)
def test_forms_without_targets(batch):
    assert split_batch(batch) == (IMAGES, None)
    with pytest.raises(TypeError, match=r"Expected a batch of \(images, targets\) or a dict with 'image' and 'target'"):
        split_labelled_batch(batch)


def test_first_dict_key_holding_a_tensor_wins():
    batch = {"image": "not a tensor", "input": IMAGES, "target": None, "labels": LABELS, "targets": LABELS + 1}
    assert split_batch(batch) == (IMAGES, LABELS)


@pytest.mark.parametrize("batch", [None, [], ("a", LABELS), {"x": IMAGES}, {"image": [1, 2]}, 3])
def test_unknown_forms(batch):
    assert try_split_batch(batch) is None
    with pytest.raises(TypeError, match=r"Expected a batch of images: a tensor, a tuple or list starting with one"):
        split_batch(batch)


def test_hard_labels_of_mixed_targets_are_the_larger_share():
    first, second = torch.tensor([0, 1, 2, 2]), torch.tensor([1, 1, 0, 3])
    share = torch.tensor([0.7, 0.5, 0.2, 0.9]).view(-1, 1)
    soft = share * F.one_hot(first, 4) + (1 - share) * F.one_hot(second, 4)  # MixUp's targets, written out
    rows = zip(first.tolist(), second.tolist(), share.flatten().tolist(), strict=True)
    expected = [a if s > 0.5 else b for a, b, s in rows]  # the class with the larger share (ties: both are 1)
    assert is_soft(soft) and not is_soft(first)
    assert hard_labels(soft).tolist() == expected
    assert hard_labels(first) is first


class AsDicts(Dataset):
    """A dataset that gives ``{"image": ..., "label": ...}`` samples, as Hugging Face-style datasets do."""

    def __init__(self, base):
        self.base = base

    def __len__(self):
        return len(self.base)

    def __getitem__(self, index):
        image, label = self.base[index]
        return {"image": image, "label": label}


def dict_loader():
    return DataLoader(AsDicts(make_loader().dataset), batch_size=8)


class DictNet(LightningModule):
    """Someone else's module that reads dict batches itself."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        )

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch["image"]), batch["label"])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch["image"]), batch["label"]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_callbacks_read_dict_batches(tmp_path):
    """Each of these skipped dict batches before the contract: no gallery, no raw metrics, no heatmaps, no export."""
    ema, gradcam, export = EMA(decay=0.9, log_raw_metrics=True), GradCAMLogger(num_images=2), ONNXExport()
    callbacks = [PredictionGallery(num_images=4), ema, gradcam, export]
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=callbacks)
    trainer.fit(DictNet(), dict_loader(), dict_loader())
    assert [p.name for p in (tmp_path / "images" / "val_worst_predictions").iterdir()] == ["step_000002.png"]
    assert {"val_loss_raw", "val_acc_raw"} <= set(trainer.callback_metrics)
    assert gradcam.last_cams is not None and gradcam.last_cams.shape == (2, 32, 32)
    assert export.report is not None and export.report.metadata["input_size"] == "[3, 32, 32]"
