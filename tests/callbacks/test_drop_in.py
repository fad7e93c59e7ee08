"""All four callbacks together, in a foreign module, in ImageClassifier, and under DDP with two CPU processes."""

import pytest
import torch
from lightning.pytorch import Callback

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import EMA, GradCAMLogger, LinearWarmup, ONNXExport, PredictionGallery
from tests.callbacks.test_onnx_export import PlainResNet
from tests.conftest import make_loader, run_spawned, tiny_trainer


def four(tmp_path):
    return [LinearWarmup(warmup_steps=3), EMA(decay=0.9), GradCAMLogger(num_images=2), ONNXExport()]


def test_all_four_with_a_plain_module(tmp_path):
    callbacks = four(tmp_path)
    tiny_trainer(tmp_path, max_epochs=2, callbacks=callbacks).fit(PlainResNet(), make_loader(), make_loader())
    assert (tmp_path / "export" / "model.onnx").is_file() and callbacks[3].report is not None
    sheets = sorted(p.name for p in (tmp_path / "images" / "val_gradcam").iterdir())
    assert sheets == ["step_000002.png", "step_000004.png"]  # one contact sheet of 2 images per epoch
    assert callbacks[1].num_updates == 4


def test_all_four_with_image_classifier(tmp_path):
    model = ImageClassifier(
        backbone="test_vit", num_classes=3, pretrained=False, backbone_kwargs={"img_size": 32}, freeze_layers=2
    )
    callbacks = four(tmp_path)
    tiny_trainer(tmp_path, max_epochs=1, callbacks=callbacks).fit(model, make_loader(), make_loader())
    assert callbacks[3].report is not None and max(callbacks[3].report.max_abs_diff.values()) < 1e-4
    assert [p.name for p in (tmp_path / "images" / "val_gradcam").iterdir()] == ["step_000002.png"]


class SaveRankState(Callback):
    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_train_end(self, trainer, pl_module):  # runs after EMA's: the module holds the average
        params = {k: v.detach().clone() for k, v in pl_module.named_parameters()}
        torch.save(params, f"{self.out_dir}/rank{trainer.global_rank}.pt")


@pytest.mark.slow
def test_all_four_under_ddp(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, lr=0.05)
    callbacks = [*four(tmp_path), PredictionGallery(num_images=2), SaveRankState(tmp_path)]
    trainer = tiny_trainer(tmp_path, max_epochs=2, strategy="ddp_spawn", devices=2, callbacks=callbacks)
    run_spawned(
        lambda: trainer.fit(model, make_loader(num_samples=32, batch_size=4, shuffle=True), make_loader()),
        written=[tmp_path / f"rank{r}.pt" for r in (0, 1)],
    )
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1)]
    for key, value in ranks[0].items():
        torch.testing.assert_close(ranks[1][key], value, msg=key)  # the same average on both ranks
    assert [p.name for p in (tmp_path / "export").iterdir()] == ["model.onnx"]
    images = tmp_path / "images"  # rank zero only: 4 steps an epoch on each of the two ranks
    assert sorted(p.name for p in (images / "val_gradcam").iterdir()) == ["step_000004.png", "step_000008.png"]
    assert sorted(p.name for p in (images / "val_worst_predictions").iterdir()) == [
        "step_000004.png",
        "step_000008.png",
    ]
    assert sorted(p.name for p in (images / "val_confusion_matrix").iterdir()) == ["step_000004.png", "step_000008.png"]
