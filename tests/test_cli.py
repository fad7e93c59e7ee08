"""The lightning-cv command line, in-process and as a subprocess, on the embedded dataset with a tiny model."""

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from PIL import Image

from lightning_cv.cli import LightningCVCLI, main

ROOT = Path(__file__).resolve().parents[1]
TINY = [
    "--model.backbone=test_resnet",
    "--model.pretrained=false",
    "--data.image_size=32",
    "--data.dataset_kwargs={num_train: 36, num_val: 12, num_test: 12, image_size: 32}",
    "--data.batch_size=12",
    "--trainer.enable_progress_bar=false",
    "--trainer.enable_model_summary=false",
    "--trainer.accelerator=cpu",
]


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def fit(*extra):
    return LightningCVCLI(args=["fit", *TINY, "--trainer.max_epochs=2", *extra])


def test_fit_writes_checkpoints_config_and_events(in_tmp, capsys):
    cli = fit()
    run = Path(cli.trainer.log_dir).resolve()
    assert run.parent == in_tmp.resolve() / "runs" / "lightning_cv"
    ckpts = {p.name for p in (run / "checkpoints").iterdir()}
    assert "last.ckpt" in ckpts and any(n.startswith("best-epoch=") for n in ckpts)
    assert list(run.glob("events.out.tfevents.*"))
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run))
    events.Reload()
    assert {"val_confusion_matrix", "val_worst_predictions"} <= set(events.Tags()["images"])
    assert {"val_acc", "train_loss_epoch"} <= set(events.Tags()["scalars"])
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["model"]["num_classes"] == 6  # linked from the data, and written down
    assert config["model"]["class_names"][:2] == ["circle", "square"]
    assert "Best checkpoint:" in capsys.readouterr().out
    raw = torch.load(cli.trainer.checkpoint_callback.best_model_path, weights_only=True)
    assert raw["hyper_parameters"]["class_names"][0] == "circle"


def test_second_run_in_the_same_directory_does_not_fail(in_tmp):
    fit("--trainer.logger=false", "--trainer.max_epochs=1")
    fit("--trainer.logger=false", "--trainer.max_epochs=1")
    assert (in_tmp / "config.yaml").exists() and (in_tmp / "config-1.yaml").exists()


def test_validate_best_reproduces_the_best_validation_metric(in_tmp):
    cli = fit("--trainer.max_epochs=3")
    best_score = float(cli.trainer.checkpoint_callback.best_model_score)
    again = LightningCVCLI(args=["validate", *TINY, "--ckpt_path=best"])
    assert again.trainer.callback_metrics["val_acc"].item() == pytest.approx(best_score, abs=1e-6)
    tested = LightningCVCLI(args=["test", *TINY, "--ckpt_path=best"])
    # independent reference: the best checkpoint loaded on its own, its hits on the 12 test images counted by hand
    from lightning_cv import ImageClassifier

    best = ImageClassifier.load_from_checkpoint(cli.trainer.checkpoint_callback.best_model_path).eval()
    with torch.no_grad():
        hits = sum(int((best(b[0]).argmax(1) == b[1]).sum()) for b in tested.datamodule.test_dataloader())
    assert tested.trainer.callback_metrics["test_acc"].item() == pytest.approx(hits / 12)


def test_predict_from_checkpoint_alone_writes_a_row_per_image(in_tmp, cli_checkpoint):
    ckpt = cli_checkpoint  # trained at 32 px; test_resnet's own input size is 160
    photos = in_tmp / "photos"
    photos.mkdir()
    for i in range(3):
        Image.new("RGB", (50, 50), (40 * i, 100, 200)).save(photos / f"img{i}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 this is not really a jpeg")
    (photos / "notes.txt").write_text("ignored")
    out = in_tmp / "out"
    predicted = LightningCVCLI(
        args=[
            "predict",
            f"--ckpt_path={ckpt}",
            f"--data.predict_dir={photos}",
            f"--prediction.output_dir={out}",
            "--prediction.formats=[csv, jsonl]",
            "--trainer.enable_progress_bar=false",
        ]
    )
    assert predicted.datamodule.data_config["image_size"] == 32  # eval transforms from the checkpoint
    rows = list(csv.DictReader((out / "predictions.csv").open()))
    assert len(rows) == 4
    by_name = {Path(r["path"]).name: r for r in rows}
    names = predicted.model.hparams["class_names"]
    for i in range(3):
        assert by_name[f"img{i}.png"]["predicted_class"] in names and not by_name[f"img{i}.png"]["error"]
    assert by_name["broken.jpg"]["error"].startswith("unreadable:")
    assert len((out / "predictions.jsonl").read_text().splitlines()) == 4


def test_every_config_parses(capsys):
    configs = sorted((ROOT / "configs").glob("*.yaml"))
    assert len(configs) >= 8
    for config in configs:
        with pytest.raises(SystemExit) as exit_info:
            main(["fit", "--config", str(config), "--print_config"])
        assert exit_info.value.code in (0, None), config
        assert "backbone:" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["fit", "--model.lr2=0.1"], "lr2"),
        (["fit", "--model.lr=fast"], "lr"),
        (["fit", "--data.data_dir=does/not/exist"], "Data folder 'does/not/exist' does not exist"),
        (["predict", "--data.predict_dir=."], "needs a trained model: pass `--ckpt_path`"),
        (["test", "--ckpt_path=missing.ckpt"], "Checkpoint 'missing.ckpt' does not exist"),
        (["test", "--ckpt_path=best"], "No best checkpoint found under 'runs'"),
    ],
)
def test_bad_input_is_a_short_error(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        code = main(args)
        raise SystemExit(code)
    assert exit_info.value.code not in (0, None)
    err = capsys.readouterr().err
    assert message in err
    assert len(err.splitlines()) < 20  # no deep traceback


def test_foreign_checkpoint_is_refused(in_tmp, capsys):
    torch.save({"state_dict": {"w": torch.zeros(1)}, "hyper_parameters": {"hidden": 3}}, in_tmp / "other.ckpt")
    assert main(["predict", "--ckpt_path=other.ckpt", "--data.predict_dir=."]) == 2
    assert "is not a lightning_cv checkpoint" in capsys.readouterr().err


def test_config_cannot_call_os_system(in_tmp, capsys):
    (in_tmp / "evil.yaml").write_text(
        "trainer:\n  callbacks:\n    - class_path: os.system\n      init_args: {command: 'touch pwned'}\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--config", "evil.yaml", *TINY, "--trainer.max_epochs=1"])
    assert exit_info.value.code not in (0, None)
    assert not (in_tmp / "pwned").exists()
    assert "'os.system' may not be imported from a config" in capsys.readouterr().err


def test_lr_finder_saves_its_plot(in_tmp):
    cli = fit("--tune.lr_find=true", "--tune.lr_find_steps=16", "--data.batch_size=2", "--trainer.max_epochs=1")
    plot = Path(cli.trainer.log_dir) / "lr_find.png"
    assert plot.is_file() and plot.stat().st_size > 1000
    assert cli.model.hparams["lr"] != 1e-3  # the suggestion is used


def test_batch_size_finder(in_tmp):
    cli = fit("--tune.batch_size=true", "--data.batch_size=2", "--trainer.max_epochs=1")
    assert cli.datamodule.hparams["batch_size"] > 2


def test_early_stopping_flag_adds_the_callback(in_tmp):
    cli = fit("--early_stopping_patience=1", "--trainer.max_epochs=1")
    from lightning.pytorch.callbacks import EarlyStopping

    assert any(isinstance(c, EarlyStopping) and c.patience == 1 for c in cli.trainer.callbacks)


@pytest.mark.slow
def test_subprocess_entry_points(in_tmp):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    help_out = subprocess.run(
        [sys.executable, "-m", "lightning_cv", "fit", "--help"], capture_output=True, text=True, env=env, check=True
    )
    assert "--model.backbone" in help_out.stdout and "--data.data_dir" in help_out.stdout
    result = subprocess.run(
        [sys.executable, "-m", "lightning_cv", "fit", *TINY, "--trainer.max_epochs=1"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert list((in_tmp / "runs").rglob("best-*.ckpt"))
    bad = subprocess.run(
        [sys.executable, "-m", "lightning_cv", "test", "--ckpt_path=nope.ckpt"], capture_output=True, text=True, env=env
    )
    assert bad.returncode == 2 and "does not exist" in bad.stderr


def test_best_checkpoint_found_without_a_logger(in_tmp):
    fit("--trainer.logger=false", "--trainer.max_epochs=1")
    cli = LightningCVCLI(args=["validate", *TINY, "--trainer.logger=false", "--ckpt_path=best"])
    assert "val_acc" in cli.trainer.callback_metrics


def test_callbacks_from_the_command_line(in_tmp):
    cli = fit(
        "--trainer.callbacks+=lightning_cv.callbacks.EMA", "--trainer.callbacks.decay=0.9", "--trainer.max_epochs=1"
    )
    from lightning_cv.callbacks import EMA

    ema = next(c for c in cli.trainer.callbacks if isinstance(c, EMA))
    assert ema.decay == 0.9 and ema.num_updates == 3


def test_fit_with_ckpt_path_last_starts_fresh_then_resumes(in_tmp):
    # the same command on every start of a requeued job: nothing to resume the first time
    first = fit("--ckpt_path=last", "--trainer.max_epochs=1")
    assert first.trainer.global_step == 3
    second = fit("--ckpt_path=last", "--trainer.max_epochs=2")
    assert second.trainer.global_step == 6  # continued from the first run's last checkpoint
    with pytest.raises(FileNotFoundError, match="No best checkpoint found"):
        LightningCVCLI(args=["test", *TINY, "--ckpt_path=best", "--checkpoint.dirpath=elsewhere"])
