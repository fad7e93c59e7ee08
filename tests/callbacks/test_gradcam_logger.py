import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image

import lightning_cv.callbacks.gradcam_logger as gradcam_logger
from lightning_cv import ImageClassifier
from lightning_cv.callbacks import GradCAMLogger
from lightning_cv.interpret.drawing import MIN_DISPLAY_WIDTH
from tests.callbacks.test_onnx_export import PlainResNet
from tests.conftest import make_loader, tiny_trainer


def test_writes_one_contact_sheet_without_a_logger_for_a_foreign_module(tmp_path):
    callback = GradCAMLogger(num_images=3, every_n_epochs=2)
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(PlainResNet(), make_loader(), make_loader())
    folder = tmp_path / "images" / "val_gradcam"
    assert [p.name for p in folder.iterdir()] == ["step_000004.png"]  # epoch 2 of 2 batches
    with Image.open(folder / "step_000004.png") as sheet:  # three overlays side by side
        assert 3 * MIN_DISPLAY_WIDTH < sheet.width < 3 * MIN_DISPLAY_WIDTH + 20
    assert callback.last_cams.shape == (3, 32, 32)


def test_overlays_keep_the_image_visible_and_name_class_and_probability(tmp_path, monkeypatch):
    torch.manual_seed(0)
    names = ["cat", "dog", "bird"]
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=names)
    callback = GradCAMLogger(num_images=2)
    captions = []
    real_panel = gradcam_logger.panel
    monkeypatch.setattr(gradcam_logger, "panel", lambda *args: captions.append(args[3]) or real_panel(*args))
    tiny_trainer(tmp_path, callbacks=[callback]).validate(model, make_loader(), verbose=False)
    images, labels = next(iter(make_loader()))
    with torch.no_grad():
        probs = model.eval()(images[:2]).softmax(dim=1)
    expected = [
        (f"pred: {names[int(p.argmax())]} ({float(p.max()):.1%})", f"true: {names[int(y)]} ({float(p[y]):.1%})")
        for p, y in zip(probs, labels[:2], strict=True)
    ]
    assert captions == expected
    # the picture under a flat heatmap: half the image, half jet's lowest colour (0, 0, 0.5)
    display = gradcam_logger.to_display(images[:2], model.data_config)
    (panel, _) = callback.panels(model, torch.zeros(2, 32, 32), model.data_config, names)
    pixels = np.asarray(panel).astype(float)
    assert panel.width == MIN_DISPLAY_WIDTH and panel.height > panel.width + 20  # caption rows above the image
    enlarged = display[0].repeat(7, axis=0).repeat(7, axis=1).astype(float)  # 32 px shown 7 times larger
    expected_picture = 0.5 * enlarged + 0.5 * np.array([0.0, 0.0, 127.5])
    np.testing.assert_allclose(pixels[-224:], expected_picture, atol=1.0)
    caption = pixels[: panel.height - 224]
    assert (caption == 255).all(axis=2).mean() > 0.7 and (caption.max(axis=2) < 100).any()  # dark text on white


def test_under_validate_with_inference_mode_and_a_frozen_backbone(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = tiny_trainer(tmp_path, logger=logger, callbacks=[GradCAMLogger(num_images=2, target="true")])
    assert trainer.validate(model, make_loader(), verbose=False)  # inference_mode=True is Lightning's default here
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "val_gradcam" in events.Tags()["images"]
    assert all(p.grad is None for p in model.parameters())


def test_bad_arguments():
    with pytest.raises(ValueError, match="Expected `target` 'predicted' or 'true'"):
        GradCAMLogger(target="other")
    with pytest.raises(ValueError, match=r"`every_n_epochs` and `num_images` >= 1"):
        GradCAMLogger(num_images=0)
