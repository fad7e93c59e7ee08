import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
import torchvision
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import EMA, ONNXExport
from tests.conftest import make_loader, tiny_trainer


class PlainResNet(LightningModule):
    """Lightning's example style: a torchvision ResNet, SGD + StepLR, no example_input_array, no hparams."""

    def __init__(self):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=3)

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return nn.functional.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", nn.functional.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        opt = torch.optim.SGD(self.parameters(), lr=0.01)
        return [opt], [torch.optim.lr_scheduler.StepLR(opt, step_size=1)]


def run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": x.numpy()})[0]


def test_drop_in_with_a_foreign_module_and_no_logger(tmp_path):
    callback = ONNXExport()
    module = PlainResNet()
    tiny_trainer(tmp_path, max_epochs=1, callbacks=[callback]).fit(module, make_loader(num_samples=8))
    path = tmp_path / "export" / "model.onnx"
    assert callback.report is not None and callback.report.path == str(path)
    x = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        expected = module.eval()(x).numpy()
    assert np.abs(run(path, x) - expected).max() < 1e-4
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["input_size"]) == [3, 32, 32] and meta["weights"] == "end of training"


@pytest.mark.parametrize("with_ema", [False, True])
def test_exports_the_best_checkpoint_with_metadata(tmp_path, with_ema):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"], lr=0.05
    )
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_acc", mode="max", save_top_k=1)
    export = ONNXExport(dirpath=str(tmp_path / "onnx"), softmax=True, every_best=True)
    callbacks = [best, export, *([EMA(decay=0.5)] if with_ema else [])]
    tiny_trainer(tmp_path, max_epochs=3, callbacks=callbacks, enable_checkpointing=True).fit(
        model, make_loader(), make_loader()
    )
    reference = ImageClassifier.load_from_checkpoint(best.best_model_path).eval()  # the average, with EMA
    if with_ema:
        ckpt = torch.load(best.best_model_path, weights_only=True)
        torch.testing.assert_close(reference.state_dict()["model.fc.weight"], ckpt["ema_state_dict"]["model.fc.weight"])
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = reference(x).softmax(1).numpy()
    path = tmp_path / "onnx" / "model.onnx"
    assert np.abs(run(path, x) - expected).max() < 1e-5
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert json.loads(meta["class_names"]) == ["a", "b", "c"] and meta["softmax"] == "true"
    assert meta["weights"] == best.best_model_path.split("/")[-1]


class Unexportable(PlainResNet):
    def forward(self, x):
        return self.net(x) + torch.linalg.svd(x.flatten(2))[1][:, :1]


def test_failed_export_does_not_fail_training(tmp_path):
    callback = ONNXExport()
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[callback], enable_checkpointing=True)
    with pytest.warns(UserWarning, match=r"ONNXExport failed; the training and its checkpoints are unaffected.*svd"):
        trainer.fit(Unexportable(), make_loader(num_samples=8))
    assert trainer.state.finished and callback.report is None and callback.error is not None
    assert list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"plain name ending in .onnx"):
        ONNXExport(filename="../model.onnx")


def multilabel_loader(num_samples=16, num_classes=3):
    g = torch.Generator().manual_seed(0)
    targets = (torch.rand(num_samples, num_classes, generator=g) > 0.5).float()
    images = torch.randn(num_samples, 3, 32, 32, generator=g) * 0.5 + targets[:, :1, None, None]
    return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(images, targets), batch_size=8)


class ClobberThresholds(Callback):
    """Changes the live module's thresholds as fit ends: the export must take the best checkpoint's, not these."""

    def on_fit_end(self, trainer, pl_module):
        pl_module.thresholds = 0.99


def test_multilabel_module_gets_a_sigmoid_file_with_the_best_checkpoints_thresholds(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, task="multilabel", lr=0.05)
    best = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="val_map", mode="max", save_top_k=1)
    export = ONNXExport(dirpath=str(tmp_path / "onnx"))
    trainer = tiny_trainer(
        tmp_path, max_epochs=2, callbacks=[best, ClobberThresholds(), export], enable_checkpointing=True
    )
    trainer.fit(model, multilabel_loader(), multilabel_loader())
    assert model.thresholds.tolist() == pytest.approx([0.99] * 3)
    reference = ImageClassifier.load_from_checkpoint(best.best_model_path).eval()
    x = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        expected = torch.sigmoid(reference(x)).numpy()
    path = tmp_path / "onnx" / "model.onnx"
    assert np.abs(run(path, x) - expected).max() < 1e-5
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assert meta["task"] == "multilabel" and meta["output"] == "scores"
    assert json.loads(meta["thresholds"]) == pytest.approx(reference.thresholds.tolist(), abs=1e-7)


def test_softmax_for_a_multilabel_module_stops_fit_at_its_start(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, task="multilabel")
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[ONNXExport(softmax=True)])
    with pytest.raises(ValueError, match=r"ONNXExport\(softmax=True\) is for multi-class models, but this module is"):
        trainer.fit(model, multilabel_loader())
    assert trainer.global_step == 0
