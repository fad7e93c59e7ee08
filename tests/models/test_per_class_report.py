"""report_per_class: CSV and Markdown in the run directory, a printed table and a logged one, on rank zero only."""

import logging
from pathlib import Path

import torch
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from lightning_cv import ImageClassifier
from lightning_cv.models.metrics import per_class_rows
from lightning_cv.models.per_class_report import report_per_class
from lightning_cv.reporting import format_table
from tests.conftest import make_loader, tiny_trainer
from tests.reporting.test_table_logging import TableLogger, text_events

ROWS = per_class_rows(torch.tensor([[8, 2, 0], [0, 5, 0], [1, 1, 0]]), ["cat", "=HYPERLINK(x)", "owl"])


def test_a_tested_model_reports_to_its_tensorboard_run_dir(tmp_path, capsys, caplog):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"])
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = tiny_trainer(tmp_path, logger=logger)
    with caplog.at_level(logging.INFO):
        trainer.test(model, make_loader(), verbose=False)  # ImageClassifier reports its test split itself
    rows = per_class_rows(model.confusion_matrix, model.hparams["class_names"])
    assert model.per_class == rows
    run = Path(logger.log_dir)
    paths = {"csv": run / "per_class_test.csv", "markdown": run / "per_class_test.md"}
    assert paths["markdown"].read_text() == format_table(rows)
    header, *lines = paths["csv"].read_text().splitlines()
    assert header == '"class","support","precision","recall","f1","most_confused_with","confused"'
    assert len(lines) == 3 and lines[0].startswith('"a",6,')  # 16 images, classes 0, 1, 2, 0, 1, ...
    out = capsys.readouterr().out
    assert "Per-class results on the test split" in out and "most_confused_with" in out
    assert f"Per-class results written to {paths['csv']} and {paths['markdown']}" in caplog.messages
    logger.experiment.flush()
    assert text_events(run)["test_per_class"] == [(trainer.global_step, format_table(rows))]


def test_fit_reports_its_last_validation_once_when_it_ends(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    trainer = tiny_trainer(tmp_path, logger=logger, max_epochs=2)
    trainer.fit(model, make_loader(), make_loader())
    run = Path(logger.log_dir)
    rows = per_class_rows(model.confusion_matrix)  # the last validation's
    assert (run / "per_class_val.md").read_text() == format_table(rows)
    logger.experiment.flush()
    assert text_events(run)["val_per_class"] == [(trainer.global_step, format_table(rows))]  # once, not per epoch


def test_without_a_logger_the_files_go_to_the_default_root_dir(tmp_path, capsys):
    paths = report_per_class(tiny_trainer(tmp_path), "val", ROWS)
    assert paths == {"csv": tmp_path / "per_class_val.csv", "markdown": tmp_path / "per_class_val.md"}
    assert "'=HYPERLINK(x)" in paths["csv"].read_text()  # a formula-like class name made harmless
    assert "Per-class results on the validation split" in capsys.readouterr().out


def test_the_file_name_and_title_can_be_given(tmp_path, capsys):
    logger = CSVLogger(str(tmp_path), name="csv")
    _ = logger.experiment  # the run has begun, as in a fitted or tested one (else the logger warns of our files)
    paths = report_per_class(tiny_trainer(tmp_path, logger=logger), "test", ROWS, name="labels_test", title="Labels")
    assert paths is not None and paths["csv"] == Path(logger.log_dir) / "labels_test.csv"
    assert capsys.readouterr().out.splitlines()[0].strip() == "Labels"


def test_every_logger_gets_the_table_under_the_stage_tag(tmp_path):
    logger = TableLogger()
    report_per_class(tiny_trainer(tmp_path, logger=logger), "val", ROWS)
    assert [(key, len(data), step) for key, _columns, data, step in logger.calls] == [("val_per_class", 3, 0)]


class OtherRank:
    """A trainer as another process than rank zero sees it; records that ``log_dir`` (a collective) was asked."""

    is_global_zero = False
    global_step = 0

    def __init__(self, root, loggers):
        self.default_root_dir = str(root)
        self.loggers = loggers
        self.asked = 0

    @property
    def log_dir(self):
        self.asked += 1
        return self.default_root_dir


def test_other_processes_ask_the_log_dir_and_do_nothing_else(tmp_path, capsys):
    logger = TableLogger()
    worker = OtherRank(tmp_path, [logger])
    assert report_per_class(worker, "test", ROWS) is None
    assert worker.asked == 1  # every rank takes part in the broadcast, or rank zero waits forever
    assert list(tmp_path.iterdir()) == [] and logger.calls == [] and capsys.readouterr().out == ""


def test_no_rows_no_files(tmp_path):
    worker = OtherRank(tmp_path, [])
    worker.is_global_zero = True
    assert report_per_class(worker, "test", []) is None
    assert worker.asked == 1 and list(tmp_path.iterdir()) == []
