"""Where `lightning-cv fit` writes: under `--trainer.default_root_dir`, a resumed run in its own folder, pictures for
any logger, and checkpoints written in the background."""

import warnings
from pathlib import Path

import pytest
import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO

from lightning_cv.cli import LightningCVCLI
from lightning_cv.resume import BackgroundCheckpointIO
from tests.conftest import TINY_CLI

pytestmark = pytest.mark.usefixtures("in_tmp")


def fit(*extra: str) -> LightningCVCLI:
    return LightningCVCLI(args=["fit", *TINY_CLI, "--trainer.max_epochs=1", *extra])


def files_under(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_default_root_dir_holds_everything_the_run_writes(in_tmp):
    cli = fit("--trainer.default_root_dir=experiments/a")
    run = in_tmp / "experiments" / "a" / "lightning_cv" / "version_0"
    assert Path(cli.trainer.log_dir).resolve() == run.resolve()
    written = files_under(run)
    assert {"config.yaml", "hparams.yaml", "checkpoints/last.ckpt"} <= written
    assert any(name.startswith("events.out.tfevents.") for name in written)
    assert not (in_tmp / "runs").exists()
    # `--ckpt_path best` looks where the run wrote
    again = LightningCVCLI(args=["validate", *TINY_CLI, "--trainer.default_root_dir=experiments/a", "--ckpt_path=best"])
    assert "val_acc" in again.trainer.callback_metrics


def test_a_save_dir_the_user_sets_still_wins_over_default_root_dir(in_tmp):
    cli = fit("--trainer.default_root_dir=root", "--trainer.logger.init_args.save_dir=logs")
    assert Path(cli.trainer.log_dir).resolve() == (in_tmp / "logs" / "lightning_cv" / "version_0").resolve()


def test_without_default_root_dir_runs_go_to_runs(in_tmp):
    cli = fit()
    assert Path(cli.trainer.log_dir).resolve() == (in_tmp / "runs" / "lightning_cv" / "version_0").resolve()


def test_a_resumed_run_continues_in_its_own_folder(in_tmp):
    first = fit()
    run = Path(first.trainer.log_dir)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        second = LightningCVCLI(args=["fit", *TINY_CLI, "--trainer.max_epochs=2", "--ckpt_path=last"])
    # the folder holding checkpoints is expected, not warned about
    assert not [w for w in caught if "exists and is not empty" in str(w.message)]
    assert Path(second.trainer.log_dir) == run
    assert not (run.parent / "version_1").exists()
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert {"config.yaml", "config-1.yaml"} <= files_under(run)  # both commands' settings are kept
    assert len(list(run.glob("events.out.tfevents.*"))) == 2  # TensorBoard reads both files as one run
    # TensorBoard hides what a killed run logged past the checkpoint's step, which the resumed run logs again
    assert second.config["fit"]["trainer"]["logger"]["init_args"]["purge_step"] == 2


def test_a_resumed_run_can_ask_for_a_new_folder(in_tmp):
    first = fit()
    second = LightningCVCLI(
        args=["fit", *TINY_CLI, "--trainer.max_epochs=2", "--ckpt_path=last", "--new_version=true"]
    )
    assert Path(second.trainer.log_dir).name == "version_1" and Path(first.trainer.log_dir).name == "version_0"


def test_a_checkpoint_from_elsewhere_starts_a_new_folder(in_tmp, cli_checkpoint):
    fit()  # version_0 exists here; the checkpoint comes from another tree
    second = LightningCVCLI(args=["fit", *TINY_CLI, "--trainer.max_epochs=2", f"--ckpt_path={cli_checkpoint}"])
    assert Path(second.trainer.log_dir).name == "version_1"


def test_a_csv_logger_run_gets_the_pictures_as_png_files(in_tmp):
    cli = fit(
        "--trainer.logger=lightning.pytorch.loggers.CSVLogger",
        "--trainer.logger.init_args.save_dir=csv",
        "--gallery_images=4",
    )
    run = Path(cli.trainer.log_dir)
    written = files_under(run)
    assert "metrics.csv" in written
    assert any(name.startswith("images/val_confusion_matrix/step_") for name in written)
    assert any(name.startswith("images/val_worst_predictions/step_") for name in written)


def test_checkpoints_are_written_in_the_background_unless_switched_off(in_tmp):
    cli = fit()
    assert isinstance(cli.trainer.strategy.checkpoint_io, BackgroundCheckpointIO)
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.is_file() and torch.load(best, weights_only=True)["global_step"] == 2  # on disk when fit returns
    assert not [p for p in best.parent.iterdir() if p.name.startswith(".")]  # no partial file left behind
    sync = fit("--checkpoint_async=false")
    assert type(sync.trainer.strategy.checkpoint_io) is TorchCheckpointIO


def test_only_the_requested_subcommand_parser_is_built_and_help_lists_them_all(capsys):
    with pytest.raises(SystemExit):
        LightningCVCLI(args=["fit", *TINY_CLI, "--print_config"])
    assert "trainer:" in capsys.readouterr().out  # the fit parser works on its own
    with pytest.raises(SystemExit):
        LightningCVCLI(args=["--help"])
    listing = capsys.readouterr().out
    assert all(name in listing for name in ("fit", "validate", "test", "predict"))
    probe = LightningCVCLI.__new__(LightningCVCLI)
    probe._requested = "test"
    assert list(probe.subcommands()) == ["test"]
    probe._requested = None
    assert list(probe.subcommands()) == ["fit", "validate", "test", "predict"]


def test_a_resumed_csv_logger_run_keeps_the_first_runs_metrics(in_tmp):
    # Lightning's CSVLogger empties metrics.csv in a folder that has one: a resume there would erase the history
    csv = ["--trainer.logger=lightning.pytorch.loggers.CSVLogger", "--trainer.logger.init_args.save_dir=csv"]
    first = fit(*csv)
    metrics = Path(first.trainer.log_dir) / "metrics.csv"
    before = metrics.read_text()
    assert "val_acc" in before
    second = LightningCVCLI(args=["fit", *TINY_CLI, "--trainer.max_epochs=2", "--ckpt_path=last", *csv])
    assert Path(second.trainer.log_dir).name == "version_1"
    assert metrics.read_text() == before
