"""The file index: each file read once, answers cached by path, size and time, the cache never trusted blindly."""

import os

import pytest
from PIL import Image

from lightning_cv.data import file_index
from lightning_cv.data.file_index import scan_files


@pytest.fixture
def images(tmp_path, monkeypatch):
    monkeypatch.setenv("LIGHTNING_CV_CACHE", str(tmp_path / "cache"))
    paths = []
    for i in range(4):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (6, 6), (i * 40, 0, 0)).save(path)
        paths.append(str(path))
    (tmp_path / "bad.png").write_text("not an image")
    return [*paths, str(tmp_path / "bad.png")]


def count_reads(monkeypatch):
    reads = []
    original = file_index._examine

    def counting(path, *args):
        reads.append(path)
        return original(path, *args)

    monkeypatch.setattr(file_index, "_examine", counting)
    return reads


def test_second_scan_reads_no_file_and_a_changed_file_is_read_again(images, monkeypatch):
    reads = count_reads(monkeypatch)
    first = scan_files(images, key="k", max_pixels=10**8)
    assert sorted(reads) == sorted(images)  # once each
    assert first[images[-1]].error.startswith("not a readable image") and first[images[0]].error is None
    assert len({f.digest for f in first.values()}) == 5
    reads.clear()
    again = scan_files(images, key="k", max_pixels=10**8)
    assert reads == [] and again == first
    Image.new("RGB", (7, 7)).save(images[1])  # new content, new size and time
    os.utime(images[1], ns=(1, 1))
    changed = scan_files(images, key="k", max_pixels=10**8)
    assert reads == [images[1]] and changed[images[1]].digest != first[images[1]].digest


def test_a_decode_is_not_answered_from_a_header_check(images, monkeypatch):
    reads = count_reads(monkeypatch)
    scan_files(images, key="k", max_pixels=10**8)
    reads.clear()
    scan_files(images, key="k", max_pixels=10**8, decode=True)
    assert len(reads) == len(images)


def test_damaged_cache_is_rebuilt_and_off_writes_nothing(images, monkeypatch, tmp_path):
    scan_files(images, key="k", max_pixels=10**8)
    (cache,) = (tmp_path / "cache").glob("index-*.json")
    cache.write_text("{broken")
    reads = count_reads(monkeypatch)
    scan_files(images, key="k", max_pixels=10**8)
    assert len(reads) == len(images) and cache.read_text().startswith('{"version"')
    monkeypatch.setenv("LIGHTNING_CV_CACHE", "off")
    scan_files(images, key="other", max_pixels=10**8)
    assert len(list((tmp_path / "cache").glob("index-*.json"))) == 1
