from collections import Counter

import pytest

from lightning_cv.data.sources import list_images, read_list_file, scan_class_folders, stratified_split
from tests.data.helpers import make_class_tree, write_image


def test_class_folders_ignore_non_images(tmp_path):
    make_class_tree(tmp_path, per_class=2)
    (tmp_path / "cat" / "notes.txt").write_text("hello")
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / ".hidden").mkdir()
    records, classes = scan_class_folders(tmp_path)
    assert classes == ["cat", "dog", "owl"]
    assert len(records) == 6 and all(path.endswith(".png") for path, _ in records)
    assert {label for _, label in records} == set(classes)


def test_empty_class_folder_is_an_error(tmp_path):
    make_class_tree(tmp_path, per_class=1)
    (tmp_path / "emu").mkdir()
    with pytest.raises(ValueError, match=r"Class folder\(s\) '.*emu' hold no images"):
        scan_class_folders(tmp_path)


def test_missing_folder_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Data folder '.*nope' does not exist"):
        scan_class_folders(tmp_path / "nope")


def test_csv_with_extra_columns_and_header(tmp_path):
    write_image(tmp_path / "imgs" / "a.png", 1)
    write_image(tmp_path / "imgs" / "b.png", 2)
    (tmp_path / "list.csv").write_text("id,width,filepath,class\n1,24,imgs/a.png,zebra\n2,24,imgs/b.png,ant\n")
    records = read_list_file(tmp_path / "list.csv")
    assert records == [(str(tmp_path / "imgs/a.png"), "zebra"), (str(tmp_path / "imgs/b.png"), "ant")]


def test_text_list_without_header(tmp_path):
    (tmp_path / "list.txt").write_text("# comment\nx/1.png 3\nx/2.png 10\n")
    records = read_list_file(tmp_path / "list.txt", root="/data")
    assert records == [("/data/x/1.png", "3"), ("/data/x/2.png", "10")]


def test_unreadable_row_is_named(tmp_path):
    (tmp_path / "list.csv").write_text("path,label\na.png,cat\nb.png\n")
    with pytest.raises(ValueError, match=r"list.csv, row 3: expected a path and a label, but got \['b.png'\]"):
        read_list_file(tmp_path / "list.csv")


def test_stratified_split_is_seeded_and_stratified():
    labels = [0] * 50 + [1] * 30 + [2] * 20
    val, test, train = stratified_split(labels, [0.2, 0.1], seed=7)
    assert stratified_split(labels, [0.2, 0.1], seed=7) == [val, test, train]
    assert stratified_split(labels, [0.2, 0.1], seed=8) != [val, test, train]
    assert sorted(val + test + train) == list(range(100))
    assert Counter(labels[i] for i in val) == {0: 10, 1: 6, 2: 4}
    assert Counter(labels[i] for i in test) == {0: 5, 1: 3, 2: 2}


def test_tiny_class_keeps_a_training_image():
    _val, train = stratified_split([0, 0, 0, 0, 1], [0.5], seed=0)
    assert 4 in train


def test_list_images_recursive_sorted(tmp_path):
    write_image(tmp_path / "b" / "2.jpg", 1, fmt="JPEG")
    write_image(tmp_path / "a" / "1.png", 2)
    assert [p.split("/")[-1] for p in list_images(tmp_path)] == ["1.png", "2.jpg"]


def test_text_list_paths_with_spaces(tmp_path):
    (tmp_path / "list.txt").write_text("cats/tabby 1.png cat\n")
    assert read_list_file(tmp_path / "list.txt", root="/d") == [("/d/cats/tabby 1.png", "cat")]


def test_small_classes_still_get_validation_images():
    val, _train = stratified_split([0] * 5 + [1] * 5, [0.1], seed=0)
    assert {i // 5 for i in val} == {0, 1}
