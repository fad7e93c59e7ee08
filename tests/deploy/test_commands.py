"""`lightning-cv export`, `benchmark` and `explain` end to end, on a tiny model trained on the embedded dataset."""

import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.cli import LightningCVCLI, main

ROOT = Path(__file__).resolve().parents[2]
SHAPES = "{num_train: 800, num_val: 100, num_test: 300, image_size: 32}"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """test_resnet trained for 10 epochs on 800 shapes at 32 px (about 37% test accuracy: it has learned)."""
    root = tmp_path_factory.mktemp("fit")
    cli = LightningCVCLI(
        args=[
            "fit",
            "--model.backbone=test_resnet",
            "--model.pretrained=false",
            "--model.lr=0.003",
            "--data.dataset=shapes",
            "--data.image_size=32",
            f"--data.dataset_kwargs={SHAPES}",
            "--data.auto_augment=none",
            "--data.scale=[0.6, 1.0]",
            "--trainer.max_epochs=10",
            "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false",
            "--gallery_images=0",
            f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        ]
    )
    return cli.trainer.checkpoint_callback.best_model_path


def _test_split(ckpt):
    """The test split preprocessed independently of the commands: the checkpoint's own data settings."""
    meta = dict(torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"])
    config = ImageClassifier.load_from_checkpoint(ckpt, weights_only=True).data_config
    # None in the checkpoint means "the model's": resolve it as training did
    meta["mean"], meta["std"] = meta["mean"] or config["mean"], meta["std"] or config["std"]
    data = ImageDataModule(
        dataset="shapes", dataset_kwargs=meta["dataset_kwargs"], image_size=32, mean=meta["mean"], std=meta["std"]
    )
    data.setup("test")
    images, labels = zip(*(data.datasets["test"][i][:2] for i in range(len(data.datasets["test"]))), strict=True)
    return torch.stack(images), torch.tensor(labels), meta


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


@pytest.mark.slow
def test_export_fp32_with_metadata_and_parity(trained, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert main(["export", "--ckpt_path", trained, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "max abs difference" in printed and "fp32:" in printed
    images, _, meta = _test_split(trained)
    model = ImageClassifier.load_from_checkpoint(trained, weights_only=True).eval()
    with torch.no_grad():
        expected = model(images).numpy()
    got = _run(out, images.numpy())
    assert np.abs(got - expected).max() < 1e-4
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert json.loads(props["class_names"]) == model.hparams["class_names"]
    assert json.loads(props["mean"]) == pytest.approx(list(meta["mean"]))
    assert json.loads(props["input_size"]) == [3, 32, 32] and props["input_format"] == "float"
    assert props["weights"] == Path(trained).name and props["task"] == "multiclass"
    assert list(tmp_path.iterdir()) == [out]  # one self-contained file


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["uint8_nhwc", "uint8_nchw"])
def test_baked_preprocessing_takes_raw_pixels(trained, tmp_path, layout):
    out = tmp_path / "pixels.onnx"
    assert main(["export", "--ckpt_path", trained, "--output", str(out), "--input_format", layout]) == 0
    _, _, meta = _test_split(trained)
    pixels = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    mean, std = torch.tensor(meta["mean"]).view(1, 3, 1, 1), torch.tensor(meta["std"]).view(1, 3, 1, 1)
    normalised = (pixels.permute(0, 3, 1, 2).float() / 255 - mean) / std  # by hand, as a deployer would
    model = ImageClassifier.load_from_checkpoint(trained, weights_only=True).eval()
    with torch.no_grad():
        expected = model(normalised).numpy()
    feed = pixels if layout == "uint8_nhwc" else pixels.permute(0, 3, 1, 2).contiguous()
    assert np.abs(_run(out, feed.numpy()) - expected).max() < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["static", "dynamic"])
def test_int8_export_stays_within_tolerance_on_the_test_split(trained, tmp_path, mode, capsys):
    fp32, int8 = tmp_path / "fp32.onnx", tmp_path / f"{mode}.onnx"
    assert main(["export", "--ckpt_path", trained, "--output", str(fp32)]) == 0
    assert main(["export", "--ckpt_path", trained, "--output", str(int8), "--quantize", mode]) == 0
    assert "change:" in capsys.readouterr().out
    images, labels, _ = _test_split(trained)
    reference, quantized = _run(fp32, images.numpy()), _run(int8, images.numpy())
    accuracy = [(out.argmax(1) == labels.numpy()).mean() for out in (reference, quantized)]
    # stated tolerance: at most 3 points of accuracy and 90% of the predictions unchanged (300 test images)
    assert abs(accuracy[1] - accuracy[0]) <= 0.03
    assert (reference.argmax(1) == quantized.argmax(1)).mean() >= 0.9
    assert int8.stat().st_size < fp32.stat().st_size / 2.5
    props = {p.key: p.value for p in onnx.load(str(int8)).metadata_props}
    assert props["quantization"] == mode and "class_names" in props


@pytest.mark.slow
def test_benchmark_fills_every_column_on_cpu(trained, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "--ckpt_path", trained, "--output_dir", str(out), "--repeats", "3", "--warmup", "1"]
    assert main([*args, "--batch_size", "4", "--eval_images", "60", "--calibration_images", "32"]) == 0
    printed = capsys.readouterr().out
    assert "ONNX Runtime INT8" in printed and "test_resnet at 32x32 px on cpu" in printed
    rows = list(csv.DictReader((out / "benchmark.csv").open()))
    assert [r["backend"] for r in rows] == ["eager", "compile", "onnx", "onnx_int8"]
    for row in rows:
        assert row["status"] == "ok", row
        for column in ("latency_p50_ms", "latency_p90_ms", "throughput_img_s", "size_mb", "accuracy", "speedup"):
            assert float(row[column]) > 0, (row["backend"], column)
        assert row["accuracy_images"] == "60" and int(row["threads"]) >= 1
    assert rows[0]["accuracy"] == rows[1]["accuracy"] == rows[2]["accuracy"]  # same weights, same images
    assert (out / "benchmark.md").read_text().count("| ok") == 4


@pytest.mark.slow
def test_explain_writes_an_overlay_per_readable_image(trained, tmp_path, capsys):
    from lightning_cv.data import ShapesDataset

    photos = tmp_path / "photos"
    photos.mkdir()
    shapes = ShapesDataset(3, image_size=40, seed=5, split="predict")
    for i in range(3):
        shapes.render(i)[0].save(photos / f"shape{i}.png")
    (photos / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "cams"
    assert main(["explain", "--ckpt_path", trained, "--images", str(photos), "--output", str(out)]) == 0
    overlays = sorted(p.name for p in out.glob("*_gradcam.png"))
    assert overlays == ["shape0_gradcam.png", "shape1_gradcam.png", "shape2_gradcam.png"]
    assert (out / "contact_sheet.png").is_file()
    assert "broken.jpg" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["export", "--ckpt_path", "missing.ckpt", "--output", "m.onnx"], "does not exist"),
        (["export", "--ckpt_path", "{ckpt}", "--output", "m.txt"], "to end in .onnx"),
        (["export", "--ckpt_path", "{ckpt}", "--output", "m.onnx", "--data.colour=red"], "unrecognized arguments"),
        (["benchmark", "--ckpt_path", "{ckpt}", "--backends", "eager,tensorrt"], "Unknown backend"),
        (["explain", "--ckpt_path", "{ckpt}", "--images", "nowhere", "--output", "o"], "does not exist"),
        (["export", "--output", "m.onnx"], "--ckpt_path"),
        (["export", "--ckpt_path", "{ckpt}", "--output", "m.onnx", "--opset", "6"], "onnxruntime cannot run"),
        (["export", "--ckpt_path", "{ckpt}", "--output", "m.onnx", "--opset", "99"], "Unsupported onnx_opset_version"),
    ],
)
def test_bad_input_is_a_short_error(cli_checkpoint, tmp_path, monkeypatch, capsys, args, message):
    # the shared tiny CLI checkpoint will do: none of these mistakes needs a trained model to be refused
    monkeypatch.chdir(tmp_path)
    try:
        code = main([a.replace("{ckpt}", cli_checkpoint) for a in args])
    except SystemExit as exit_info:  # an argument the parser refuses exits as in `fit`
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_foreign_checkpoint_and_static_without_data(tmp_path, capsys):
    torch.save({"state_dict": {}, "epoch": 1}, tmp_path / "other.ckpt")
    assert main(["export", "--ckpt_path", str(tmp_path / "other.ckpt"), "--output", str(tmp_path / "m.onnx")]) == 2
    assert "not a lightning_cv checkpoint" in capsys.readouterr().err
    # a classifier trained on in-memory tensors: its checkpoint records no dataset to calibrate on
    from tests.conftest import make_loader, tiny_kwargs, tiny_trainer

    trainer = tiny_trainer(tmp_path, max_steps=1, enable_checkpointing=True)
    trainer.fit(ImageClassifier(num_classes=3, **tiny_kwargs("test_resnet")), make_loader())
    trainer.save_checkpoint(tmp_path / "mem.ckpt")
    args = ["export", "--ckpt_path", str(tmp_path / "mem.ckpt"), "--output", str(tmp_path / "q.onnx")]
    assert main([*args, "--quantize", "static"]) == 2
    assert "needs calibration images" in capsys.readouterr().err
    assert not (tmp_path / "q.onnx").exists()
    assert main([*args, "--quantize", "dynamic"]) == 0  # needs no data
    assert (tmp_path / "q.onnx").is_file()


@pytest.mark.slow
def test_console_script_runs_export(trained, tmp_path):
    out = tmp_path / "m.onnx"
    result = subprocess.run(
        [sys.executable, "-m", "lightning_cv", "export", "--ckpt_path", trained, "--output", str(out)],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert out.is_file()
