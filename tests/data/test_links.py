"""The link rule of image-folder scans, on real symlink trees: loops end, nothing is listed twice, nothing leaves."""

import os
import threading
from collections import Counter

import pytest

from lightning_cv import ImageDataModule
from lightning_cv.data.links import SkippedPath
from lightning_cv.data.sources import list_images, scan_class_folders
from tests.data.helpers import make_class_tree, write_image

pytestmark = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="needs POSIX symlinks")


def finishes(func, timeout=60.0):
    """``func()``'s result, or a failure when it is still running after ``timeout`` s (a daemon thread: a hang
    cannot keep the test session alive)."""
    result = {}

    def run():
        try:
            result["value"] = func()
        except BaseException as err:  # handed to the test below
            result["error"] = err

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), f"still scanning after {timeout} s: a link loop was followed"
    if "error" in result:
        raise result["error"]
    return result["value"]


def labels(records):
    return Counter(label for _, label in records)


@pytest.fixture
def data(tmp_path):
    return make_class_tree(tmp_path / "data", per_class=2)


def test_links_back_to_the_data_folder_end_the_scan(data):
    os.symlink(data, data / "cat" / "again")
    os.symlink("../..", data / "dog" / "up")  # relative, and to the folder above the data folder
    skipped: list[SkippedPath] = []
    for mode in ("inside", "all", "none"):
        skipped.clear()
        records, classes = finishes(lambda m=mode: scan_class_folders(data, follow_links=m, skipped=skipped))
        assert classes == ["cat", "dog", "owl"] and labels(records) == {"cat": 2, "dog": 2, "owl": 2}, mode
        assert {os.path.basename(s.path) for s in skipped} == {"again", "up"}, mode
    kinds = {os.path.basename(s.path): s.kind for s in finishes(lambda: _skips(data, "all"))}
    assert kinds == {"again": "loop", "up": "loop"}


def _skips(root, mode):
    skipped: list[SkippedPath] = []
    scan_class_folders(root, follow_links=mode, skipped=skipped)
    return skipped


def test_class_folders_that_link_to_the_data_folder_are_an_error_not_a_hang(data):
    os.symlink(data, data / "loop1")
    os.symlink(data, data / "loop2")
    with pytest.raises(ValueError, match=r"(?s)'.*loop1', '.*loop2' hold no images.*loop1: a link to .* \(a loop\)"):
        finishes(lambda: scan_class_folders(data, follow_links="all"))


def test_link_to_a_sibling_class_folder_does_not_relabel_its_images(data):
    os.symlink("../dog", data / "cat" / "more_dogs")  # 'cat' sorts first, yet the dogs stay dogs
    skipped: list[SkippedPath] = []
    records, _ = scan_class_folders(data, follow_links="all", skipped=skipped)
    assert labels(records) == {"cat": 2, "dog": 2, "owl": 2}
    assert all(label == "dog" for path, label in records if "dog_" in path)
    assert [(os.path.basename(s.path), s.kind) for s in skipped] == [("more_dogs", "repeat")]
    assert skipped[0].reason.endswith("a folder listed already")


def test_file_linked_into_two_classes_keeps_one_label(tmp_path, data):
    store = write_image(tmp_path / "store" / "shared.png", 9)
    os.symlink(store, data / "owl" / "b_link.png")
    os.symlink(store, data / "cat" / "z_link.png")  # 'cat/...' sorts before 'owl/...': the first link wins
    skipped: list[SkippedPath] = []
    records, _ = scan_class_folders(data, follow_links="all", skipped=skipped)
    linked = [(os.path.basename(p), label) for p, label in records if "_link" in os.path.basename(p)]
    assert linked == [("z_link.png", "cat")]
    assert [os.path.basename(s.path) for s in skipped] == ["b_link.png"] and "a file listed already" in str(skipped[0])


def test_link_to_a_file_of_another_class_keeps_the_files_own_class(data):
    os.symlink(data / "owl" / "owl_0.png", data / "cat" / "a_owl.png")
    skipped: list[SkippedPath] = []
    records, _ = scan_class_folders(data, skipped=skipped)
    assert labels(records) == {"cat": 2, "dog": 2, "owl": 2}
    assert (str(data / "owl" / "owl_0.png"), "owl") in records
    assert skipped[0].kind == "repeat" and skipped[0].path.endswith("a_owl.png")


def test_each_mode_on_links_inside_and_outside(tmp_path, data):
    outside = write_image(tmp_path / "elsewhere" / "far.png", 7)
    pool = write_image(data / ".pool" / "near.png", 8)  # hidden: not a class, but inside the data folder
    os.symlink(outside, data / "cat" / "far.png")
    os.symlink(pool, data / "cat" / "near.png")
    os.symlink(outside.parent, data / "dog" / "far_folder")
    listed = {}
    for mode in ("inside", "all", "none"):
        skipped: list[SkippedPath] = []
        records, _ = scan_class_folders(data, follow_links=mode, skipped=skipped)
        names = sorted(os.path.relpath(p, data) for p, _ in records)
        listed[mode] = [n for n in names if "far" in n or "near" in n]
        if mode == "inside":
            assert {(os.path.basename(s.path), s.kind) for s in skipped} == {
                ("far.png", "outside"),
                ("far_folder", "outside"),
            }
            assert "outside the data folder" in skipped[0].reason
        if mode == "none":
            assert {s.kind for s in skipped} == {"not followed"} and len(skipped) == 3
    assert listed["inside"] == ["cat/near.png"]
    assert listed["all"] == ["cat/far.png", "cat/near.png"]  # dog/far_folder/far.png is the same file as cat/far.png
    assert listed["none"] == []


def test_class_folder_linked_outside_is_an_error_that_names_the_option(tmp_path, data):
    store = make_class_tree(tmp_path / "store", classes=("emu",), per_class=2)
    os.symlink(store / "emu", data / "emu")
    with pytest.raises(ValueError, match=r"(?s)'.*emu' hold no images.*outside the data folder.*follow_links='all'"):
        scan_class_folders(data)
    records, classes = scan_class_folders(data, follow_links="all")
    assert "emu" in classes and labels(records)["emu"] == 2
    assert all(p.startswith(str(data)) for p, _ in records)  # paths as the data folder shows them


def test_broken_links_and_one_warning_without_a_list(tmp_path, data):
    os.symlink(tmp_path / "gone.png", data / "cat" / "gone.png")
    os.symlink(tmp_path / "gone.txt", data / "cat" / "gone.txt")  # not an image name: ignored like any text file
    os.symlink(data, data / "dog" / "loop")
    with pytest.warns(UserWarning, match=r"(?s)Skipped 2 path\(s\).*gone.png: a broken link.*loop.*To change this"):
        records, _ = scan_class_folders(data)
    assert len(records) == 6


def test_list_images_follows_the_same_rule(tmp_path):
    root = tmp_path / "photos"
    write_image(root / "a.png", 1)
    write_image(tmp_path / "secret" / "s.png", 2)
    os.symlink(tmp_path / "secret" / "s.png", root / "s.png")
    os.symlink(root, root / "sub")
    with pytest.warns(
        UserWarning, match=r"(?s)s.png: a link to .*outside the data folder.*sub: a link to .*\(a loop\)"
    ):
        assert [os.path.basename(p) for p in finishes(lambda: list_images(root))] == ["a.png"]
    assert [os.path.basename(p) for p in list_images(root, follow_links="all", skipped=[])] == ["a.png", "s.png"]


def test_a_linked_data_folder_is_entered(tmp_path):
    real = make_class_tree(tmp_path / "real", per_class=1)
    os.symlink(real, tmp_path / "alias")
    records, _ = scan_class_folders(tmp_path / "alias", follow_links="none")
    assert len(records) == 3 and all(p.startswith(str(tmp_path / "alias")) for p, _ in records)


def test_data_module_warns_once_for_all_splits(tmp_path):
    for split in ("train", "val"):
        make_class_tree(tmp_path / split, per_class=3, seed=len(split))
        os.symlink(tmp_path, tmp_path / split / "cat" / "loop")
    dm = ImageDataModule(data_dir=str(tmp_path), leakage_check="off")
    with pytest.warns(UserWarning, match=r"Skipped 2 path\(s\)") as caught:
        assert finishes(lambda: dm.num_classes) == 3
    assert sum("Skipped" in str(w.message) for w in caught) == 1


def test_data_module_passes_the_mode_on(tmp_path):
    make_class_tree(tmp_path / "data", per_class=2)
    write_image(tmp_path / "store" / "x.png", 3)
    os.symlink(tmp_path / "store" / "x.png", tmp_path / "data" / "cat" / "x.png")
    with pytest.warns(UserWarning, match="outside the data folder"):
        inside = ImageDataModule(data_dir=str(tmp_path / "data"), val_split=0.0, image_check="none")
        inside.setup("fit")
    everything = ImageDataModule(data_dir=str(tmp_path / "data"), val_split=0.0, follow_links="all")
    everything.setup("fit")
    assert len(inside.datasets["train"]) == 6 and len(everything.datasets["train"]) == 7
    with pytest.raises(ValueError, match=r"Expected `follow_links` one of inside, all, none, but got 'some'"):
        ImageDataModule(data_dir=str(tmp_path / "data"), follow_links="some")
