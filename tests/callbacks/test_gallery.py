import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
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
    captions = gallery.captions(["cat", "dog"])
    assert captions[0] == (("true: cat", "pred: dog (0.95)"), True)  # a mistake: shown in red
    assert captions[2] == (("true: cat", "pred: cat (0.50)"), False)


def red_pixels(image):
    pixels = np.asarray(image).astype(int)
    return int(((pixels[..., 0] > 150) & (pixels[..., 1] < 60) & (pixels[..., 2] < 60)).sum())


def test_image_shows_small_images_enlarged_under_captions_mistakes_in_red():
    gallery = PredictionGallery(num_images=3)
    quadrants = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(3, 3, 2, 2)  # four greys once scaled to the display
    probs = torch.tensor([[0.1, 0.9], [0.2, 0.8], [0.7, 0.3]])  # true class 0: two mistakes, one right answer
    gallery.update(quadrants, torch.zeros(3, dtype=torch.long), probs)
    sheet = gallery.image(None, ["cat", "dog"])
    tile = (sheet.width - 4 * 4) // 3  # one row of three tiles, 4 px gaps
    assert tile == 160 and sheet.height > tile + 2 * 16  # enlarged 80 times, two caption lines above, name below
    columns = [sheet.crop((4 + k * (tile + 4), 0, 4 + k * (tile + 4) + tile, sheet.height)) for k in range(3)]
    assert [red_pixels(c) > 20 for c in columns] == [True, True, False]
    picture = np.asarray(columns[2])[sheet.height - 4 - 16 - tile : sheet.height - 4 - 16]  # above the tile's name
    assert picture.shape[:2] == (160, 160)
    for (top, left), grey in zip([(0, 0), (0, 80), (80, 0), (80, 80)], [0, 85, 170, 255], strict=True):
        np.testing.assert_array_equal(picture[top : top + 80, left : left + 80], grey)  # nearest neighbour: sharp


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
    folder = tmp_path / "images" / "val_worst_predictions"
    assert [p.name for p in folder.iterdir()] == ["step_000004.png"]  # epoch 2 of 2 batches
    with Image.open(folder / "step_000004.png") as sheet:  # 4 tiles of 32 px images enlarged to 160 px, one row
        assert sheet.width == 4 * 160 + 5 * 4


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected `num_images` >= 1, but got 0"):
        PredictionGallery(num_images=0)
