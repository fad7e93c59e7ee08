"""Explaining a multi-label model: one Grad-CAM per predicted label, named by index, captioned with its score."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.interpret import explain_images
from lightning_cv.interpret.drawing import MIN_DISPLAY_WIDTH

SMALL = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pct": 1.0}
#: class names that must never reach a path
NAMES = ["../up", "a/b", "c:d", "plain"]


class FixedLabels(nn.Module):
    """Scores close to ``sigmoid(bias)`` whatever the image: tiny head weights, so the predicted labels are known.

    What explaining reads of a multi-label module: ``hparams["task"]``, its class names and a ``thresholds`` buffer.
    """

    def __init__(self, bias, thresholds):
        super().__init__()
        torch.manual_seed(0)
        self.hparams = {"task": "multilabel", "class_names": NAMES, "num_classes": len(NAMES)}
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Linear(8, len(NAMES))
        with torch.no_grad():
            self.head.weight.mul_(1e-3)
            self.head.bias.copy_(torch.tensor(bias))
        self.register_buffer("thresholds", torch.tensor(thresholds))

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean((2, 3)))


def _images(folder, count):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.png")


def test_one_overlay_per_predicted_label_at_its_own_threshold(tmp_path):
    # sigmoid(bias) = 0.95, 0.50, 0.27, 0.05; thresholds make labels 0 and 2 the predicted ones (2 only at 0.2)
    model = FixedLabels(bias=[3.0, 0.0, -1.0, -3.0], thresholds=[0.5, 0.9, 0.2, 0.5])
    _images(tmp_path / "in", 3)

    report = explain_images(model, tmp_path / "in", tmp_path / "out", data_config=SMALL)

    written = sorted(p.name for p in (tmp_path / "out").glob("*_gradcam*.png"))
    assert written == sorted(f"img{i}_gradcam_{c}.png" for i in range(3) for c in (0, 2))
    scores = torch.sigmoid(torch.tensor([3.0, 0.0, -1.0, -3.0]))
    for item in report.images:
        assert item.task == "multilabel"
        assert [label.index for label in item.predicted_labels] == [0, 2]  # best score first
        assert [label.name for label in item.predicted_labels] == ["../up", "c:d"]
        assert [label.score for label in item.predicted_labels] == pytest.approx(scores[[0, 2]].tolist(), abs=1e-2)
        assert item.gradcams == tuple(tmp_path / "out" / f"{item.source.stem}_gradcam_{c}.png" for c in (0, 2))
        assert item.gradcam == item.gradcams[0] and item.overlays == list(item.gradcams)
        assert item.predicted_index == 0 and item.probability == pytest.approx(float(scores[0]), abs=1e-2)
        with Image.open(item.gradcams[1]) as picture:
            assert picture.width >= MIN_DISPLAY_WIDTH and picture.height > picture.width  # captioned above
    assert "img0.png: ../up 95.3%, c:d 26.9%" in report.summary()
    assert {p.name for p in (tmp_path / "out").iterdir()} == {*written, "contact_sheet.png"}  # no name in a path


def test_no_label_predicted_explains_the_top_label_and_says_so(tmp_path):
    model = FixedLabels(bias=[-3.0, -1.0, -2.0, -4.0], thresholds=[0.5, 0.5, 0.5, 0.5])
    _images(tmp_path / "in", 2)

    report = explain_images(model, tmp_path / "in", tmp_path / "out", data_config=SMALL, contact_sheet=False)

    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0_gradcam_1.png", "img1_gradcam_1.png"]
    for item in report.images:
        assert item.predicted_labels == () and [label.index for label in item.explained_labels] == [1]
        assert item.target_index == 1 and item.target_class == "a/b"
    assert "img0.png: no label reaches its threshold (top: a/b 26.9%)" in report.summary()


def test_target_class_explains_that_label_for_every_image(tmp_path):
    model = FixedLabels(bias=[3.0, 0.0, -1.0, -3.0], thresholds=[0.5, 0.9, 0.2, 0.5])
    _images(tmp_path / "in", 2)

    report = explain_images(model, tmp_path / "in", tmp_path / "out", data_config=SMALL, target_class=3)

    assert sorted(p.name for p in (tmp_path / "out").glob("*_gradcam*")) == ["img0_gradcam_3.png", "img1_gradcam_3.png"]
    for item in report.images:
        assert [label.index for label in item.explained_labels] == [3]
        assert item.target_probability == pytest.approx(float(torch.sigmoid(torch.tensor(-3.0))), abs=1e-2)
        assert [label.index for label in item.predicted_labels] == [0, 2]  # the report still lists the prediction


class BrightnessLabel(FixedLabels):
    """:class:`FixedLabels`, plus label 1 for bright images only: images get different numbers of labels."""

    def forward(self, x):
        logits = super().forward(x)
        return logits + torch.stack(
            [torch.zeros_like(x[:, 0, 0, 0]), 3 * x.mean((1, 2, 3))] + [logits[:, 0] * 0] * 2, 1
        )


def test_contact_sheet_shows_every_panel_of_each_image(tmp_path):
    model = BrightnessLabel(bias=[3.0, 0.0, -1.0, -3.0], thresholds=[0.5, 0.5, 0.2, 0.5])
    (tmp_path / "in").mkdir()
    Image.new("RGB", (40, 40), (0, 0, 0)).save(tmp_path / "in" / "a_dark.png")  # labels 0, 2
    Image.new("RGB", (40, 40), (255, 255, 255)).save(tmp_path / "in" / "b_bright.png")  # labels 0, 1, 2

    report = explain_images(model, tmp_path / "in", tmp_path / "out", data_config=SMALL)

    assert [[label.index for label in item.predicted_labels] for item in report.images] == [[0, 2], [1, 0, 2]]
    assert sorted(p.name for p in report.images[1].gradcams) == [f"b_bright_gradcam_{c}.png" for c in (0, 1, 2)]
    with Image.open(report.contact_sheet) as sheet:  # two tiles of three slots in a row: six panels wide
        assert 6 * MIN_DISPLAY_WIDTH < sheet.width < 6 * MIN_DISPLAY_WIDTH + 40
        pixels = np.asarray(sheet.convert("RGB"))
    third_of_second = pixels[10:-30, -MIN_DISPLAY_WIDTH + 10 : -10]  # the bright image's third panel, at the far right
    third_of_first = pixels[10:-30, 2 * MIN_DISPLAY_WIDTH + 14 : 3 * MIN_DISPLAY_WIDTH - 10]  # the dark one's: blank
    assert (third_of_second != 235).any() and (third_of_first == 235).all()


def test_vit_gets_per_label_cams_and_one_rollout(tmp_path):
    torch.manual_seed(0)
    vit = ImageClassifier(
        backbone="test_vit", num_classes=3, pretrained=False, backbone_kwargs={"img_size": 32}, task="multilabel",
        thresholds=0.0,
    )  # fmt: skip
    _images(tmp_path / "in", 1)
    report = explain_images(vit, tmp_path / "in", tmp_path / "out", contact_sheet=False)
    item = report.images[0]
    assert sorted(p.name for p in item.gradcams) == ["img0_gradcam_0.png", "img0_gradcam_1.png", "img0_gradcam_2.png"]
    assert item.rollout == tmp_path / "out" / "img0_rollout.png" and item.rollout.is_file()
    assert item.overlays == [*item.gradcams, item.rollout]
    scores = [label.score for label in item.predicted_labels]
    assert sorted(label.index for label in item.predicted_labels) == [0, 1, 2] and scores == sorted(scores)[::-1]


def test_multiclass_reports_keep_their_file_names(tmp_path):
    torch.manual_seed(0)
    resnet = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"])
    _images(tmp_path / "in", 2)
    report = explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config=SMALL, contact_sheet=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["img0_gradcam.png", "img1_gradcam.png"]
    for item in report.images:
        assert item.task == "multiclass" and item.gradcams == (item.gradcam,)
        assert [label.index for label in item.predicted_labels] == [item.predicted_index]
    assert "Predicted labels" not in report.summary()
