import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from lightning_cv import ImageClassifier
from lightning_cv.data import ShapesDataset
from lightning_cv.interpret import ExplainReport, explain_images
from lightning_cv.interpret.drawing import MIN_DISPLAY_WIDTH
from lightning_cv.interpret.explain import CONTACT_SHEET_LIMIT

SMALL = {"input_size": (3, 32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25), "crop_pct": 1.0}


def _write_images(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` 40x40 images, alternately PNG (random noise) and JPEG (a rendered shape), in two sub-folders."""
    rng = np.random.default_rng(seed)
    shapes = ShapesDataset(count, image_size=40, seed=seed)
    paths = []
    for i in range(count):
        folder = root / ("a" if i % 2 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        if i % 2:
            path = folder / f"img{i:02d}.png"
            Image.fromarray(rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
        else:
            path = folder / f"img{i:02d}.jpg"
            shapes[i][0].save(path)
        paths.append(path)
    return paths


def _add_bad_files(root: Path) -> dict[str, str]:
    (root / "b" / "text.jpg").write_text("not an image")
    (root / "b" / "empty.png").write_bytes(b"")
    (root / "b" / "notes.txt").write_text("ignored: not an image extension")
    return {"text.jpg": "not a readable image", "empty.png": "empty file"}


def _state(model: nn.Module) -> tuple[dict[str, bool], dict[str, bool], int]:
    modes = {name: m.training for name, m in model.named_modules()}
    grads = {name: p.requires_grad for name, p in model.named_parameters()}
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks) for m in model.modules())
    return modes, grads, hooks


@pytest.fixture(scope="module")
def resnet() -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"])


def test_folder_of_images_gives_one_overlay_each_and_lists_bad_files(tmp_path, resnet):
    good = _write_images(tmp_path / "in", 5)
    bad = _add_bad_files(tmp_path / "in")
    resnet.set_frozen_groups(2)  # a mix of frozen and trainable parameters, BatchNorm of frozen groups in eval
    resnet.train()
    before = _state(resnet)

    report = explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config=SMALL)

    assert _state(resnet) == before
    assert all(p.grad is None for p in resnet.parameters())
    resnet.set_frozen_groups(0)
    assert isinstance(report, ExplainReport)
    assert [item.source for item in report.images] == sorted(good)  # sorted by path: a/ before b/
    for item in report.images:
        assert item.gradcam == tmp_path / "out" / f"{item.source.stem}_gradcam.png" and item.gradcam.is_file()
        assert item.rollout is None and item.overlays == [item.gradcam]
        assert item.predicted_class == "abc"[item.predicted_index]
        assert item.probability >= 1 / 3  # the largest of three probabilities (checked against softmax below)
        assert item.target_index == item.predicted_index and item.target_probability == item.probability
        with Image.open(item.gradcam) as picture:
            assert picture.width >= MIN_DISPLAY_WIDTH and picture.height > picture.width  # title strip above
    assert not list((tmp_path / "out").glob("*_rollout.png"))
    assert {s.path.name: s.reason for s in report.skipped}.keys() == bad.keys()  # notes.txt is not an image file
    for skipped in report.skipped:
        assert skipped.reason.startswith(bad[skipped.path.name])
    assert report.not_processed == 0
    assert "Skipped 2 file(s)" in report.summary() and "empty file" in report.summary()

    # contact sheet: one row of 5 overlays, each shown at MIN_DISPLAY_WIDTH
    with Image.open(report.contact_sheet) as sheet, Image.open(report.images[0].gradcam) as panel:
        tile_height = panel.height * MIN_DISPLAY_WIDTH / panel.width
        assert 5 * MIN_DISPLAY_WIDTH < sheet.width < 5 * MIN_DISPLAY_WIDTH + 40
        assert tile_height < sheet.height < tile_height + 40


def test_predictions_match_the_models_softmax_on_the_eval_preprocessing(tmp_path, resnet):
    files = _write_images(tmp_path / "in", 4)
    report = explain_images(resnet, files, tmp_path / "out", target_class=2, contact_sheet=False)

    # independent reference: the eval preprocessing written out with torchvision, then the model's own softmax
    cfg = resnet.data_config
    size = cfg.input_size[-1]
    reference = T.Compose(
        [
            T.Resize(math.floor(size / cfg.crop_pct), interpolation=InterpolationMode.BILINEAR, antialias=True),
            T.CenterCrop(size),
            T.ToImage(),
            T.ToDtype(torch.float32, scale=True),
            T.Normalize(mean=list(cfg.mean), std=list(cfg.std)),
        ]
    )
    batch = torch.stack([reference(Image.open(f).convert("RGB")) for f in files])
    resnet.eval()
    with torch.no_grad():
        probs = resnet(batch).softmax(dim=1)
    resnet.train()
    assert [item.source for item in report.images] == files  # a list keeps its order
    for item, row in zip(report.images, probs, strict=True):
        assert item.predicted_index == int(row.argmax())
        assert item.probability == pytest.approx(float(row.max()), abs=1e-5)
        assert item.target_index == 2 and item.target_class == "c"
        assert item.target_probability == pytest.approx(float(row[2]), abs=1e-5)
    assert report.contact_sheet is None and not (tmp_path / "out" / "contact_sheet.png").exists()


def test_vit_also_writes_attention_rollout(tmp_path):
    torch.manual_seed(0)
    vit = ImageClassifier(backbone="test_vit", num_classes=3, pretrained=False, backbone_kwargs={"img_size": 32})
    vit.eval()
    before = _state(vit)
    fused = [block.attn.fused_attn for block in vit.model.blocks]
    _write_images(tmp_path / "in", 3)

    report = explain_images(vit, tmp_path / "in", tmp_path / "out")

    assert _state(vit) == before and [block.attn.fused_attn for block in vit.model.blocks] == fused
    assert len(report.images) == 3
    for item in report.images:
        assert item.rollout == tmp_path / "out" / f"{item.source.stem}_rollout.png" and item.rollout.is_file()
        assert item.predicted_class == f"class {item.predicted_index}"  # no class names in the model
    with Image.open(report.contact_sheet) as sheet:  # one tile per image: Grad-CAM and rollout side by side
        assert 6 * MIN_DISPLAY_WIDTH < sheet.width < 6 * MIN_DISPLAY_WIDTH + 40

    only_cam = explain_images(vit, tmp_path / "in", tmp_path / "cam", rollout=False, contact_sheet=False)
    assert all(item.rollout is None for item in only_cam.images)


def test_names_stay_unique_and_earlier_output_is_not_read_back(tmp_path, resnet):
    root = tmp_path / "in"
    for folder, name in [("x", "001.png"), ("y", "001.png"), ("y", "001.jpg"), ("y", "other.png")]:
        (root / folder).mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (40, 40), (200, 30, 30)).save(root / folder / name)
    out = root / "explained"  # inside the input folder: a second run must not explain its own overlays
    for _ in range(2):
        report = explain_images(resnet, root, out, data_config=SMALL, contact_sheet=False)
        names = sorted(item.gradcam.name for item in report.images)
        assert names == [
            "other_gradcam.png",
            "x__001_gradcam.png",
            "y__001_jpg_gradcam.png",
            "y__001_png_gradcam.png",
        ]
    twice = explain_images(resnet, [root / "x" / "001.png"] * 2, tmp_path / "twice", data_config=SMALL)
    assert [item.gradcam.name for item in twice.images] == ["001_png_gradcam.png", "001_png_2_gradcam.png"]


def test_max_images_and_a_plain_module(tmp_path):
    torch.manual_seed(0)
    plain = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    )
    files = _write_images(tmp_path / "in", 6)
    (tmp_path / "in" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    report = explain_images(
        plain, tmp_path / "in", tmp_path / "out", data_config=SMALL, max_images=3, batch_size=2, alpha=0.0
    )
    assert len(report.images) == 3 and report.not_processed == 7 - 3 - len(report.skipped)
    assert [s.path.name for s in report.skipped] == ["broken.png"]  # sorted first in a/
    assert report.images[0].predicted_class.startswith("class ")
    # alpha=0: the overlay is the image as the model saw it, upscaled with nearest neighbour (7x for 32 px)
    with Image.open(report.images[0].gradcam) as written:
        picture = np.asarray(written)[-32 * 7 :: 7, ::7]
    source = T.Compose([T.Resize(32, antialias=True), T.CenterCrop(32)])(Image.open(sorted(files)[0]).convert("RGB"))
    assert np.abs(picture.astype(int) - np.asarray(source).astype(int)).max() <= 2


def test_errors_say_what_is_wrong(tmp_path, resnet):
    _write_images(tmp_path / "in", 1)
    (tmp_path / "a_file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.jpg").write_text("not an image")
    run = {"data_config": SMALL}
    with pytest.raises(ValueError, match=r"Expected `alpha` to be a number in \[0, 1\], but got 1.5"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", alpha=1.5)
    with pytest.raises(ValueError, match=r"Expected `output_dir` to be a folder, but .*a_file' is a file"):
        explain_images(resnet, tmp_path / "in", tmp_path / "a_file")
    with pytest.raises(FileNotFoundError, match=r"No image files in '.*empty' \(searched recursively for \.jpg, "):
        explain_images(resnet, tmp_path / "empty", tmp_path / "out", **run)
    with pytest.raises(FileNotFoundError, match=r"No readable image in '.*bad'; 1 file\(s\) skipped:\n.*x\.jpg: not a"):
        explain_images(resnet, tmp_path / "bad", tmp_path / "out", **run)
    assert not (tmp_path / "out").exists()  # nothing written when nothing could be explained
    with pytest.raises(FileNotFoundError, match=r"'.*missing' does not exist. Pass a folder of images"):
        explain_images(resnet, tmp_path / "missing", tmp_path / "out", **run)
    with pytest.raises(ValueError, match=r"Sequential has no `data_config`. Pass `data_config=\{'input_size'"):
        explain_images(nn.Sequential(nn.Conv2d(3, 3, 1)), tmp_path / "in", tmp_path / "out")
    with pytest.raises(ValueError, match=r"`data_config` lacks 'std'"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config={"input_size": (3, 32, 32), "mean": 0})
    with pytest.raises(ValueError, match=r"Expected `mean` to be a sequence of numbers \(one per channel\), but got 0"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config={**SMALL, "mean": 0})
    with pytest.raises(
        ValueError, match=r"Expected 3 values for `mean` and 3 positive values for `std`, but got \(0.5,\) and"
    ):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config={**SMALL, "mean": (0.5,)})
    with pytest.raises(
        ValueError, match=r"Expected `input_size` to be \(channels, height, width\), but got \(32, 32\)"
    ):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", data_config={**SMALL, "input_size": (32, 32)})
    with pytest.raises(ValueError, match=r"Expected one class name per class \(3\), but got 2 `class_names`"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", class_names=["x", "y"], **run)
    with pytest.raises(ValueError, match=r"Expected `target_class` < 3 \(the model's classes\), but got 3"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", target_class=3, **run)
    with pytest.raises(ValueError, match=r"`rollout=True` needs a timm Vision Transformer, but ResNet has no"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", rollout=True, **run)
    with pytest.raises(ValueError, match=r"Unknown target layer 'model\.layer9'"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", target_layer="model.layer9", **run)
    with pytest.raises(ValueError, match=r"Expected `max_images` to be an integer >= 1 or None, but got 0"):
        explain_images(resnet, tmp_path / "in", tmp_path / "out", max_images=0, **run)
    with pytest.raises(ValueError, match=r"Expected `images` to hold at least one file, but got an empty list"):
        explain_images(resnet, [], tmp_path / "out", **run)


def test_contact_sheet_is_capped(tmp_path, monkeypatch):
    import lightning_cv.interpret.explain as explain

    monkeypatch.setattr(explain, "CONTACT_SHEET_LIMIT", 3)
    assert CONTACT_SHEET_LIMIT == 64
    torch.manual_seed(0)
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    _write_images(tmp_path / "in", 10)
    datamodule_style = {"image_size": 32, "mean": SMALL["mean"], "std": SMALL["std"], "crop_pct": 1.0}
    report = explain_images(plain, tmp_path / "in", tmp_path / "out", data_config=datamodule_style)
    assert len(report.images) == 10
    with Image.open(report.contact_sheet) as sheet:  # 3 tiles in one row, not 10 in two
        assert 3 * MIN_DISPLAY_WIDTH < sheet.width < 4 * MIN_DISPLAY_WIDTH
