"""Multi-label models through export, evaluation and the benchmark: sigmoid files, thresholds, mAP and F1."""

import csv
import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier
from lightning_cv.cli import LightningCVCLI, main
from lightning_cv.deploy import export_onnx
from lightning_cv.deploy.benchmark import benchmark_backends, format_markdown, write_results
from lightning_cv.deploy.evaluate import onnx_quality, quality
from tests.conftest import TINY_CLI

NAMES = ["circle", "square", "triangle", "star"]


class TinyMultilabel(nn.Module):
    """A stand-in multi-label classifier: what the deploy code reads is ``hparams`` and a ``thresholds`` buffer."""

    def __init__(self, thresholds=(0.3, 0.5, 0.6, 0.45)):
        super().__init__()
        torch.manual_seed(0)
        self.hparams = {"task": "multilabel", "class_names": NAMES, "num_classes": len(NAMES)}
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, len(NAMES))
        self.register_buffer("thresholds", torch.tensor(thresholds))

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0], session.get_outputs()[0].name


def _metadata(path):
    return {p.key: p.value for p in onnx.load(str(path)).metadata_props}


# ------------------------------------------------------------------------------------------------- export
@pytest.mark.parametrize("batch", [1, 7])
def test_sigmoid_file_matches_pytorch_and_records_the_thresholds(tmp_path, batch):
    model = TinyMultilabel().eval()
    report = export_onnx(
        model, tmp_path / "m.onnx", torch.randn(1, 3, 16, 16), task="multilabel", thresholds=[0.3, 0.5, 0.6, 0.45]
    )
    assert set(report.max_abs_diff) == {1, 7} and max(report.max_abs_diff.values()) < 1e-5
    images = torch.randn(batch, 3, 16, 16)
    with torch.no_grad():
        expected = torch.sigmoid(model(images)).numpy()
    got, output = _run(tmp_path / "m.onnx", images.numpy())
    assert output == "scores" and got.shape == (batch, 4)
    assert np.abs(got - expected).max() < 1e-5
    meta = _metadata(tmp_path / "m.onnx")
    assert meta["task"] == "multilabel" and meta["output"] == "scores" and meta["softmax"] == "false"
    assert json.loads(meta["thresholds"]) == [0.3, 0.5, 0.6, 0.45]


def test_real_multilabel_classifier_exports_with_raw_pixels(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet", num_classes=3, pretrained=False, task="multilabel", thresholds=[0.2, 0.4, 0.7]
    ).eval()
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    report = export_onnx(
        model, tmp_path / "p.onnx", torch.randn(1, 3, 32, 32), task="multilabel", thresholds=model.thresholds,
        input_format="uint8_nhwc", mean=mean, std=std,
    )  # fmt: skip
    assert report.thresholds == pytest.approx([0.2, 0.4, 0.7]) and report.task == "multilabel"
    pixels = torch.randint(0, 256, (7, 32, 32, 3), dtype=torch.uint8)
    normalised = (pixels.permute(0, 3, 1, 2).float() / 255 - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(
        std
    ).view(1, 3, 1, 1)
    with torch.no_grad():
        expected = torch.sigmoid(model(normalised)).numpy()
    got, _ = _run(tmp_path / "p.onnx", pixels.numpy())
    assert np.abs(got - expected).max() < 1e-4
    assert json.loads(_metadata(tmp_path / "p.onnx")["thresholds"]) == pytest.approx([0.2, 0.4, 0.7])


def test_thresholds_default_to_one_half_and_bad_ones_are_refused(tmp_path):
    model = TinyMultilabel()
    export_onnx(model, tmp_path / "d.onnx", torch.randn(1, 3, 16, 16), task="multilabel")
    assert json.loads(_metadata(tmp_path / "d.onnx")["thresholds"]) == [0.5] * 4
    example = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match=r"Expected one threshold per class \(4\) or a single number, but got 2"):
        export_onnx(model, tmp_path / "x.onnx", example, task="multilabel", thresholds=[0.5, 0.5])
    with pytest.raises(ValueError, match=r"Expected `thresholds` in \[0, 1\] \(they cut sigmoid scores\)"):
        export_onnx(model, tmp_path / "x.onnx", example, task="multilabel", thresholds=1.5)
    with pytest.raises(ValueError, match=r"`softmax` is for multi-class models, but this one is multi-label"):
        export_onnx(model, tmp_path / "x.onnx", example, task="multilabel", softmax=True)
    with pytest.raises(ValueError, match=r"Expected `task` to be one of 'multiclass', 'multilabel', but got 'multi'"):
        export_onnx(model, tmp_path / "x.onnx", example, task="multi")
    assert not (tmp_path / "x.onnx").exists()


# ------------------------------------------------------------------------------------------------- quality
def _reference_ap(scores, positives):
    """Average precision as scikit-learn defines it: the mean of the precision at the rank of each positive."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    hits, precisions = 0, []
    for rank, i in enumerate(order, start=1):
        if positives[i]:
            hits += 1
            precisions.append(hits / rank)
    return sum(precisions) / len(precisions)


def _reference_f1(predicted, truth):
    """Per-label counts by hand; macro F1 (0 for a label with no positive and no prediction) and micro F1."""
    per_label, totals = [], np.zeros(3)
    for c in range(len(truth[0])):
        tp = sum(p[c] and t[c] for p, t in zip(predicted, truth, strict=True))
        fp = sum(p[c] and not t[c] for p, t in zip(predicted, truth, strict=True))
        fn = sum(t[c] and not p[c] for p, t in zip(predicted, truth, strict=True))
        per_label.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
        totals += (tp, fp, fn)
    return sum(per_label) / len(per_label), 2 * totals[0] / (2 * totals[0] + totals[1] + totals[2])


def test_quality_agrees_with_an_independent_computation():
    scores = [
        [0.90, 0.40, 0.10, 0.20],
        [0.20, 0.35, 0.70, 0.30],
        [0.60, 0.80, 0.65, 0.10],
        [0.30, 0.20, 0.95, 0.40],
        [0.55, 0.45, 0.20, 0.05],
    ]
    truth = [[1, 1, 0, 0], [0, 0, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0], [0, 1, 0, 0]]  # label 3: no positive at all
    thresholds = [0.5, 0.3, 0.8, 0.5]  # label 1 at 0.3 catches its 0.4 and 0.35; label 2 at 0.8 drops 0.7
    got = quality(torch.tensor(scores), torch.tensor(truth, dtype=torch.float32), "multilabel", thresholds)

    columns = [([row[c] for row in scores], [row[c] for row in truth]) for c in range(4)]
    expected_map = np.mean([_reference_ap(s, t) for s, t in columns if any(t)])  # label 3 has no AP to average
    predicted = [[s >= thr for s, thr in zip(row, thresholds, strict=True)] for row in scores]
    macro, micro = _reference_f1(predicted, truth)
    assert got["map"] == pytest.approx(expected_map, abs=1e-6)
    assert got["f1"] == pytest.approx(macro, abs=1e-6) and got["f1_micro"] == pytest.approx(micro, abs=1e-6)
    assert macro != pytest.approx(quality(torch.tensor(scores), torch.tensor(truth), "multilabel")["f1"])  # 0.5 each

    labels = torch.tensor([0, 2, 1, 0, 1])  # the multi-class figure is untouched: top-1 accuracy
    assert quality(torch.tensor(scores), labels) == {"accuracy": pytest.approx(3 / 5)}


def test_onnx_quality_runs_the_file_on_multi_hot_batches(tmp_path):
    model = TinyMultilabel().eval()
    export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 16, 16), task="multilabel")
    images = torch.randn(12, 3, 16, 16)
    targets = (torch.rand(12, 4, generator=torch.Generator().manual_seed(1)) > 0.5).float()
    loader = DataLoader(TensorDataset(images, targets), batch_size=5)
    with torch.no_grad():
        reference = torch.sigmoid(model(images))
    got = onnx_quality(tmp_path / "m.onnx", loader, "float", (0.5,) * 3, (0.5,) * 3, "multilabel", model.thresholds)
    assert got == pytest.approx(quality(reference, targets, "multilabel", model.thresholds), abs=1e-6)
    assert set(got) == {"map", "f1", "f1_micro"}


# ------------------------------------------------------------------------------------------------- benchmark
def test_benchmark_reports_map_and_f1_per_backend(tmp_path):
    model = TinyMultilabel().eval()
    export_onnx(model, tmp_path / "m.onnx", torch.randn(1, 3, 16, 16), task="multilabel")
    images = torch.randn(16, 3, 16, 16)
    targets = (torch.rand(16, 4, generator=torch.Generator().manual_seed(2)) > 0.5).float()
    results = benchmark_backends(
        model, images[:1], onnx_path=tmp_path / "m.onnx", backends=["eager", "onnx"], batch_size=2, warmup=0,
        repeats=2, eval_batches=DataLoader(TensorDataset(images, targets), batch_size=6), log=lambda _: None,
        task="multilabel", thresholds=model.thresholds,
    )  # fmt: skip
    with torch.no_grad():
        scores = torch.sigmoid(model(images)).numpy()
    expected_map = np.mean([_reference_ap(list(scores[:, c]), list(targets[:, c])) for c in range(4)])
    for r in results:
        assert r.status == "ok" and r.accuracy is None and r.accuracy_images == 16
        assert r.mean_ap == pytest.approx(expected_map, abs=1e-5)
    assert results[0].f1 == pytest.approx(results[1].f1, abs=1e-6)  # the same images and thresholds everywhere
    table = format_markdown(results)
    assert "| mAP | F1 (macro) |" in table and "Accuracy" not in table
    rows = list(csv.DictReader(write_results(results, tmp_path / "out")["csv"].open()))
    assert "accuracy" not in rows[0] and float(rows[1]["mean_ap"]) == pytest.approx(expected_map, abs=1e-5)


# ------------------------------------------------------------------------------------------------- command line
@pytest.fixture(scope="module")
def multilabel_checkpoint(tmp_path_factory):
    """`lightning-cv fit` of test_resnet on the multi-label shapes (one epoch): thresholds tuned on validation."""
    root = tmp_path_factory.mktemp("ml-fit")
    cli = LightningCVCLI(
        args=[
            "fit", *TINY_CLI, "--model.task=multilabel", "--data.dataset=shapes_multilabel", "--trainer.max_epochs=1",
            f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        ]
    )  # fmt: skip
    return str(cli.trainer.checkpoint_callback.best_model_path)


def test_export_command_writes_sigmoid_scores_and_the_checkpoints_thresholds(multilabel_checkpoint, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt_path", multilabel_checkpoint, "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "mAP and F1 on 12 test images:" in printed and "fp32: mAP " in printed and ", F1 " in printed
    model = ImageClassifier.load_from_checkpoint(multilabel_checkpoint, weights_only=True).eval()
    images = torch.randn(7, 3, 32, 32)
    with torch.no_grad():
        expected = torch.sigmoid(model(images)).numpy()
    got, output = _run(out, images.numpy())
    assert output == "scores" and np.abs(got - expected).max() < 1e-4
    meta = _metadata(out)
    assert meta["task"] == "multilabel" and json.loads(meta["class_names"]) == model.hparams["class_names"]
    assert model.thresholds.tolist() != [0.5] * 6  # tuned on validation: the check below can tell them apart
    assert json.loads(meta["thresholds"]) == pytest.approx(model.thresholds.tolist(), abs=1e-7)

    given = tmp_path / "given.onnx"
    args = ["export", "--ckpt_path", multilabel_checkpoint, "--output", str(given), "--eval_images", "0"]
    assert main([*args, "--thresholds", "0.3"]) == 0
    assert json.loads(_metadata(given)["thresholds"]) == [0.3] * 6


def test_dynamic_int8_export_prints_the_change_in_map_and_f1(multilabel_checkpoint, tmp_path, capsys):
    out = tmp_path / "q.onnx"
    args = ["export", "--ckpt_path", multilabel_checkpoint, "--output", str(out), "--quantize", "dynamic"]
    assert main([*args, "--thresholds", "[0.1, 0.2, 0.3, 0.4, 0.5, 0.6]"]) == 0
    printed = capsys.readouterr().out
    line = next(line for line in printed.splitlines() if "INT8: mAP" in line)
    assert line.strip().startswith("fp32: mAP ") and "change: mAP " in line and ", F1 " in line and "points" in line
    meta = _metadata(out)
    assert meta["quantization"] == "dynamic" and json.loads(meta["thresholds"]) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--softmax"], "`--softmax` is for multi-class models, but this checkpoint's model is multi-label"),
        (["--thresholds", "[0.2, 0.3]"], "Expected one threshold per class (6) or a single number, but got 2"),
        (["--thresholds", "1.5"], "Expected `thresholds` in [0, 1] (they cut sigmoid scores), but got [1.5"),
    ],
)
def test_options_that_do_not_fit_a_multilabel_model_are_one_line_errors(
    multilabel_checkpoint, tmp_path, capsys, extra, message
):
    out = tmp_path / "m.onnx"
    assert main(["export", "--ckpt_path", multilabel_checkpoint, "--output", str(out), *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2  # the error line and the LIGHTNING_CV_DEBUG hint
    assert not out.exists()


def test_thresholds_on_a_multiclass_checkpoint_are_refused(cli_checkpoint, tmp_path, capsys):
    args = ["export", "--ckpt_path", cli_checkpoint, "--output", str(tmp_path / "m.onnx"), "--thresholds", "0.3"]
    assert main(args) == 2
    assert "`--thresholds` is for multi-label models, but this checkpoint's model is multi-class" in (
        capsys.readouterr().err
    )


def test_benchmark_command_shows_map_and_f1(multilabel_checkpoint, tmp_path, capsys):
    out = tmp_path / "bench"
    args = ["benchmark", "--ckpt_path", multilabel_checkpoint, "--output_dir", str(out), "--repeats", "2"]
    args += ["--warmup", "0", "--batch_size", "2", "--backends", "eager,onnx,onnx_int8", "--quantize", "dynamic"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "mAP and F1 on 12 test images" in printed and "F1 (macro)" in printed
    rows = list(csv.DictReader((out / "benchmark.csv").open()))
    assert [r["backend"] for r in rows] == ["eager", "onnx", "onnx_int8"] and "accuracy" not in rows[0]
    for row in rows:
        assert row["status"] == "ok" and 0 < float(row["mean_ap"]) <= 1 and 0 <= float(row["f1"]) <= 1
    assert float(rows[0]["mean_ap"]) == pytest.approx(float(rows[1]["mean_ap"]), abs=1e-6)
    assert float(rows[0]["f1"]) == pytest.approx(float(rows[1]["f1"]), abs=1e-6)
    assert "| mAP | F1 (macro) |" in (out / "benchmark.md").read_text()
    assert json.loads(_metadata(out / "model.onnx")["thresholds"]) == pytest.approx(
        ImageClassifier.load_from_checkpoint(multilabel_checkpoint, weights_only=True).thresholds.tolist(), abs=1e-7
    )


def test_explain_command_writes_one_overlay_per_label(multilabel_checkpoint, tmp_path, capsys):
    import re

    from lightning_cv.data import ShapesDataset

    photos = tmp_path / "photos"
    photos.mkdir()
    shapes = ShapesDataset(2, image_size=40, seed=5, split="predict")
    for i in range(2):
        shapes.render(i)[0].save(photos / f"shape{i}.png")
    names = ImageClassifier.load_from_checkpoint(multilabel_checkpoint, weights_only=True).hparams["class_names"]
    args = ["explain", "--ckpt_path", multilabel_checkpoint, "--images", str(photos)]

    assert main([*args, "--output", str(tmp_path / "cams")]) == 0
    printed = capsys.readouterr().out
    assert "Predicted labels:" in printed
    for i in range(2):  # the files of an image are the labels its summary line names, by index
        line = next(line for line in printed.splitlines() if f"shape{i}.png: " in line)
        listed = re.findall(r"(\w+) \d+\.\d%", line.split(": ", 1)[1])
        listed = listed[:1] if "no label reaches its threshold" in line else listed
        written = sorted(p.name for p in (tmp_path / "cams").glob(f"shape{i}_gradcam_*.png"))
        assert written == sorted(f"shape{i}_gradcam_{names.index(name)}.png" for name in listed)

    assert main([*args, "--output", str(tmp_path / "one"), "--target_class", "4"]) == 0
    assert sorted(p.name for p in (tmp_path / "one").glob("*.png")) == [
        "contact_sheet.png",
        "shape0_gradcam_4.png",
        "shape1_gradcam_4.png",
    ]
