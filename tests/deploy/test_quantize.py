"""INT8 quantization: the right kind per model, files onnxruntime loads, outputs close to fp32."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.deploy import export_onnx
from lightning_cv.deploy.quantize import choose_quantization, quantize_dynamic_torch, quantize_onnx
from tests.conftest import tiny_kwargs


def _export(tmp_path, backbone):
    torch.manual_seed(0)
    model = ImageClassifier(num_classes=4, **tiny_kwargs(backbone)).eval()
    path = tmp_path / f"{backbone}.onnx"
    export_onnx(model.model, path, torch.randn(1, 3, 32, 32))
    return model, path


def _ops(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"image": images})[0]


@pytest.mark.parametrize(("backbone", "expected"), [("test_resnet", "static"), ("test_vit", "dynamic")])
def test_auto_chooses_static_for_cnns_and_dynamic_for_linear_heavy_models(tmp_path, backbone, expected):
    _, path = _export(tmp_path, backbone)
    mode, reason = choose_quantization(path)
    assert mode == expected and "%" in reason


def test_static_qdq_file_is_smaller_and_close_to_fp32(tmp_path):
    _, path = _export(tmp_path, "test_resnet")
    generator = torch.Generator().manual_seed(1)
    calibration = [torch.randn(8, 3, 32, 32, generator=generator) for _ in range(4)]
    report = quantize_onnx(path, tmp_path / "q.onnx", mode="static", calibration=calibration)
    assert report.mode == "static" and report.calibration_images == 32
    assert {"QuantizeLinear", "DequantizeLinear"} <= _ops(tmp_path / "q.onnx")  # QDQ format
    assert report.compression > 2.5
    images = torch.randn(6, 3, 32, 32, generator=generator).numpy()
    fp32, int8 = _run(path, images), _run(tmp_path / "q.onnx", images)
    # INT8 error relative to the spread of the logits (an untrained model: no accuracy to compare)
    assert np.abs(int8 - fp32).max() < 0.25 * (fp32.max() - fp32.min())


def test_calibration_stops_at_the_requested_number_of_images(tmp_path):
    _, path = _export(tmp_path, "test_resnet")
    batches = (np.random.rand(10, 3, 32, 32).astype(np.float32) for _ in range(100))
    report = quantize_onnx(path, tmp_path / "q.onnx", mode="static", calibration=batches, num_calibration_images=25)
    assert report.calibration_images == 25


def test_dynamic_quantizes_the_matmuls_of_a_vit(tmp_path):
    _, path = _export(tmp_path, "test_vit")
    report = quantize_onnx(path, tmp_path / "q.onnx", mode="auto")
    assert report.mode == "dynamic" and report.calibration_images == 0
    assert "MatMulInteger" in _ops(tmp_path / "q.onnx") or "DynamicQuantizeLinear" in _ops(tmp_path / "q.onnx")
    images = np.random.default_rng(0).normal(size=(3, 3, 32, 32)).astype(np.float32)
    fp32, int8 = _run(path, images), _run(tmp_path / "q.onnx", images)
    assert np.abs(int8 - fp32).max() < 0.25 * (fp32.max() - fp32.min())


def test_bad_input(tmp_path):
    _, path = _export(tmp_path, "test_resnet")
    with pytest.raises(ValueError, match="Static INT8 quantization needs calibration images"):
        quantize_onnx(path, tmp_path / "q.onnx", mode="static")
    with pytest.raises(ValueError, match="calibration data held no images"):
        quantize_onnx(path, tmp_path / "q.onnx", mode="static", calibration=[])
    assert not (tmp_path / "q.onnx").exists()
    with pytest.raises(FileNotFoundError, match="Export one first"):
        quantize_onnx(tmp_path / "missing.onnx", tmp_path / "q.onnx", mode="dynamic")
    with pytest.raises(ValueError, match="Expected `mode`"):
        quantize_onnx(path, tmp_path / "q.onnx", mode="int4")  # type: ignore[arg-type]


def test_torch_dynamic_quantization_of_linear_layers():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 64), nn.ReLU(), nn.Linear(64, 5))
    quantized = quantize_dynamic_torch(model)
    assert isinstance(model[1], nn.Linear)  # the caller's model is untouched
    assert "quantized" in type(quantized[1]).__module__
    images = torch.randn(4, 3, 4, 4)
    with torch.no_grad():
        torch.testing.assert_close(quantized(images), model(images), atol=0.05, rtol=0.05)
