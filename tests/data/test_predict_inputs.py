"""What `predict_dir` may name: a folder of images, one image, or a list of image paths."""

import csv

import pytest

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.callbacks import PredictionWriter
from lightning_cv.data.sources import find_predict_files
from tests.conftest import tiny_trainer
from tests.data.helpers import write_image


def test_one_image_file_is_predicted_as_one_row(tmp_path):
    photo = write_image(tmp_path / "photo.png", 1, size=40)
    dm = ImageDataModule(predict_dir=str(photo), image_size=32)
    model = ImageClassifier(backbone="test_resnet", num_classes=2, pretrained=False, class_names=["a", "b"])
    writer = PredictionWriter(output_dir=str(tmp_path / "out"))
    tiny_trainer(tmp_path, callbacks=[writer]).predict(model, dm, return_predictions=False)
    assert dm.predict_files == [str(photo)]
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    assert len(rows) == 1 and rows[0]["path"] == str(photo) and rows[0]["predicted_class"] in ("a", "b")


def test_an_image_without_an_image_suffix_is_one_image(tmp_path):
    photo = write_image(tmp_path / "photo.png", 1)
    blob = photo.rename(tmp_path / "photo.upload")  # not UTF-8 text, but it opens as an image
    assert find_predict_files(blob) == [str(blob)]


def test_a_binary_file_that_is_no_image_is_a_clear_error(tmp_path):
    blob = tmp_path / "model.bin"
    blob.write_bytes(b"\x89\xff\x00 not an image and not text")
    with pytest.raises(ValueError, match=r"'.*model.bin' is neither a folder, an image \(.jpg, .*\) nor a text list"):
        find_predict_files(blob)


def test_missing_predict_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"`predict_dir` '.*nope' is neither a folder of images, an image"):
        find_predict_files(tmp_path / "nope")
