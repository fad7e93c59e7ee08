"""The inference benchmark: every backend measured on the same inputs, failures reported, results written."""

import csv

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier
from lightning_cv.deploy import export_onnx
from lightning_cv.deploy.benchmark import benchmark_backends, format_markdown, write_results
from lightning_cv.deploy.quantize import quantize_onnx
from tests.conftest import tiny_kwargs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("bench")
    model = ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")).eval()
    example = torch.randn(1, 3, 32, 32)
    export_onnx(model.model, folder / "m.onnx", example)
    quantize_onnx(folder / "m.onnx", folder / "q.onnx", mode="static", calibration=[torch.randn(16, 3, 32, 32)])
    images = torch.randn(20, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)  # the model's own answers: eager accuracy must come out at exactly 100%
    return model, example, folder, DataLoader(TensorDataset(images, labels), batch_size=8)


def test_every_backend_gets_every_column(exported, monkeypatch):
    model, example, folder, loader = exported
    results = benchmark_backends(
        model,
        example,
        onnx_path=folder / "m.onnx",
        int8_path=folder / "q.onnx",
        eval_batches=loader,
        backends=["eager", "onnx", "onnx_int8"],
        batch_size=4,
        warmup=1,
        repeats=3,
        threads=1,
        skipped={"compile": "not asked for"},
        log=lambda _: None,
    )
    assert [r.backend for r in results] == ["eager", "compile", "onnx", "onnx_int8"]
    compile_row = results[1]
    assert compile_row.status == "skipped: not asked for" and compile_row.latency_p50_ms is None
    for r in (results[0], results[2], results[3]):
        assert r.status == "ok", r.status
        assert r.latency_p50_ms > 0 and r.latency_p90_ms >= r.latency_p50_ms
        assert r.throughput_img_s > 0 and r.throughput_batch == 4 and r.threads == 1
        assert r.size_mb > 0 and r.accuracy_images == 20 and r.speedup > 0
    assert results[0].accuracy == 1.0 and results[0].speedup == 1.0
    assert results[2].accuracy == 1.0  # fp32 ONNX computes what PyTorch computes
    assert results[3].size_mb < results[2].size_mb


def test_a_failing_backend_is_reported_and_the_rest_still_run(exported, monkeypatch):
    model, example, folder, _ = exported

    def broken_compile(*args, **kwargs):
        raise RuntimeError("no C++ compiler found")

    monkeypatch.setattr(torch, "compile", broken_compile)
    results = benchmark_backends(
        model, example, onnx_path=folder / "m.onnx", backends=["eager", "compile", "onnx", "onnx_int8"],
        batch_size=2, warmup=0, repeats=2, log=lambda _: None,
    )  # fmt: skip
    status = {r.backend: r.status for r in results}
    assert status["compile"].startswith("failed: RuntimeError: no C++ compiler found")
    assert status["eager"] == status["onnx"] == "ok"
    assert status["onnx_int8"] == "skipped: no ONNX file"


def test_results_are_written_as_csv_and_markdown(exported, tmp_path):
    model, example, folder, loader = exported
    results = benchmark_backends(
        model, example, onnx_path=folder / "m.onnx", backends=["eager", "onnx"], eval_batches=loader,
        batch_size=2, warmup=0, repeats=2, log=lambda _: None,
    )  # fmt: skip
    paths = write_results(results, tmp_path / "out", title="tiny")
    rows = list(csv.DictReader(paths["csv"].open()))
    assert [r["backend"] for r in rows] == ["eager", "onnx"]
    assert float(rows[1]["latency_p50_ms"]) > 0 and float(rows[1]["accuracy"]) == 1.0
    markdown = paths["markdown"].read_text()
    assert markdown.startswith("tiny") and "| ONNX Runtime fp32 |" in markdown
    assert format_markdown(results).count("\n") == 4  # header, rule, two rows


def test_bad_arguments(exported):
    model, example, _, _ = exported
    with pytest.raises(ValueError, match="Unknown backends \\['tensorrt'\\]"):
        benchmark_backends(model, example, backends=["tensorrt"])
    with pytest.raises(ValueError, match="Expected repeats >= 1"):
        benchmark_backends(model, example, repeats=0)
