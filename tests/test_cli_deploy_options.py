"""`export`, `benchmark` and `explain` parse like `fit`: a config file, --print_config, typed options, flags."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import yaml

from lightning_cv.cli import main

pytestmark = pytest.mark.usefixtures("in_tmp")


def test_export_options_from_a_config_file(cli_checkpoint, in_tmp):
    (in_tmp / "export.yaml").write_text(
        yaml.safe_dump({"ckpt_path": cli_checkpoint, "output": "p.onnx", "softmax": True, "eval_images": 0})
    )
    assert main(["export", "--config", "export.yaml"]) == 0
    session = ort.InferenceSession(str(in_tmp / "p.onnx"), providers=["CPUExecutionProvider"])
    probs = session.run(None, {session.get_inputs()[0].name: np.zeros((2, 3, 32, 32), np.float32)})[0]
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)  # --softmax (here from the file) took effect


def test_print_config_shows_every_option_and_runs_nothing(cli_checkpoint, in_tmp, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["export", "--ckpt_path", cli_checkpoint, "--output", "m.onnx", "--softmax", "--print_config"])
    assert exit_info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["softmax"] is True and printed["quantize"] == "none" and printed["data"]["image_size"] is None
    assert not (in_tmp / "m.onnx").exists()


def test_switches_are_flags(cli_checkpoint, in_tmp, capsys):
    args = ["explain", "--ckpt_path", cli_checkpoint, "--images", "photos", "--output", "cams", "--no_rollout"]
    (in_tmp / "photos").mkdir()
    from PIL import Image

    Image.new("RGB", (32, 32), "blue").save(in_tmp / "photos" / "a.png")
    assert main(args) == 0
    assert (in_tmp / "cams" / "a_gradcam.png").is_file()
