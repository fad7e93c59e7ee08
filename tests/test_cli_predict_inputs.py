"""`lightning-cv predict` on awkward inputs: one image file, a folder of unreadable files, a partly unreadable one."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from lightning_cv.cli import main
from tests.data.helpers import write_image

pytestmark = [
    pytest.mark.filterwarnings("ignore:Skipping an image that cannot be used"),
    pytest.mark.usefixtures("in_tmp"),
]


@pytest.fixture
def checkpoint(cli_checkpoint):
    return cli_checkpoint



def predict(checkpoint, source):
    args = ["predict", f"--ckpt_path={checkpoint}", f"--data.predict_dir={source}", "--prediction.output_dir=out"]
    return main([*args, "--trainer.enable_progress_bar=false"])


def rows():
    return list(csv.DictReader(Path("out/predictions.csv").open()))


def test_one_image_file_is_one_row(checkpoint):
    write_image(Path("photo.png"), 1, size=40)
    assert predict(checkpoint, "photo.png") == 0
    (row,) = rows()
    assert row["path"] == "photo.png" and row["predicted_class"] and not row["error"]


def test_a_folder_of_unreadable_files_fails_after_writing_a_row_each(checkpoint, capsys):
    Path("photos").mkdir()
    Path("photos/a.png").write_bytes(b"")
    Path("photos/b.jpg").write_text("not a jpeg")
    assert predict(checkpoint, "photos") == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("lightning-cv: error:")]
    assert errors == [
        "lightning-cv: error: None of the 2 image(s) to predict could be read; out/predictions.csv list(s) each "
        "file with its error."
    ]
    assert [(r["path"], r["error"][:12]) for r in rows()] == [
        ("photos/a.png", "unreadable: "),
        ("photos/b.jpg", "unreadable: "),
    ]


def test_a_partly_unreadable_folder_succeeds_with_error_rows(checkpoint):
    Path("photos").mkdir()
    Path("photos/a.png").write_bytes(b"")
    write_image(Path("photos/b.png"), 2, size=40)
    assert predict(checkpoint, "photos") == 0
    by_path = {r["path"]: r for r in rows()}
    assert by_path["photos/a.png"]["error"] == "unreadable: empty file (0 bytes)"
    assert by_path["photos/b.png"]["predicted_class"] and not by_path["photos/b.png"]["error"]
