import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.deploy import ExportError, export_onnx
from tests.conftest import tiny_kwargs


@pytest.mark.parametrize("backbone", ["test_resnet", "test_vit", "test_efficientnet"])
def test_parity_with_dynamic_batch(tmp_path, backbone):
    torch.manual_seed(0)
    model = ImageClassifier(num_classes=4, class_names=list("abcd"), **tiny_kwargs(backbone))
    example = torch.randn(2, 3, 32, 32)
    report = export_onnx(model.model, tmp_path / "m.onnx", example, metadata={"class_names": list("abcd")})
    assert set(report.max_abs_diff) == {1, 7} and max(report.max_abs_diff.values()) < 1e-4
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    batch = torch.randn(5, 3, 32, 32)
    with torch.no_grad():
        expected = model.model.eval()(batch).numpy()
    got = session.run(None, {"image": batch.numpy()})[0]
    assert np.abs(got - expected).max() < 1e-4  # an independent batch size, checked here rather than by the code
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(meta["class_names"]) == list("abcd") and meta["softmax"] == "false"
    assert len(list(tmp_path.iterdir())) == 1  # one self-contained file, no .onnx.data beside it


def test_softmax_in_the_graph(tmp_path):
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet"))
    export_onnx(model.model, tmp_path / "p.onnx", torch.randn(1, 3, 32, 32), softmax=True)
    session = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(None, {"image": np.random.rand(3, 3, 32, 32).astype(np.float32)})[0]
    assert np.allclose(probs.sum(1), 1.0, atol=1e-5)
    assert session.get_outputs()[0].name == "probabilities"


class NoOnnx(nn.Module):
    def forward(self, x):
        return torch.linalg.svd(x.flatten(2))[1].flatten(1)[:, :3]  # SVD has no ONNX operator


class TrainModeDropout(nn.Module):
    """Differs between calls: the export check must catch that the file does not match."""

    def forward(self, x):
        return x.flatten(1)[:, :3] + torch.rand(x.shape[0], 3)


def test_export_failure_names_the_problem(tmp_path):
    with pytest.raises(ExportError, match=r"ONNX export failed at operator 'aten::linalg_svd'.*Try another `opset`"):
        export_onnx(NoOnnx(), tmp_path / "x.onnx", torch.randn(1, 3, 8, 8))


def test_parity_check_fails_loudly(tmp_path):
    with pytest.raises(ExportError, match=r"differs from PyTorch by .* at batch size 1"):
        export_onnx(TrainModeDropout(), tmp_path / "y.onnx", torch.randn(1, 3, 8, 8))


def test_check_leaves_the_callers_model_alone(tmp_path):
    from lightning_cv.deploy import check_onnx

    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")).model
    export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    model.train()
    check_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 32, 32))
    assert model.training
