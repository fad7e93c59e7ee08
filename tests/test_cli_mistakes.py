"""Ordinary mistakes on the command line: one clear line naming the option, exit code 2, nothing half-written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from lightning_cv.cli import LightningCVCLI, main, short_error
from tests.conftest import TINY_CLI as TINY

pytestmark = pytest.mark.usefixtures("in_tmp")


@pytest.fixture
def checkpoint(cli_checkpoint):
    return cli_checkpoint



def one_line_error(capsys, args: list[str]) -> str:
    """Run the command line; it must fail with exit code 2 and a single error line (plus the debug hint)."""
    try:
        code = main(args)
    except SystemExit as exit_info:  # jsonargparse's own parse errors exit through argparse
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if "error:" in line]
    assert len(errors) == 1, err
    return errors[0]


# ------------------------------------------------------------------ --model.* against a checkpoint
@pytest.mark.parametrize("option", ["--model.lr=0.1", "--model.backbone=test_convnext", "--model.label_smoothing=0.2"])
def test_resume_refuses_model_settings_that_differ_from_the_checkpoint(checkpoint, capsys, option):
    key = option.split("=")[0][2:]
    line = one_line_error(capsys, ["fit", *TINY, f"--ckpt_path={checkpoint}", option])
    assert f"`{key}` is" in line and "in the checkpoint" in line and "--model.pretrained <checkpoint>" in line
    assert not Path("runs").exists()


def test_evaluation_refuses_another_architecture_but_takes_evaluation_settings(checkpoint, capsys):
    line = one_line_error(capsys, ["test", *TINY, f"--ckpt_path={checkpoint}", "--model.backbone=test_vit"])
    assert "`model.backbone` is 'test_vit' here but 'test_resnet' in the checkpoint" in line
    cli = LightningCVCLI(args=["test", *TINY, f"--ckpt_path={checkpoint}", "--model.top_k=2", "--trainer.logger=false"])
    assert cli.model.hparams["top_k"] == 2 and "test_acc_top2" in cli.trainer.callback_metrics


def test_resume_with_the_same_settings_and_a_runtime_option(checkpoint):
    """What the user repeats (TINY) agrees with the checkpoint; `channels_last` may differ on any subcommand."""
    cli = LightningCVCLI(
        args=["fit", *TINY, f"--ckpt_path={checkpoint}", "--trainer.max_epochs=2", "--model.channels_last=true"]
    )
    assert cli.trainer.current_epoch == 2 and cli.model.hparams["channels_last"] is True
    assert cli.model.hparams["lr"] == torch.load(checkpoint, weights_only=True)["hyper_parameters"]["lr"]


# ------------------------------------------------------------------ one line for each mistake
def test_bad_pretrained_file_is_one_line(in_tmp, capsys):
    (in_tmp / "w.safetensors").write_bytes(os.urandom(256))
    (in_tmp / "w.pth").write_bytes(os.urandom(256))
    for name, kind in (("w.safetensors", "not a safetensors file"), ("w.pth", "not a PyTorch weights file")):
        line = one_line_error(capsys, ["fit", *TINY, f"--model.pretrained={name}"])
        assert f"'{name}' is {kind} that can be read" in line
    assert not (in_tmp / "runs").exists()


def test_config_with_a_yaml_error_names_the_file(in_tmp, capsys):
    (in_tmp / "broken.yaml").write_text("model:\n  lr: 0.1\n  backbone: [resnet\n")
    line = one_line_error(capsys, ["fit", "--config", "broken.yaml"])
    assert "Config file 'broken.yaml' is not valid YAML at line" in line


def test_unavailable_accelerator_is_one_line(in_tmp, capsys):
    line = one_line_error(capsys, ["fit", *TINY, "--trainer.accelerator=mps"])
    assert "`MPSAccelerator` can not run on your system" in line and "--trainer.accelerator" in line
    if not torch.cuda.is_available():
        line = one_line_error(capsys, ["fit", *TINY, "--trainer.accelerator=gpu"])
        assert "gpu" in line.lower() and "--trainer.accelerator" in line
    assert not (in_tmp / "runs").exists()


def test_wrong_type_names_the_option_and_the_type(capsys):
    line = one_line_error(capsys, ["fit", *TINY, "--trainer.max_epochs", "ten"])
    assert line == "error: `--trainer.max_epochs` expects int or None, but got `ten`."
    line = one_line_error(capsys, ["fit", *TINY, "--model.freeze_backbone", "maybe"])
    assert line == "error: `--model.freeze_backbone` expects bool or one of 'auto', but got `maybe`."


def test_missing_required_option_is_named_as_typed(capsys):
    assert one_line_error(capsys, ["export", "--output", "m.onnx"]) == "error: missing `--ckpt_path`."


def test_short_error_keeps_messages_it_does_not_know():
    assert short_error("unrecognized arguments: --model.lr2 1") == "unrecognized arguments: --model.lr2 1"
    other = (
        'Parser key "trainer.callbacks":\n  Does not validate against any of the Union subtypes\n  Errors:\n'
        "    - Not a valid subclass of Callback\n"
        "    - Expected a <class 'NoneType'>\n  Given value: [{'class_path': 'mypkg.Thing'}]"
    )
    assert short_error(other) == other  # a real reason must not be cut down to "expects ..."


def test_deploy_data_option_that_is_not_yaml(checkpoint, capsys):
    args = ["export", "--ckpt_path", checkpoint, "--output", "m.onnx", "--data.mean", "[0.5, 0.5"]
    line = one_line_error(capsys, args)
    assert line == "error: `--data.mean` expects Sequence or None, but got `[0.5, 0.5`."
    assert not Path("m.onnx").exists()


def test_refused_setup_leaves_no_empty_run_folder(checkpoint, in_tmp, capsys):
    """The class-count check happens in the data module's setup, after the logger made the run's folder."""
    from PIL import Image

    for name in ("cat", "dog"):
        (in_tmp / "pets" / name).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (32, 32), (60 * i, 0, 0)).save(in_tmp / "pets" / name / f"{i}.png")
    (in_tmp / "runs" / "lightning_cv" / "version_0").mkdir(parents=True)  # an earlier run stays
    (in_tmp / "runs" / "lightning_cv" / "version_0" / "events.out.tfevents.1").write_bytes(b"x")
    line = one_line_error(capsys, ["test", *TINY[:2], "--data.data_dir=pets", f"--ckpt_path={checkpoint}"])
    assert "The model has 6 classes but the data has 2" in line
    assert sorted(p.name for p in (in_tmp / "runs" / "lightning_cv").iterdir()) == ["version_0"]


def test_fit_lists_a_folder_dataset_once(in_tmp, monkeypatch):
    """The command line counts the classes before building the model; it must not list the tree a second time."""
    from PIL import Image

    import lightning_cv.data.discovery as discovery

    for name in ("cat", "dog"):
        (in_tmp / "pets" / name).mkdir(parents=True)
        for i in range(6):
            colour = (40 * i, 90 if name == "cat" else 0, 0)
            Image.new("RGB", (32, 32), colour).save(in_tmp / "pets" / name / f"{i}.png")
    calls = []
    real = discovery.scan_class_folders
    monkeypatch.setattr(discovery, "scan_class_folders", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    args = [*TINY[:2], "--data.data_dir=pets", "--data.image_size=32", "--data.batch_size=4", "--trainer.max_epochs=1"]
    cli = LightningCVCLI(args=["fit", *args, "--trainer.logger=false", "--trainer.enable_progress_bar=false"])
    assert cli.datamodule.num_classes == 2 and cli.trainer.global_step > 0
    assert len(calls) == 1
