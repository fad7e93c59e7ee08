import pytest
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import GradCAMLogger
from tests.callbacks.test_onnx_export import PlainResNet
from tests.conftest import make_loader, tiny_trainer


def test_writes_pngs_without_a_logger_for_a_foreign_module(tmp_path):
    callback = GradCAMLogger(num_images=3, every_n_epochs=2)
    tiny_trainer(tmp_path, max_epochs=2, callbacks=[callback]).fit(PlainResNet(), make_loader(), make_loader())
    assert sorted(p.name for p in (tmp_path / "gradcam").iterdir()) == [f"epoch_001_0{i}.png" for i in range(3)]
    assert callback.last_cams.shape == (3, 32, 32)


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
