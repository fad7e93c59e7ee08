"""Which paths a list file may name: relative ones stay in its folder, absolute ones are used as written."""

import os

import pytest

from lightning_cv.data.sources import find_predict_files, read_list_file
from tests.data.helpers import write_image


@pytest.fixture
def lists(tmp_path):
    """``root/list.csv`` beside ``root/imgs/a.png``, and ``outside.png`` next to ``root``."""
    write_image(tmp_path / "root" / "imgs" / "a.png", 1)
    write_image(tmp_path / "outside.png", 2)
    return tmp_path / "root"


def test_relative_paths_that_climb_out_are_refused_with_every_row_named(lists):
    (lists / "list.csv").write_text("path,label\nimgs/a.png,cat\n../outside.png,dog\nimgs/../../outside.png,dog\n")
    with pytest.raises(
        ValueError,
        match=r"(?s)list.csv: 2 row\(s\) name files outside .*row 3: '../outside.png' climbs out of the folder with "
        r"'..'\n  row 4: 'imgs/../../outside.png' climbs out.*pass `follow_links='all'`",
    ):
        read_list_file(lists / "list.csv")
    records = read_list_file(lists / "list.csv", follow_links="all")
    assert [label for _, label in records] == ["cat", "dog", "dog"]


def test_dot_dot_that_stays_inside_is_fine(lists):
    (lists / "list.txt").write_text("imgs/../imgs/a.png cat\n")
    assert read_list_file(lists / "list.txt") == [(str(lists / "imgs/../imgs/a.png"), "cat")]


@pytest.mark.skipif(os.name == "nt", reason="needs POSIX symlinks")
def test_a_link_out_of_the_list_folder_is_refused_unless_all(lists, tmp_path):
    os.symlink(tmp_path / "outside.png", lists / "imgs" / "b.png")
    os.symlink(tmp_path, lists / "up")
    (lists / "list.csv").write_text("imgs/a.png,cat\nimgs/b.png,dog\nup/outside.png,dog\n")
    with pytest.raises(ValueError, match=r"(?s)row 2: 'imgs/b.png' leads through a link to '.*outside.png'.*row 3"):
        read_list_file(lists / "list.csv")
    assert len(read_list_file(lists / "list.csv", follow_links="all")) == 3
    (lists / "inside.csv").write_text("imgs/a.png,cat\n")
    os.symlink(lists / "imgs" / "a.png", lists / "imgs" / "c.png")
    (lists / "linked.csv").write_text("imgs/c.png,cat\n")
    assert len(read_list_file(lists / "linked.csv")) == 1  # a link that stays inside is fine by default
    with pytest.raises(
        ValueError,
        match=r"(?s)row 1: 'imgs/c.png' leads through a link.*\(or 'inside' for links that stay in the folder\)",
    ):
        read_list_file(lists / "linked.csv", follow_links="none")


def test_absolute_paths_are_used_as_written(lists, tmp_path):
    outside = tmp_path / "outside.png"
    (lists / "list.csv").write_text(f"{outside},dog\n")
    for mode in ("inside", "all", "none"):
        assert read_list_file(lists / "list.csv", follow_links=mode) == [(str(outside), "dog")]


def test_data_dir_is_the_folder_relative_paths_stay_in(lists):
    (lists / "imgs" / "list.csv").write_text("imgs/a.png,cat\n")
    assert read_list_file(lists / "imgs" / "list.csv", root=lists) == [(str(lists / "imgs/a.png"), "cat")]


def test_predict_lists_follow_the_same_rule(lists):
    (lists / "predict.txt").write_text("path\nimgs/a.png\n../outside.png\n")
    with pytest.raises(ValueError, match=r"predict.txt: 1 row\(s\) name files outside .*\n  row 3: '../outside.png'"):
        find_predict_files(lists / "predict.txt")
    assert [os.path.basename(f) for f in find_predict_files(lists / "predict.txt", follow_links="all")] == [
        "a.png",
        "outside.png",
    ]
