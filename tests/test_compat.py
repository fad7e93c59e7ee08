"""What users already have keeps working: a checkpoint and a run config written by an earlier lightning_cv."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from lightning_cv import ImageClassifier
from lightning_cv.cli import LightningCVCLI, main

OLD = Path(__file__).parent / "fixtures" / "checkpoint_2026_11"

pytestmark = pytest.mark.usefixtures("in_tmp")


def test_the_fixture_is_the_old_format():
    hparams = torch.load(OLD / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hparams["_instantiator"] == "lightning.pytorch.cli.instantiate_module"


def test_old_checkpoint_loads_in_python_with_the_same_outputs():
    model = ImageClassifier.load_from_checkpoint(OLD / "last.ckpt").eval()
    assert model.hparams["backbone"] == "test_resnet" and model.hparams["class_names"][0] == "circle"
    state = torch.load(OLD / "last.ckpt", weights_only=True)["state_dict"]
    new = model.state_dict()
    assert set(new) - set(state) == {"calibration._extra_state"}  # the one key added since: the calibration
    assert all(torch.equal(v, new[k]) for k, v in state.items())
    assert model.temperature == 1.0 and model.min_confidence is None  # written before calibration: uncalibrated


def test_old_config_and_checkpoint_evaluate_and_resume(in_tmp):
    shutil.copytree(OLD, in_tmp / "old")
    config = ["--config", "old/config.yaml", "--trainer.enable_progress_bar=false"]
    tested = LightningCVCLI(args=["test", *config, "--ckpt_path=old/last.ckpt"])
    assert tested.trainer.callback_metrics["test_acc"].item() == pytest.approx(2 / 12)  # what it scored when written
    resumed = LightningCVCLI(args=["fit", *config, "--ckpt_path=old/last.ckpt", "--trainer.max_epochs=2"])
    assert resumed.trainer.current_epoch == 2 and resumed.trainer.global_step == 4


def test_old_checkpoint_exports(in_tmp):
    assert main(["export", "--ckpt_path", str(OLD / "last.ckpt"), "--output", "m.onnx", "--eval_images", "0"]) == 0
    assert (in_tmp / "m.onnx").is_file()
