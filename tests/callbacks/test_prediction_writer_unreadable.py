"""Unreadable images get a row with their error; a run in which no image could be read fails after writing them."""

import csv
import json

import pytest

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.callbacks import PredictionWriter
from tests.conftest import tiny_kwargs, tiny_trainer
from tests.data.helpers import write_image
from tests.data.test_image_io import truncated_jpeg

pytestmark = pytest.mark.filterwarnings("ignore:Skipping an image that cannot be used")


def vit():
    # a ViT cannot take an empty batch (it fails to reshape zero images): the loader must not hand it one
    return ImageClassifier(num_classes=2, class_names=["a", "b"], **tiny_kwargs("test_vit", 32))


def predict(tmp_path, photos, **data_kwargs):
    dm = ImageDataModule(predict_dir=str(photos), image_size=32, **data_kwargs)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), formats=["csv", "jsonl"])
    out = tiny_trainer(tmp_path, callbacks=[writer]).predict(vit(), dm)
    return out, read(tmp_path)


def read(tmp_path):
    rows = list(csv.DictReader((tmp_path / "out" / "predictions.csv").open()))
    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    return rows, lines


def test_a_folder_of_unreadable_files_writes_their_rows_then_fails(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "empty.png").write_bytes(b"")
    (photos / "text.jpg").write_text("not a jpeg")
    truncated_jpeg(photos / "cut.jpg")  # its header reads: it fails only when decoded
    with pytest.raises(
        ValueError,
        match=r"^None of the 3 image\(s\) to predict could be read; .*predictions.csv, .*predictions.jsonl list\(s\) "
        r"each file with its error.$",
    ):
        predict(tmp_path, photos)
    rows, lines = read(tmp_path)
    assert sorted(r["path"].split("/")[-1] for r in rows) == ["cut.jpg", "empty.png", "text.jpg"]
    assert all(r["error"].startswith("unreadable: ") and not r["predicted_class"] for r in rows)
    by_name = {r["path"].split("/")[-1]: r["error"] for r in rows}
    assert by_name["empty.png"] == "unreadable: empty file (0 bytes)"
    assert by_name["cut.jpg"].startswith("unreadable: cannot be decoded")
    assert [line["error"] for line in lines] == [r["error"] for r in rows]


def test_a_batch_of_only_unreadable_files_does_not_end_the_run(tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "a_bad.png").write_bytes(b"")
    (photos / "b_bad.png").write_text("no image")  # with a ViT: [a_bad, b_bad] is one batch, [good, z_bad] the next
    write_image(photos / "good.png", 1, size=40)
    (photos / "z_bad.png").write_bytes(b"\x89PNG broken")
    out, (rows, lines) = predict(tmp_path, photos, batch_size=1, eval_batch_size=2)
    assert sum(len(batch["preds"]) for batch in out) == 1  # only the readable image was predicted
    by_name = {r["path"].split("/")[-1]: r for r in rows}
    assert by_name["good.png"]["predicted_class"] in ("a", "b") and not by_name["good.png"]["error"]
    assert all(by_name[n]["error"].startswith("unreadable: ") for n in ("a_bad.png", "b_bad.png", "z_bad.png"))
    assert len(rows) == len(lines) == 4
