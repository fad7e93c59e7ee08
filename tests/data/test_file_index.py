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
    assert sorted(reads) == sorted(images[:-1])  # the readable ones; a file without a header cannot decode


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


def test_the_pixel_limit_applies_to_cached_answers(images, monkeypatch):
    reads = count_reads(monkeypatch)
    small = scan_files(images, key="k", max_pixels=30)  # 6x6 = 36 pixels
    assert small[images[0]].problem(30).startswith("too large to decode safely (36 pixels > 30")
    reads.clear()
    large = scan_files(images, key="k", max_pixels=10**8)
    assert reads == [] and large[images[0]].problem(10**8) is None  # no new read: the count was kept


def test_a_decoder_crash_marks_the_file_unusable(images, monkeypatch):
    from PIL import PngImagePlugin

    def broken_load(self):
        raise TypeError("fuzzed file (simulated)")

    monkeypatch.setattr(PngImagePlugin.PngImageFile, "load", broken_load)
    facts = scan_files(images, key="k", max_pixels=10**8, decode=True)
    assert facts[images[0]].error == "cannot be decoded (TypeError: fuzzed file (simulated))"


def test_a_file_copied_with_its_old_time_is_read_again(images, monkeypatch, tmp_path):
    first = scan_files(images, key="k", max_pixels=10**8)
    stat = os.stat(images[0])
    replacement = tmp_path / "other.png"
    Image.new("RGB", (6, 6), (1, 2, 3)).save(replacement)
    os.replace(replacement, images[0])  # like `cp -p`/`rsync -t`: same size, the old modification time
    os.utime(images[0], ns=(stat.st_atime_ns, stat.st_mtime_ns))
    reads = count_reads(monkeypatch)
    again = scan_files(images, key="k", max_pixels=10**8)
    assert reads == [images[0]] and again[images[0]].digest != first[images[0]].digest


def test_header_checks_alone_read_no_whole_file(images, monkeypatch):
    from pathlib import Path

    def no_full_reads(self):
        raise AssertionError(f"{self} was read whole")

    monkeypatch.setattr(Path, "read_bytes", no_full_reads)
    facts = scan_files(images, key="headers", max_pixels=10**8, digest=False)
    assert facts[images[0]].digest is None and facts[images[0]].pixels == 36
    assert facts[images[-1]].error.startswith("not a readable image")
