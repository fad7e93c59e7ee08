import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from lightning_cv.callbacks import PredictionGallery
from tests.conftest import make_loader, tiny_trainer


class ForeignModule(LightningModule):
    """Someone else's classifier: no probs in its outputs, no class names, its own optimizer."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 3))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_keeps_the_highest_loss_images_in_order():
    gallery = PredictionGallery(num_images=3)
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    target = torch.zeros(5, dtype=torch.long)
    p_true = torch.tensor([0.9, 0.1, 0.5, 0.05, 0.7])  # losses: 3 > 1 > 2 > 4 > 0
    probs = torch.stack([p_true, 1 - p_true], dim=1)
    gallery.update(images[:2], target[:2], probs[:2])
    gallery.update(images[2:], target[2:], probs[2:])
    assert [int(item[1][0, 0, 0]) for item in gallery._kept] == [3, 1, 2]
    assert [item[3] for item in gallery._kept] == [1, 1, 0]  # two mistakes, then an unsure right answer (0.5)
    fig = gallery.figure(None, None, ["cat", "dog"])
    assert fig.axes[0].get_title() == "true: cat\npred: dog (0.95)"


def test_logs_to_tensorboard_with_a_foreign_module(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = tiny_trainer(tmp_path, logger=logger, max_epochs=1, callbacks=[PredictionGallery(num_images=4)])
    trainer.fit(ForeignModule(), make_loader(), make_loader())
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "val_worst_predictions" in events.Tags()["images"]


def test_saves_png_without_a_logger(tmp_path):
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[PredictionGallery(num_images=4, every_n_epochs=2)])
    trainer.fit(ForeignModule(), make_loader(), make_loader())
    assert [p.name for p in (tmp_path / "gallery").iterdir()] == ["epoch_001.png"]


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected `num_images` >= 1, but got 0"):
        PredictionGallery(num_images=0)
