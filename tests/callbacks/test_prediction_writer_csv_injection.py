"""Text from the data cannot become a spreadsheet formula in the CSV; the JSON Lines file keeps it unchanged."""

import csv
import json

import pytest
import torch
from lightning.pytorch import LightningModule

from lightning_cv.callbacks import PredictionWriter
from lightning_cv.callbacks.prediction_writer import csv_text
from lightning_cv.data.datasets import ImageFileDataset, SkippingDataLoader, collate_readable
from lightning_cv.data.transforms import build_eval_transform
from tests.conftest import tiny_trainer
from tests.data.helpers import write_image

FORMULA_FILE = '=HYPERLINK("evil.example","click").png'
CLASSES = ["@SUM(1+1)", "-2+3", "safe"]


class FixedProbabilities(LightningModule):
    """The same class probabilities for every image: the most probable class starts the top-k cell."""

    def __init__(self, class_names, probs):
        super().__init__()
        self.save_hyperparameters()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def predict_step(self, batch, batch_idx):
        return torch.tensor([self.hparams["probs"]]).repeat(batch[0].shape[0], 1)


@pytest.mark.parametrize("start", ["=", "+", "-", "@", "\t", "\r"])
def test_every_formula_start_gets_a_quote(start):
    assert csv_text(f"{start}cmd") == f"'{start}cmd"


@pytest.mark.parametrize("text", ["", "cat", "a=b", "'quoted", "0.5", "/data/=x.png", " =x"])
def test_other_text_is_unchanged(text):
    assert csv_text(text) == text


@pytest.mark.filterwarnings("ignore:Skipping an image that cannot be used")
def test_csv_cells_from_file_and_class_names_are_neutralised(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # relative paths, as `--data.predict_dir .` gives: the cell starts with the name
    write_image(tmp_path / FORMULA_FILE, 1, size=40)
    (tmp_path / "+broken.png").write_bytes(b"")
    paths = [FORMULA_FILE, "+broken.png"]
    dataset = ImageFileDataset(paths, None, build_eval_transform(32, mean=(0.5,) * 3, std=(0.5,) * 3))
    loader = SkippingDataLoader(dataset, batch_size=2, collate_fn=collate_readable)
    writer = PredictionWriter(output_dir="out", formats=["csv", "jsonl"], top_k=2)
    model = FixedProbabilities(CLASSES, [0.7, 0.2, 0.1])
    tiny_trainer(tmp_path, callbacks=[writer]).predict(model, loader, return_predictions=False)

    rows = list(csv.reader((tmp_path / "out" / "predictions.csv").open(newline="")))
    assert rows[0] == ["path", "predicted_class", "predicted_index", "probability", "top_k", "error"]
    # each class name inside top_k is a cell start too for a spreadsheet that splits on ";"
    assert rows[1] == ["'" + FORMULA_FILE, "'@SUM(1+1)", "0", "0.7", "'@SUM(1+1):0.7000;'-2+3:0.2000", ""]
    raw = (tmp_path / "out" / "predictions.csv").read_text().splitlines()
    assert raw[1].startswith('"\'=HYPERLINK(') and ',0,0.7,' in raw[1]  # text quoted, numbers as numbers
    assert rows[2][:5] == ["'+broken.png", "", "", "", ""] and rows[2][5].startswith("unreadable: empty file")

    lines = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert lines[0]["path"] == FORMULA_FILE and lines[0]["predicted_class"] == "@SUM(1+1)"
    assert lines[0]["top_k"] == [["@SUM(1+1)", 0.7], ["-2+3", 0.2]] and lines[0]["probability"] == 0.7
    assert lines[1]["path"] == "+broken.png"


def test_a_class_name_starting_with_minus_is_quoted_but_numbers_are_not(tmp_path):
    write_image(tmp_path / "a.png", 1, size=40)
    dataset = ImageFileDataset(
        [str(tmp_path / "a.png")], None, build_eval_transform(32, mean=(0.5,) * 3, std=(0.5,) * 3)
    )
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), top_k=1)
    model = FixedProbabilities(CLASSES, [0.1, 0.6, 0.3])
    tiny_trainer(tmp_path, callbacks=[writer]).predict(model, SkippingDataLoader(dataset), return_predictions=False)
    row = next(csv.DictReader((tmp_path / "out" / "predictions.csv").open(newline="")))
    assert row["predicted_class"] == "'-2+3" and row["top_k"] == "'-2+3:0.6000"
    assert row["predicted_index"] == "1" and row["probability"] == "0.6"
