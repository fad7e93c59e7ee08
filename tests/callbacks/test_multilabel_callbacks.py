"""The callbacks with a multi-label module: gallery, Grad-CAM logger, prediction writer and EMA raw metrics.

The modules here are plain LightningModules that state ``task="multilabel"`` in their hyperparameters and hold a
``thresholds`` tensor (a buffer here), as :mod:`lightning_cv.data.batch` asks of any multi-label module.
"""

import copy
import csv
import json

import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import lightning_cv.callbacks.gradcam_logger as gradcam_logger
from lightning_cv import ImageClassifier
from lightning_cv.callbacks import EMA, GradCAMLogger, PredictionGallery, PredictionWriter
from lightning_cv.data.datasets import ImageFileDataset, SkippingDataLoader, collate_readable
from lightning_cv.data.transforms import build_eval_transform
from lightning_cv.interpret.drawing import MIN_DISPLAY_WIDTH
from lightning_cv.interpret.gradcam import GradCAM
from tests.callbacks.test_gallery import red_pixels
from tests.conftest import tiny_trainer
from tests.data.helpers import write_image

NAMES = ["a", "b", "c"]
SIZE = 16


def multilabel_loader(num_samples=8, batch_size=4, seed=0, size=SIZE):
    """Images with multi-hot targets: label k when channel k is bright, so a tiny net can learn something."""
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(num_samples, 3, generator=g) > 0.5).float()
    targets[0] = torch.tensor([0.0, 0.0, 0.0])  # one image without any label
    images = torch.randn(num_samples, 3, size, size, generator=g) * 0.3 + targets.view(-1, 3, 1, 1) - 0.5
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size)


class MultiLabelNet(LightningModule):
    """A tiny conv net trained with one sigmoid per label, its decision thresholds in a buffer."""

    def __init__(self, class_names=NAMES, task="multilabel", thresholds=(0.5, 0.5, 0.5), give_probs=True):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 3)
        )
        self.register_buffer("thresholds", torch.tensor(thresholds, dtype=torch.float32))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.binary_cross_entropy_with_logits(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        probs = self(batch[0]).sigmoid()
        self.log("val_loss", F.binary_cross_entropy(probs, batch[1]))
        return {"probs": probs} if self.hparams["give_probs"] else None

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


# ---------------------------------------------------------------------------------------------------- gallery
def test_gallery_ranks_by_binary_cross_entropy_summed_over_labels():
    gallery = PredictionGallery(num_images=3)
    images = torch.arange(5, dtype=torch.float32).view(5, 1, 1, 1).expand(5, 3, 2, 2)
    target = torch.tensor([[1, 0, 0], [1, 1, 0], [0, 0, 0], [0, 1, 1], [1, 0, 1]], dtype=torch.float32)
    probs = torch.tensor(
        [[0.9, 0.1, 0.1], [0.6, 0.2, 0.9], [0.4, 0.4, 0.4], [0.3, 0.7, 0.99], [0.05, 0.5, 0.97]]
    )  # image 4 has the single most confident miss, image 1 more wrong in total: the sum ranks image 1 first
    gallery.update(images[:2], target[:2], probs[:2], task="multilabel")
    gallery.update(images[2:], target[2:], probs[2:], task="multilabel")
    expected = F.binary_cross_entropy(probs.double(), target.double(), reduction="none").sum(dim=1)
    order = expected.argsort(descending=True)[:3].tolist()
    assert [int(item[1][0, 0, 0]) for item in gallery._kept] == order
    assert [item[0] for item in gallery._kept] == pytest.approx(expected[order].tolist(), rel=1e-5)
    # ranking by the worst single label would put image 4 first
    assert (
        order
        != F.binary_cross_entropy(probs, target, reduction="none")
        .max(dim=1)
        .values.argsort(descending=True)[:3]
        .tolist()
    )


def test_gallery_captions_list_the_sets_and_mark_a_different_set_in_red():
    gallery = PredictionGallery(num_images=3)
    images = torch.tensor([[0.0, 1.0], [2.0, 3.0]]).expand(3, 3, 2, 2)
    target = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    probs = torch.tensor([[0.91, 0.2, 0.55], [0.1, 0.2, 0.3], [0.2, 0.8, 0.59]])
    # c's threshold 0.56: 0.55 for image 0 is predicted under 0.5, not here; 0.59 for image 2 is
    thresholds = torch.tensor([0.5, 0.5, 0.56])
    gallery.update(images, target, probs, task="multilabel", thresholds=thresholds)
    by_true = {caption[0][0]: caption for caption in gallery.captions(NAMES)}
    assert by_true["true: a, b"] == (("true: a, b", "pred: a 0.91"), True)
    assert by_true["true: none"] == (("true: none", "pred: none"), False)
    assert by_true["true: b"] == (("true: b", "pred: b 0.80, c 0.59"), True)  # highest score first

    gallery = PredictionGallery(num_images=3)
    gallery.update(images, target, probs, task="multilabel")  # 0.5 each
    captions = gallery.captions(NAMES)
    assert (("true: a, b", "pred: a 0.91, c 0.55"), True) in captions
    sheet = gallery.image(None, NAMES)
    tile = (sheet.width - 4 * 4) // 3
    columns = [sheet.crop((4 + k * (tile + 4), 0, 4 + k * (tile + 4) + tile, sheet.height)) for k in range(3)]
    assert [red_pixels(c) > 20 for c in columns] == [wrong for _lines, wrong in captions]
    assert sorted(wrong for _lines, wrong in captions) == [False, True, True]


def test_gallery_fits_a_long_caption_into_its_tile():
    gallery = PredictionGallery(num_images=1)
    names = [f"a_rather_long_label_name_{k}" for k in range(8)]
    gallery.update(torch.zeros(1, 3, 4, 4), torch.ones(1, 8), torch.full((1, 8), 0.9), task="multilabel")
    sheet = gallery.image(None, names)
    assert sheet.width == 160 + 2 * 4  # the tile keeps its width: the caption is shortened, not the tile widened


def test_gallery_scores_a_module_without_probs_with_sigmoids(tmp_path):
    offered = []

    class Recording(PredictionGallery):
        def update(self, images, target, probs, task="multiclass", thresholds=None):
            offered.append((images, probs, task, thresholds))
            super().update(images, target, probs, task=task, thresholds=thresholds)

    torch.manual_seed(0)
    model = MultiLabelNet(thresholds=(0.4, 0.5, 0.6), give_probs=False)
    gallery = Recording(num_images=4)
    tiny_trainer(tmp_path, callbacks=[gallery]).fit(model, multilabel_loader(), multilabel_loader())
    assert len(offered) == 2 and all(task == "multilabel" for _i, _p, task, _t in offered)
    for images, probs, _task, thresholds in offered:  # the last epoch's weights: no step after validation
        torch.testing.assert_close(probs, model(images).sigmoid())
        torch.testing.assert_close(thresholds, torch.tensor([0.4, 0.5, 0.6]))
    with Image.open(tmp_path / "images" / "val_worst_predictions" / "step_000002.png") as sheet:
        assert sheet.width == 4 * 160 + 5 * 4


# ---------------------------------------------------------------------------------------------------- Grad-CAM
def run_gradcam(tmp_path, monkeypatch, model, **kwargs):
    """Validate with a GradCAMLogger; the captions of every overlay drawn, and the callback."""
    captions = []
    real_panel = gradcam_logger.panel
    monkeypatch.setattr(gradcam_logger, "panel", lambda *args: captions.append(args[3]) or real_panel(*args))
    callback = GradCAMLogger(num_images=3, **kwargs)
    tiny_trainer(tmp_path, callbacks=[callback]).validate(model, multilabel_loader(), verbose=False)
    return captions, callback


def scores_of(model, images):
    with torch.no_grad():
        return model.eval()(images).sigmoid()


def test_gradcam_explains_each_predicted_label_with_its_name_and_score(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = MultiLabelNet(thresholds=(0.0, 0.0, 1.01))  # a and b always predicted, c never
    captions, callback = run_gradcam(tmp_path, monkeypatch, model)
    images = next(iter(multilabel_loader()))[0][:3]
    probs = scores_of(model, images)
    assert len(captions) == 6 and callback.last_cams.shape == (6, SIZE, SIZE)  # two overlays per image
    expected_targets = [(i, c) for i in range(3) for c in sorted((0, 1), key=lambda c: -float(probs[i, c]))]
    assert callback.last_targets == expected_targets
    assert [lines[0] for lines in captions] == [f"{NAMES[c]} ({float(probs[i, c]):.1%})" for i, c in expected_targets]
    assert all(lines[1].startswith("pred: yes, true: ") for lines in captions)
    for k, (i, c) in enumerate(expected_targets):  # each overlay explains its own label
        reference = GradCAM(model).generate_cam(images[i], target_class=c)
        torch.testing.assert_close(callback.last_cams[k], reference, atol=1e-5, rtol=1e-4)
    with Image.open(tmp_path / "images" / "val_gradcam" / "step_000000.png") as sheet:
        # three tiles of two overlays side by side in one row, 4 px gaps
        assert sheet.width == 6 * MIN_DISPLAY_WIDTH + 4 * 4 and sheet.height < 2 * MIN_DISPLAY_WIDTH


def test_gradcam_caps_the_overlays_and_falls_back_to_the_top_label(tmp_path, monkeypatch):
    torch.manual_seed(0)
    captions, callback = run_gradcam(tmp_path, monkeypatch, MultiLabelNet(thresholds=(0.0,) * 3), max_labels=2)
    assert len(captions) == 6 and [i for i, _ in callback.last_targets] == [0, 0, 1, 1, 2, 2]
    torch.manual_seed(0)
    model = MultiLabelNet(thresholds=(1.01,) * 3)  # nothing predicted: the top-scoring label of each image
    captions, callback = run_gradcam(tmp_path, monkeypatch, model)
    probs = scores_of(model, next(iter(multilabel_loader()))[0][:3])
    assert callback.last_targets == [(i, int(probs[i].argmax())) for i in range(3)]
    assert all(lines[1].startswith("pred: no, ") for lines in captions)


def test_gradcam_explains_the_true_labels(tmp_path, monkeypatch):
    torch.manual_seed(0)
    captions, callback = run_gradcam(tmp_path, monkeypatch, MultiLabelNet(), target="true")
    targets = next(iter(multilabel_loader()))[1][:3]
    assert sorted(callback.last_targets) == [(int(i), int(c)) for i, c in targets.nonzero()]
    assert all(lines[1].endswith("true: yes") for lines in captions if lines[1])
    assert ("no true label", "") in captions  # image 0 has no label: shown without a heatmap
    assert len(captions) == int(targets.sum()) + 1


@pytest.mark.parametrize("task", ["multilabel", "multiclass"])
def test_gradcam_target_class_explains_one_class_in_every_image(tmp_path, monkeypatch, task):
    torch.manual_seed(0)
    model = MultiLabelNet(task=task)
    captions, callback = run_gradcam(tmp_path, monkeypatch, model, target_class=2)
    images = next(iter(multilabel_loader()))[0][:3]
    assert callback.last_targets == [(0, 2), (1, 2), (2, 2)] and len(captions) == 3
    assert all(lines[0].startswith("c (") for lines in captions)
    reference = GradCAM(model).generate_cam(images, target_class=2)
    torch.testing.assert_close(callback.last_cams, reference, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(reference, GradCAM(model).generate_cam(images, target_class=0), atol=1e-3)


def test_gradcam_new_arguments_are_checked(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"^Expected `max_labels` >= 1, but got 0.$"):
        GradCAMLogger(max_labels=0)
    with pytest.raises(ValueError, match=r"^Expected `target_class` >= 0, but got -1.$"):
        GradCAMLogger(target_class=-1)
    with pytest.raises(TypeError, match=r"^Expected `target_class` to be a class index \(int\) or None"):
        GradCAMLogger(target_class="dog")
    with pytest.raises(ValueError, match=r"^Expected `target_class` < 3 \(the model's number of classes\), but got 3"):
        run_gradcam(tmp_path, monkeypatch, MultiLabelNet(), target_class=3)


# ---------------------------------------------------------------------------------------------------- predictions
class FixedScores(LightningModule):
    """The same label scores for every image; optionally its own decisions under ``"preds"``."""

    def __init__(self, class_names, scores, thresholds, preds=None, task="multilabel"):
        super().__init__()
        self.save_hyperparameters()
        self.register_buffer("thresholds", torch.tensor(thresholds))
        self.unused = nn.Parameter(torch.zeros(1))

    def predict_step(self, batch, batch_idx):
        n = batch[0].shape[0]
        out = {"probs": torch.tensor([self.hparams["scores"]]).repeat(n, 1), "thresholds": self.thresholds}
        if self.hparams["preds"] is not None:
            out["preds"] = torch.tensor([self.hparams["preds"]]).repeat(n, 1)
        return out


CLASSES = ["=cmd", "b", "-c", "d"]
SCORES = [0.95, 0.4999, 0.6, 0.79]  # b just below 0.5, d just below its tuned 0.8
THRESHOLDS = [0.5, 0.5, 0.5, 0.8]


def predict_folder(tmp_path, model, files=("good.png", "broken.png")):
    photos = tmp_path / "photos"
    for name in files:
        if name.startswith("good"):
            write_image(photos / name, 1, size=20)
        else:
            photos.mkdir(parents=True, exist_ok=True)
            (photos / name).write_bytes(b"")
    paths = [str(photos / name) for name in files]
    dataset = ImageFileDataset(paths, None, build_eval_transform(SIZE, mean=(0.5,) * 3, std=(0.5,) * 3))
    loader = SkippingDataLoader(dataset, batch_size=2, collate_fn=collate_readable)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), formats=["csv", "jsonl"], top_k=3)
    tiny_trainer(tmp_path, callbacks=[writer]).predict(model, loader, return_predictions=False)
    rows = list(csv.reader((tmp_path / "out" / "predictions.csv").open(newline="")))
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    return paths, rows, lines


@pytest.mark.filterwarnings("ignore:Skipping an image that cannot be used")
def test_writer_lists_the_labels_at_their_thresholds_and_a_row_for_a_broken_file(tmp_path):
    paths, rows, lines = predict_folder(tmp_path, FixedScores(CLASSES, SCORES, THRESHOLDS))
    assert rows[0] == ["path", "predicted_labels", "scores", "top_k", "error"]
    # "=cmd" and "-c" start a cell or a ";"-separated part of one (a cell to a spreadsheet splitting on ";"): quoted
    assert rows[1] == [paths[0], "'=cmd;'-c", "'=cmd:0.9500;'-c:0.6000", "'=cmd:0.9500;d:0.7900;'-c:0.6000", ""]
    assert rows[2] == [paths[1], "", "", "", "unreadable: empty file (0 bytes)"]
    assert lines[0] == {
        "path": paths[0],
        "labels": ["=cmd", "-c"],
        "scores": {"=cmd": 0.95, "-c": 0.6},
        "top_k": [["=cmd", 0.95], ["d", 0.79], ["-c", 0.6]],
        "error": "",
    }
    assert lines[1] == {"path": paths[1], "labels": [], "scores": {}, "top_k": [], "error": rows[2][4]}


def test_writer_takes_the_modules_own_decisions(tmp_path):
    model = FixedScores(CLASSES, SCORES, THRESHOLDS, preds=[False, True, False, True])
    _paths, rows, lines = predict_folder(tmp_path, model, files=("good.png",))
    assert rows[1][1:3] == ["d;b", "d:0.7900;b:0.4999"] and lines[0]["labels"] == ["d", "b"]


def test_writer_writes_an_empty_set_and_fails_when_no_image_reads(tmp_path):
    _paths, rows, lines = predict_folder(
        tmp_path, FixedScores(CLASSES, [0.1, 0.2, 0.3, 0.4], THRESHOLDS), ("good.png",)
    )
    assert rows[1][1:3] == ["", ""] and rows[1][4] == "" and lines[0]["labels"] == [] and lines[0]["scores"] == {}
    with (
        pytest.warns(UserWarning, match="Skipping an image that cannot be used"),
        pytest.raises(ValueError, match=r"^None of the 1 image\(s\) to predict could be read"),
    ):
        predict_folder(tmp_path / "bad", FixedScores(CLASSES, SCORES, THRESHOLDS), ("broken.png",))
    rows = list(csv.reader((tmp_path / "bad" / "out" / "predictions.csv").open(newline="")))
    assert rows[1][1:] == ["", "", "", "unreadable: empty file (0 bytes)"]


# ---------------------------------------------------------------------------------------------------- EMA
def test_ema_logs_raw_binary_cross_entropy_and_hamming_loss(tmp_path):
    torch.manual_seed(0)
    model = MultiLabelNet(thresholds=(0.3, 0.5, 0.7))
    ema = EMA(decay=0.5, warmup=False, log_raw_metrics=True)
    trainer = tiny_trainer(tmp_path, callbacks=[ema])
    trainer.fit(model, multilabel_loader(), multilabel_loader())
    metrics = trainer.callback_metrics
    assert {"val_loss_raw", "val_hamming_raw"} <= set(metrics) and "val_acc_raw" not in metrics
    raw = copy.deepcopy(model)  # the module ends on the average; the callback holds the raw weights
    raw.load_state_dict(ema._ema)
    images, targets = (torch.cat(parts) for parts in zip(*multilabel_loader(), strict=True))
    with torch.no_grad():
        probs = raw.eval()(images).sigmoid().double()
    loss = -(targets * probs.log() + (1 - targets) * (1 - probs).log()).mean()
    wrong = (probs >= torch.tensor([0.3, 0.5, 0.7], dtype=torch.float64)) != (targets > 0.5)
    assert float(metrics["val_loss_raw"]) == pytest.approx(float(loss), rel=1e-5)
    assert float(metrics["val_hamming_raw"]) == pytest.approx(float(wrong.double().mean()), abs=1e-6)
    assert not torch.allclose(raw.net[-1].weight, model.net[-1].weight)  # the raw weights, not the average


# ---------------------------------------------------------------------------------------------------- ImageClassifier
def test_all_four_with_a_multilabel_image_classifier(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone="test_resnet", pretrained=False, num_classes=3, class_names=NAMES, task="multilabel",
        thresholds=[0.3, 0.5, 0.7],
    )  # fmt: skip
    gradcam = GradCAMLogger(num_images=2)
    callbacks = [PredictionGallery(num_images=4), gradcam, EMA(decay=0.5, log_raw_metrics=True)]
    trainer = tiny_trainer(tmp_path, callbacks=callbacks)
    trainer.fit(model, multilabel_loader(size=32), multilabel_loader(size=32))
    assert {"val_loss_raw", "val_hamming_raw"} <= set(trainer.callback_metrics)
    assert (tmp_path / "images" / "val_worst_predictions" / "step_000002.png").is_file()
    assert (tmp_path / "images" / "val_gradcam" / "step_000002.png").is_file()
    assert gradcam.last_cams.shape[0] == len(gradcam.last_targets) >= 2

    images = next(iter(multilabel_loader(size=32)))[0]
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), formats=["jsonl"], top_k=3)
    out = tiny_trainer(tmp_path, callbacks=[writer]).predict(model, DataLoader(TensorDataset(images), batch_size=4))
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    preds, probs = out[0]["preds"], out[0]["probs"]
    assert [sorted(row["labels"]) for row in rows] == [[NAMES[c] for c in p.nonzero().flatten()] for p in preds]
    assert [row["scores"] for row in rows] == [
        {NAMES[c]: round(float(probs[i, c]), 6) for c in p.nonzero().flatten().tolist()} for i, p in enumerate(preds)
    ]


# ---------------------------------------------------------------------------------------------------- foreign tasks
class BinaryTaskNet(LightningModule):
    """Someone else's module that names its task the torchmetrics way: "binary", one class per image."""

    def __init__(self, task="binary"):
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))

    def forward(self, x):
        return self.net(x)

    def training_step(self, batch, batch_idx):
        return F.cross_entropy(self(batch[0]), batch[1])

    def validation_step(self, batch, batch_idx):
        self.log("val_loss", F.cross_entropy(self(batch[0]), batch[1]))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def test_a_module_with_a_task_of_its_own_is_treated_as_one_class_per_image(tmp_path):
    from lightning_cv.data.batch import task_of

    assert task_of(BinaryTaskNet()) == "multiclass" and task_of(MultiLabelNet()) == "multilabel"
    images = torch.randn(8, 3, SIZE, SIZE)
    loader = DataLoader(TensorDataset(images, torch.arange(8) % 2), batch_size=4)
    gallery = PredictionGallery(num_images=2)
    trainer = tiny_trainer(tmp_path, callbacks=[EMA(decay=0.5, warmup=False, log_raw_metrics=True), gallery])
    trainer.fit(BinaryTaskNet(), loader, loader)  # before: ValueError "Expected `task` to be one of ..."
    assert "val_acc_raw" in trainer.callback_metrics
