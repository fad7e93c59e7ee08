"""`--data.*` values the data module cannot use stop the command line at once: one error line, no run folder."""

import os

import pytest

from lightning_cv.cli import main


@pytest.fixture(autouse=True)
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (
            "--data.image_size=0",
            "Expected `image_size` to be a positive int or a (height, width) pair of positive ints",
        ),
        ("--data.follow_links=sometimes", "follow_links"),
    ],
)
def test_unusable_data_option_fails_before_training(in_tmp, capsys, option, message):
    try:
        code = main(["fit", option, "--trainer.accelerator=cpu", "--trainer.max_epochs=1"])
    except SystemExit as exit_info:  # a value outside a Literal is refused by the parser itself
        code = exit_info.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert os.listdir(in_tmp) == []  # no run folder, no config
