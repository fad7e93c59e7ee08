"""log_table: every logger that takes text or tables gets the table through its own API; the others get nothing."""

import math
from types import SimpleNamespace

from lightning.pytorch import Trainer
from lightning.pytorch.loggers import CSVLogger, Logger, TensorBoardLogger

from lightning_cv.reporting import format_table, log_table

ROWS = [
    {"class": "cat", "support": 4, "f1": 0.5, "most_confused_with": "dog"},
    {"class": "dog", "support": 0, "f1": math.nan, "most_confused_with": ""},
]


def bare_trainer(root, logger=False):
    return Trainer(logger=logger, default_root_dir=str(root), accelerator="cpu", devices=1, enable_progress_bar=False)


def text_events(log_dir):
    """``{tag: [(step, text), ...]}`` of the text summaries TensorBoard wrote, read back from the event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(log_dir))
    events.Reload()
    return {
        tag.removesuffix("/text_summary"): [
            (e.step, e.tensor_proto.string_val[0].decode()) for e in events.Tensors(tag)
        ]
        for tag in events.Tags()["tensors"]
    }


class QuietLogger(Logger):
    name = "quiet"
    version = 0

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass


class TableLogger(QuietLogger):
    """W&B's ``log_table(key, columns, data, step)``."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def log_table(self, key, columns=None, data=None, dataframe=None, step=None):
        self.calls.append((key, columns, data, step))


class TextLogger(QuietLogger):
    """Only W&B's ``log_text`` of the same form."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def log_text(self, key, columns=None, data=None, dataframe=None, step=None):
        self.calls.append((key, columns, data, step))


class FakeMlflowClient:
    def __init__(self):
        self.calls = []

    def log_text(self, run_id, text, artifact_file):
        self.calls.append((run_id, text, artifact_file))


class FakeCometExperiment:
    def __init__(self):
        self.calls = []

    def log_text(self, text, step=None, metadata=None):
        self.calls.append((text, step, metadata))


class ExperimentLogger(QuietLogger):
    """MLflow-like (an ``experiment`` with ``log_text`` and a ``run_id``) or Comet-like (no ``run_id``)."""

    def __init__(self, experiment, run_id=None):
        super().__init__()
        self._experiment = experiment
        if run_id is not None:
            self.run_id = run_id

    @property
    def experiment(self):
        return self._experiment


def test_tensorboard_gets_the_markdown_table_at_its_step(tmp_path):
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    assert log_table(bare_trainer(tmp_path, logger), "test_per_class", ROWS, step=7) == [logger]
    logger.experiment.flush()
    assert text_events(logger.log_dir) == {"test_per_class": [(7, format_table(ROWS))]}
    assert "| dog | 0 | - |  |" in format_table(ROWS)  # NaN as "-", in the text TensorBoard shows


def test_the_step_defaults_to_the_global_step(tmp_path):
    logger = TableLogger()
    log_table(bare_trainer(tmp_path, logger), "val_per_class", ROWS)
    assert [call[3] for call in logger.calls] == [0]


def test_a_logger_with_log_table_gets_columns_and_raw_values(tmp_path):
    logger = TableLogger()
    log_table(bare_trainer(tmp_path, logger), "test_per_class", ROWS, step=3)
    ((key, columns, data, step),) = logger.calls
    assert (key, columns, step) == ("test_per_class", ["class", "support", "f1", "most_confused_with"], 3)
    assert data[0] == ["cat", 4, 0.5, "dog"] and data[1][:2] == ["dog", 0] and math.isnan(data[1][2])


def test_a_logger_with_only_log_text_gets_the_values_as_text(tmp_path):
    logger = TextLogger()
    log_table(bare_trainer(tmp_path, logger), "test_per_class", ROWS, step=3)
    ((key, columns, data, step),) = logger.calls
    assert (key, len(columns), step) == ("test_per_class", 4, 3)
    assert data == [["cat", "4", "0.5000", "dog"], ["dog", "0", "-", ""]]


def test_an_mlflow_like_logger_gets_a_markdown_artifact_of_its_run(tmp_path):
    client = FakeMlflowClient()
    log_table(bare_trainer(tmp_path, ExperimentLogger(client, run_id="run-1")), "../test/per class", ROWS, step=5)
    assert client.calls == [("run-1", format_table(ROWS), "tables/test_per_class/step_000005.md")]  # tag made safe


def test_a_comet_like_logger_gets_the_text_with_step_and_tag(tmp_path):
    experiment = FakeCometExperiment()
    log_table(bare_trainer(tmp_path, ExperimentLogger(experiment)), "test_per_class", ROWS, step=5)
    assert experiment.calls == [(format_table(ROWS), 5, {"tag": "test_per_class"})]


def test_every_logger_that_takes_tables_gets_it_and_the_others_nothing(tmp_path):
    tensorboard, csv, table = TensorBoardLogger(str(tmp_path), name="tb"), CSVLogger(str(tmp_path)), TableLogger()
    quiet = QuietLogger()
    taken = log_table(bare_trainer(tmp_path / "root", [tensorboard, csv, table, quiet]), "val_per_class", ROWS, step=2)
    assert taken == [tensorboard, table]
    tensorboard.experiment.flush()
    assert [step for step, _ in text_events(tensorboard.log_dir)["val_per_class"]] == [2]
    assert [call[0] for call in table.calls] == ["val_per_class"]
    assert not list(tmp_path.rglob("*.md")) and not list(tmp_path.rglob("*.png"))  # no fallback file


def test_without_a_logger_or_rows_nothing_happens(tmp_path):
    assert log_table(bare_trainer(tmp_path), "val_per_class", ROWS) == []
    logger = TableLogger()
    assert log_table(bare_trainer(tmp_path, logger), "val_per_class", []) == [] and logger.calls == []


def test_other_processes_log_nothing(tmp_path):
    logger = TableLogger()
    worker = SimpleNamespace(is_global_zero=False, loggers=[logger], global_step=0, default_root_dir=str(tmp_path))
    assert log_table(worker, "val_per_class", ROWS) == []
    assert logger.calls == []
