import json

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import PredictionWriter
from tests.conftest import tiny_trainer


def test_filename_cannot_leave_the_output_folder():
    for bad in ("../escape", "/abs/path", "a/b", ""):
        with pytest.raises(ValueError, match="plain file name without folders"):
            PredictionWriter(filename=bad)
    with pytest.raises(ValueError, match=r"Expected `formats` from 'csv' and 'jsonl'"):
        PredictionWriter(formats=["xml"])


def test_any_dataset_gets_running_indices_and_jsonl(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"])
    loader = DataLoader(TensorDataset(torch.randn(5, 3, 32, 32)), batch_size=2)
    writer = PredictionWriter(output_dir=str(tmp_path / "out"), formats=["jsonl"], top_k=2)
    tiny_trainer(tmp_path, callbacks=[writer]).predict(model, loader, return_predictions=False)
    rows = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()]
    assert [r["path"] for r in rows] == ["0", "1", "2", "3", "4"]
    assert all(r["predicted_class"] in "abc" and len(r["top_k"]) == 2 for r in rows)
    assert rows[0]["top_k"][0][1] >= rows[0]["top_k"][1][1]
