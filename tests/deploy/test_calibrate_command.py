"""`lightning-cv calibrate`, the "unknown" answer and test-time augmentation through the commands that use them."""

import csv
import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from PIL import Image

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.cli import LightningCVCLI, main
from lightning_cv.data.config import OVERRIDE_KEYS
from lightning_cv.models.calibration import fit_temperature, risk_coverage
from lightning_cv.models.scoring import calibrated_probabilities
from tests.conftest import TINY_CLI, tiny_trainer

SHAPES = "{num_train: 240, num_val: 48, num_test: 48, image_size: 32}"

pytestmark = pytest.mark.slow  # end to end through the commands, on a model trained for the file


def _digest(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _split(ckpt, split):
    """``split`` of the checkpoint's data, preprocessed independently of the commands."""
    meta = dict(torch.load(ckpt, weights_only=True)["datamodule_hyper_parameters"])
    config = ImageClassifier.load_from_checkpoint(ckpt).data_config
    # None in the checkpoint means "the model's": resolve it as training did
    meta.update(config.override(**{k: meta.get(k) for k in OVERRIDE_KEYS}).to_arguments())
    data = ImageDataModule(**{k: v for k, v in meta.items() if k != "predict_dir"})
    data.setup("test")
    images, labels = zip(*(item[:2] for item in data.datasets[split]), strict=True)
    return torch.stack(images), torch.tensor(labels)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """test_resnet fitted for 4 epochs on 240 shapes at 32 px: it has learned something (a fitted temperature of
    an untrained model runs off to the largest allowed, since uniform probabilities are its best NLL)."""
    root = tmp_path_factory.mktemp("fit")
    cli = LightningCVCLI(
        args=[
            "fit",
            *TINY_CLI,
            "--model.lr=0.003",
            "--data.dataset=shapes",
            f"--data.dataset_kwargs={SHAPES}",
            "--data.batch_size=24",
            "--trainer.max_epochs=4",
            f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        ]
    )
    return str(cli.trainer.checkpoint_callback.best_model_path)


@pytest.fixture
def cli_checkpoint(trained):
    return trained


@pytest.fixture(scope="module")
def calibrated(trained, tmp_path_factory):
    cli_checkpoint = trained
    out = tmp_path_factory.mktemp("calibrated") / "model.calibrated.ckpt"
    before = _digest(cli_checkpoint)
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", str(out), "--coverage", "0.75"]) == 0
    assert _digest(cli_checkpoint) == before  # the user's checkpoint is never rewritten
    return out


def test_calibrate_fits_the_temperature_on_validation_and_saves_it(cli_checkpoint, calibrated):
    model = ImageClassifier.load_from_checkpoint(cli_checkpoint).eval()
    images, labels = _split(cli_checkpoint, "val")
    with torch.no_grad():
        logits = model(images)
    expected = fit_temperature(logits, labels)
    loaded = ImageClassifier.load_from_checkpoint(calibrated)
    print(f"temperature: {loaded.temperature:.6f} (fitted independently: {expected:.6f})")
    assert loaded.temperature == pytest.approx(expected, rel=1e-6)
    assert loaded.temperature != 1.0
    # coverage 0.75 of the 48 validation images: the 36th highest calibrated confidence
    confidence = (logits / expected).softmax(dim=1).max(dim=1).values.sort(descending=True).values
    assert loaded.min_confidence == pytest.approx(float(confidence[35]), abs=1e-6)
    assert calibrated.with_name("model.calibrated.reliability.png").stat().st_size > 1000
    assert model.temperature == 1.0 and model.min_confidence is None  # the input checkpoint is uncalibrated


def test_calibrate_reports_before_and_after_with_accuracy_unchanged(cli_checkpoint, in_tmp, capsys):
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", "c.ckpt"]) == 0
    printed = capsys.readouterr().out
    line = next(ln for ln in printed.splitlines() if "NLL" in ln and "->" in ln)
    accuracy = line.split("accuracy")[1].split("(")[0].split("->")
    assert accuracy[0].strip() == accuracy[1].strip()
    assert "On 48 test images" in line and "coverage 100%" in printed


def test_calibrate_never_overwrites_without_being_told(cli_checkpoint, in_tmp, capsys):
    before = _digest(cli_checkpoint)
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", cli_checkpoint]) == 2
    assert "is the checkpoint being calibrated" in capsys.readouterr().err
    assert _digest(cli_checkpoint) == before
    (in_tmp / "taken.ckpt").write_bytes(b"someone's file")
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", "taken.ckpt"]) == 2
    assert "exists; nothing was written" in capsys.readouterr().err
    assert (in_tmp / "taken.ckpt").read_bytes() == b"someone's file"
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", "taken.ckpt", "--overwrite"]) == 0
    assert ImageClassifier.load_from_checkpoint(in_tmp / "taken.ckpt").temperature != 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--min_confidence", "1.5"], "min_confidence` in [0, 1]"),
        (["--coverage", "0"], "`coverage` in (0, 1]"),
        (["--coverage", "0.9", "--min_confidence", "0.5"], "not both"),
    ],
)
def test_calibrate_mistakes_are_one_line(cli_checkpoint, in_tmp, capsys, args, message):
    assert main(["calibrate", "--ckpt_path", cli_checkpoint, "--output", "c.ckpt", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") <= 2
    assert not (in_tmp / "c.ckpt").exists()


def test_calibrating_without_validation_data_says_how_to_get_some(cli_checkpoint, in_tmp, capsys):
    for name in ImageClassifier.load_from_checkpoint(cli_checkpoint).hparams["class_names"]:  # no val/ folder
        (in_tmp / "photos" / "train" / name).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), (40 * i, 90, 200)).save(in_tmp / "photos" / "train" / name / f"{i}.png")
    ckpt = torch.load(cli_checkpoint, weights_only=True)  # a model trained on that folder
    ckpt["datamodule_hyper_parameters"].update(
        dataset=None, dataset_kwargs=None, data_dir=str(in_tmp / "photos"), val_split=0.0
    )
    torch.save(ckpt, in_tmp / "folder.ckpt")
    assert main(["calibrate", "--ckpt_path", "folder.ckpt"]) == 2
    err = capsys.readouterr().err
    assert "Calibrating needs validation images" in err and "val/ folder" in err and err.count("\n") <= 2
    assert not (in_tmp / "folder.calibrated.ckpt").exists()


def _photos(folder, n=4):
    folder.mkdir()
    for i in range(n):
        Image.new("RGB", (40, 40), (60 * i, 90, 200 - 40 * i)).save(folder / f"img{i}.png")
    return folder


def _predict(ckpt, folder, out, *extra):
    LightningCVCLI(
        args=[
            "predict",
            f"--ckpt_path={ckpt}",
            f"--data.predict_dir={folder}",
            f"--prediction.output_dir={out}",
            "--prediction.formats=[csv, jsonl]",
            "--trainer.enable_progress_bar=false",
            *extra,
        ]
    )
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    return rows, [json.loads(line) for line in (out / "predictions.jsonl").open()]


def test_predict_answers_unknown_below_the_reject_threshold(calibrated, in_tmp):
    folder = _photos(in_tmp / "photos")
    rows, lines = _predict(calibrated, folder, in_tmp / "all", "--predict.min_confidence=0")
    assert all(r["predicted_class"] != "unknown" and int(r["predicted_index"]) >= 0 for r in rows)
    rows, lines = _predict(calibrated, folder, in_tmp / "none", "--predict.min_confidence=1")
    assert [r["predicted_class"] for r in rows] == ["unknown"] * 4
    assert [r["predicted_index"] for r in rows] == ["-1"] * 4
    assert all(line["predicted_class"] == "unknown" and line["probability"] < 1 for line in lines)
    # the calibrated checkpoint's own threshold (coverage 0.75) applies without options: rows below it say unknown
    model = ImageClassifier.load_from_checkpoint(calibrated)
    rows, lines = _predict(calibrated, folder, in_tmp / "own")
    for line in lines:
        assert (line["predicted_class"] == "unknown") == (line["probability"] < model.min_confidence)


def test_predict_coverage_chooses_the_threshold_on_validation(calibrated, in_tmp):
    folder = _photos(in_tmp / "photos")
    rows, _ = _predict(
        calibrated, folder, in_tmp / "out", "--predict.coverage=0.5", "--data.dataset=shapes",
        f"--data.dataset_kwargs={SHAPES}",
    )  # fmt: skip
    assert len(rows) == 4
    with pytest.raises(ValueError, match="not both"):
        _predict(calibrated, folder, in_tmp / "x", "--predict.coverage=0.5", "--predict.min_confidence=0.3")


@pytest.mark.parametrize(("option", "message"), [("--predict.min_confidence=2", "in [0, 1]"),
                                                 ("--predict.coverage=0", "`coverage` in (0, 1]")])
def test_predict_refuses_a_threshold_outside_0_1(calibrated, in_tmp, capsys, option, message):
    folder = _photos(in_tmp / "photos")
    code = main(["predict", f"--ckpt_path={calibrated}", f"--data.predict_dir={folder}", option])
    assert code == 2 and message in capsys.readouterr().err


def _run(path, images):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: images})[0]


def test_export_puts_the_temperature_in_the_graph_and_the_metadata(calibrated, in_tmp, capsys):
    assert main(["export", "--ckpt_path", str(calibrated), "--output", "m.onnx", "--eval_images", "0"]) == 0
    model = ImageClassifier.load_from_checkpoint(calibrated).eval()
    images, _ = _split(calibrated, "test")
    with torch.no_grad():
        expected = (model(images) / model.temperature).numpy()
    got = _run(in_tmp / "m.onnx", images.numpy())
    print(f"ONNX vs PyTorch calibrated logits, max abs difference: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() < 1e-4
    assert (got.argmax(1) == expected.argmax(1)).all()
    props = {p.key: p.value for p in onnx.load("m.onnx").metadata_props}
    assert json.loads(props["temperature"]) == pytest.approx(model.temperature)
    assert json.loads(props["min_confidence"]) == pytest.approx(model.min_confidence)
    assert props["tta"] == "none"


@pytest.mark.parametrize("tta", ["flip", "flip_crops"])
def test_export_tta_graph_equals_pytorch_tta(calibrated, in_tmp, tta):
    args = ["export", "--ckpt_path", str(calibrated), "--output", "t.onnx", "--tta", tta, "--softmax"]
    assert main([*args, "--eval_images", "0"]) == 0
    model = ImageClassifier.load_from_checkpoint(calibrated).eval()
    images, _ = _split(calibrated, "test")
    with torch.no_grad():
        expected = calibrated_probabilities(model, images, temperature=model.temperature, tta=tta).numpy()
    got = _run(in_tmp / "t.onnx", images.numpy())
    print(f"ONNX {tta} vs PyTorch {tta}, max abs difference: {np.abs(got - expected).max():.2e}")
    assert np.abs(got - expected).max() < 1e-5
    assert {p.key: p.value for p in onnx.load("t.onnx").metadata_props}["tta"] == tta


def test_tta_on_too_small_an_input_is_one_line(calibrated, in_tmp, capsys):
    code = main(["export", "--ckpt_path", str(calibrated), "--output", "t.onnx", "--tta", "flip_crops",
                 "--data.image_size", "12", "--eval_images", "0"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "at least 16 px" in err and "tta='flip'" in err
    assert not (in_tmp / "t.onnx").exists()


def test_benchmark_with_tta_measures_the_same_scores_on_every_backend(calibrated, in_tmp, capsys):
    args = ["benchmark", "--ckpt_path", str(calibrated), "--output_dir", "bench", "--backends", "eager,onnx"]
    assert main([*args, "--tta", "flip", "--repeats", "2", "--warmup", "1", "--batch_size", "4"]) == 0
    rows = list(csv.DictReader((in_tmp / "bench" / "benchmark.csv").open()))
    assert [r["backend"] for r in rows] == ["eager", "onnx"]
    assert rows[0]["accuracy"] == rows[1]["accuracy"] != ""
    assert "TTA flip" in capsys.readouterr().out


def test_test_with_tta_reports_the_mean_of_the_views_and_risk_coverage(calibrated, tmp_path):
    model = ImageClassifier.load_from_checkpoint(calibrated).eval()
    meta = dict(torch.load(calibrated, weights_only=True)["datamodule_hyper_parameters"])
    data = ImageDataModule(**{k: v for k, v in meta.items() if k != "predict_dir"})
    model.tta = "flip"
    trainer = tiny_trainer(tmp_path, logger=False)
    figures = trainer.test(model, datamodule=data, verbose=False)[0]
    images, labels = _split(calibrated, "test")
    with torch.no_grad():
        probs = calibrated_probabilities(model, images, temperature=model.temperature, tta="flip")
    confidence, predicted = probs.max(dim=1)
    assert figures["test_acc"] == pytest.approx(float((predicted == labels).float().mean()))
    expected = risk_coverage(confidence, predicted == labels)
    assert [{**r, "min_confidence": 0} for r in model.risk_coverage] == [{**r, "min_confidence": 0} for r in expected]
    # the test ran in batches, this in one: the same confidences up to float rounding
    assert [r["min_confidence"] for r in model.risk_coverage] == pytest.approx([r["min_confidence"] for r in expected])
    written = list(csv.DictReader((tmp_path / "risk_coverage_test.csv").open()))
    assert [float(r["coverage"]) for r in written] == [1.0, 0.95, 0.9, 0.8]
    assert int(written[0]["answered"]) == len(labels)


def test_fit_with_calibrate_writes_the_calibrated_best_checkpoint(in_tmp):
    cli = LightningCVCLI(args=["fit", *TINY_CLI, "--trainer.max_epochs=1", "--calibrate=true"])
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    calibrated = best.with_name(f"{best.stem}.calibrated.ckpt")
    model = ImageClassifier.load_from_checkpoint(calibrated)
    assert model.temperature != 1.0 and ImageClassifier.load_from_checkpoint(best).temperature == 1.0
    assert best.with_name(f"{best.stem}.calibrated.reliability.png").exists()


def test_the_tta_option_reaches_test_and_predict(calibrated, in_tmp):
    model = ImageClassifier.load_from_checkpoint(calibrated).eval()
    images, labels = _split(calibrated, "test")
    with torch.no_grad():
        flip = calibrated_probabilities(model, images, temperature=model.temperature, tta="flip")
    args = ["test", f"--ckpt_path={calibrated}", "--tta=flip", "--trainer.enable_progress_bar=false",
            "--data.dataset=shapes", f"--data.dataset_kwargs={SHAPES}"]  # fmt: skip
    tested = LightningCVCLI(args=args)
    assert tested.model.tta == "flip"
    accuracy = tested.trainer.callback_metrics["test_acc"].item()
    assert accuracy == pytest.approx(float((flip.argmax(1) == labels).float().mean()))

    folder = in_tmp / "photos"
    folder.mkdir()
    for i in range(4):  # lopsided pictures: the mirror image scores differently
        picture = Image.new("RGB", (40, 40), (20, 20, 20))
        picture.paste((230, 200 - 40 * i, 60), (0, 0, 12 + 5 * i, 40))
        picture.save(folder / f"img{i}.png")
    _, lines = _predict(calibrated, folder, in_tmp / "flip", "--tta=flip", "--predict.min_confidence=0")
    meta = dict(torch.load(calibrated, weights_only=True)["datamodule_hyper_parameters"])
    meta.update(model.data_config.override(**{k: meta.get(k) for k in OVERRIDE_KEYS}).to_arguments())
    data = ImageDataModule(**{**meta, "predict_dir": str(folder)})
    data.setup("predict")
    pictures = torch.stack([item[0] for item in data.datasets["predict"]])
    with torch.no_grad():
        expected = calibrated_probabilities(model, pictures, temperature=model.temperature, tta="flip")
        plain = calibrated_probabilities(model, pictures, temperature=model.temperature)
    by_name = {Path(line["path"]).name: line for line in lines}
    for path, row, unflipped in zip(data.datasets["predict"].paths, expected, plain, strict=True):
        line = by_name[Path(path).name]
        assert line["probability"] == pytest.approx(float(row.max()), abs=2e-6)
        assert line["probability"] != pytest.approx(float(unflipped.max()), abs=2e-6)
