"""log_image: every logger gets the picture through its own image API, or a PNG file lands in its run directory."""

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger
from PIL import Image

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import GradCAMLogger, PredictionGallery
from lightning_cv.models.metrics import confusion_matrix_image
from lightning_cv.reporting import log_image
from tests.conftest import make_loader, tiny_trainer


def picture(height=6, width=5, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def bare_trainer(root, logger=False):
    return Trainer(logger=logger, default_root_dir=str(root), accelerator="cpu", devices=1, enable_progress_bar=False)


class ImageLogger(Logger):
    """A logger with W&B's ``log_image(key, images, step)`` and nothing on disk."""

    def __init__(self):
        super().__init__()
        self.calls = []

    name = "image-logger"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def log_image(self, key, images, step=None):
        self.calls.append((key, images, step))


class FakeMlflowClient:
    def __init__(self):
        self.calls = []

    def log_image(self, run_id, image, artifact_file=None):
        self.calls.append((run_id, image, artifact_file))


class FakeCometExperiment:
    def __init__(self):
        self.calls = []

    def log_image(self, image_data, name=None, step=None):
        self.calls.append((image_data, name, step))


class ExperimentLogger(ImageLogger):
    """MLflow-like (an ``experiment`` with ``log_image`` and a ``run_id``) or Comet-like (no ``run_id``)."""

    log_image = None  # only the experiment takes images

    def __init__(self, experiment, run_id=None):
        super().__init__()
        self._experiment = experiment
        if run_id is not None:
            self.run_id = run_id

    @property
    def experiment(self):
        return self._experiment


def pngs(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.png"))


def announcements(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("Images for")]


def test_without_a_logger_a_png_in_the_default_root_dir_said_once(tmp_path, caplog):
    trainer = bare_trainer(tmp_path)
    image = picture()
    with caplog.at_level(logging.INFO):
        first = log_image(trainer, "val_samples", image, step=3)
        second = log_image(trainer, "val_samples", image, step=12)
    assert first == [tmp_path / "images" / "val_samples" / "step_000003.png"] and len(second) == 1
    np.testing.assert_array_equal(np.asarray(Image.open(first[0])), image)  # PNG: the exact pixels
    assert announcements(caplog) == [f"Images for this run (no logger) are saved under '{tmp_path / 'images'}'."]


def test_the_step_defaults_to_the_global_step_and_a_pil_image_is_taken(tmp_path):
    trainer = bare_trainer(tmp_path)
    written = log_image(trainer, "val_samples", Image.fromarray(picture()).convert("L"))  # greyscale: made RGB
    assert written == [tmp_path / "images" / "val_samples" / "step_000000.png"]
    assert np.asarray(Image.open(written[0])).shape == (6, 5, 3)


def test_tensorboard_gets_the_image_at_its_step(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logger = TensorBoardLogger(str(tmp_path), name="tb")
    assert log_image(bare_trainer(tmp_path, logger), "val_samples", picture(), step=7) == []
    logger.experiment.flush()
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    (event,) = events.Images("val_samples")
    assert (event.step, event.height, event.width) == (7, 6, 5)
    assert pngs(tmp_path) == []


def test_a_logger_with_log_image_gets_the_picture(tmp_path):
    logger = ImageLogger()
    image = picture()
    assert log_image(bare_trainer(tmp_path, logger), "val_samples", image, step=5) == []
    ((key, images, step),) = logger.calls
    assert (key, step, len(images)) == ("val_samples", 5, 1)
    np.testing.assert_array_equal(images[0], image)
    assert pngs(tmp_path) == []


def test_an_mlflow_like_logger_gets_an_artifact_of_its_run(tmp_path):
    client = FakeMlflowClient()
    image = picture()
    log_image(bare_trainer(tmp_path, ExperimentLogger(client, run_id="run-1")), "val/samples", image, step=5)
    ((run_id, logged, artifact),) = client.calls
    assert (run_id, artifact) == ("run-1", "images/val_samples/step_000005.png")
    np.testing.assert_array_equal(logged, image)
    assert pngs(tmp_path) == []


def test_a_comet_like_logger_gets_the_picture_with_name_and_step(tmp_path):
    experiment = FakeCometExperiment()
    log_image(bare_trainer(tmp_path, ExperimentLogger(experiment)), "val_samples", picture(), step=5)
    ((logged, name, step),) = experiment.calls
    assert (name, step, logged.shape) == ("val_samples", 5, (6, 5, 3))


def test_every_logger_gets_it_and_csv_gets_a_png_in_its_log_dir(tmp_path, caplog):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tensorboard, csv, other = TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path)), ImageLogger()
    with caplog.at_level(logging.INFO):
        written = log_image(bare_trainer(tmp_path / "root", [tensorboard, csv, other]), "val_x", picture(), step=2)
    assert written == [tmp_path / "lightning_logs" / "version_0" / "images" / "val_x" / "step_000002.png"]
    assert written[0].parent.parent.parent == Path(csv.log_dir)
    assert [call[0] for call in other.calls] == ["val_x"]
    tensorboard.experiment.flush()
    events = EventAccumulator(tensorboard.log_dir)
    events.Reload()
    assert [e.step for e in events.Images("val_x")] == [2]
    folder = written[0].parent.parent
    assert announcements(caplog) == [f"Images for CSVLogger, which takes no images, are saved under '{folder}'."]


@pytest.mark.parametrize(
    "tag", ["../../escape", "/tmp/absolute", "..", ".", "", "a/../../b", "..\\..\\windows", "~/home", "x\x00y"]
)
def test_a_hostile_tag_stays_inside_the_run_dir(tmp_path, tag):
    root = tmp_path / "run"
    (path,) = log_image(bare_trainer(root), tag, picture(), step=1)
    images = (root / "images").resolve()
    assert path.resolve().parent.parent == images  # exactly one folder below images/
    assert not path.parent.name.startswith(".") and ".." not in path.parent.name and path.parent.name
    assert pngs(tmp_path) == [path.relative_to(tmp_path).as_posix()]


def test_other_processes_log_nothing(tmp_path):
    logger = ImageLogger()
    worker = SimpleNamespace(is_global_zero=False, loggers=[logger], global_step=0, default_root_dir=str(tmp_path))
    assert log_image(worker, "val_samples", picture()) == []
    assert logger.calls == [] and pngs(tmp_path) == []


def test_rejects_what_is_not_an_rgb_uint8_image(tmp_path):
    message = r"Expected an RGB image of shape \(H, W, 3\) and dtype uint8, but got shape \(4, 4\) and dtype float32"
    with pytest.raises(ValueError, match=message):
        log_image(bare_trainer(tmp_path), "x", np.zeros((4, 4), dtype=np.float32))


def test_a_csv_run_writes_confusion_matrix_and_gallery_pngs_in_its_run_dir(tmp_path, caplog):
    names = ["a", "b", "c"]
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=names)
    logger = CSVLogger(str(tmp_path), name="csv")
    trainer = tiny_trainer(tmp_path, logger=logger, max_epochs=2, callbacks=[PredictionGallery(num_images=4)])
    with caplog.at_level(logging.INFO):
        trainer.fit(model, make_loader(), make_loader())  # 2 steps an epoch
        trainer.test(model, make_loader(), verbose=False)
    run = tmp_path / "csv" / "version_0"
    assert pngs(tmp_path) == [
        "csv/version_0/images/test_confusion_matrix/step_000004.png",
        "csv/version_0/images/val_confusion_matrix/step_000002.png",
        "csv/version_0/images/val_confusion_matrix/step_000004.png",
        "csv/version_0/images/val_worst_predictions/step_000002.png",
        "csv/version_0/images/val_worst_predictions/step_000004.png",
    ]
    logged = np.asarray(Image.open(run / "images" / "test_confusion_matrix" / "step_000004.png"))
    np.testing.assert_array_equal(logged, confusion_matrix_image(model.confusion_matrix, names))
    assert model.confusion_matrix.sum() == 16
    assert announcements(caplog) == [
        f"Images for CSVLogger, which takes no images, are saved under '{run / 'images'}'."
    ]


def test_a_run_sends_all_three_pictures_to_a_logger_with_log_image(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    logger = ImageLogger()
    callbacks = [PredictionGallery(num_images=4), GradCAMLogger(num_images=2)]
    tiny_trainer(tmp_path, logger=logger, callbacks=callbacks).fit(model, make_loader(), make_loader())
    assert sorted((key, step, len(images)) for key, images, step in logger.calls) == [
        ("val_confusion_matrix", 2, 1),
        ("val_gradcam", 2, 1),
        ("val_worst_predictions", 2, 1),
    ]
    for _key, (image,), _step in logger.calls:
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3 and min(image.shape[:2]) > 32
    assert pngs(tmp_path) == []


def test_no_confusion_matrix_when_switched_off(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, log_confusion_matrix=False)
    tiny_trainer(tmp_path).fit(model, make_loader(), make_loader())
    assert model.confusion_matrix is not None and pngs(tmp_path) == []


def test_no_confusion_matrix_during_the_sanity_check(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    logger = ImageLogger()
    trainer = tiny_trainer(tmp_path, logger=logger, num_sanity_val_steps=1, limit_train_batches=1)
    trainer.fit(model, make_loader(), make_loader())
    assert [(key, step) for key, _images, step in logger.calls] == [("val_confusion_matrix", 1)]
