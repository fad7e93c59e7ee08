"""WebDataset shards: `lightning-cv shard` writes them, `ImageDataModule(shards=...)` reads them (locally and over a
real HTTP server on 127.0.0.1), with the folder source's images, labels, checks and exact resume."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import tarfile
import threading
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback
from PIL import Image

from lightning_cv import ImageDataModule
from lightning_cv.callbacks import PreemptionCheckpoint
from lightning_cv.cli import main
from lightning_cv.data import shard_reader
from lightning_cv.data.datasets import ImageFileDataset
from lightning_cv.data.shard_reader import expand_braces, open_shards
from lightning_cv.data.shard_writer import parse_size, write_shards
from tests.range_server import serve
from tests.test_resume_cases import Stop, assert_bitwise, fit

CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]  # six, as the resume helper's model has


def photos(root: Path, per_class: int = 6, val: int = 2) -> Path:
    """Class folders of small random pictures (train/ and val/), each file different."""
    rng = np.random.default_rng(0)
    for split, count in (("train", per_class), ("val", val)):
        for c, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = rng.integers(0, 255, (36, 40, 3), dtype=np.uint8) // 2 + np.uint8(20 * c)
                Image.fromarray(pixels).save(folder / f"{i}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def packed(tmp_path_factory):
    root = photos(tmp_path_factory.mktemp("photos"))
    (root / "train" / "ring" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    out = tmp_path_factory.mktemp("shards") / "shards"
    assert main(["shard", "--data.data_dir", str(root), "--output", str(out), "--shard_size", "40KB"]) == 0
    return root, out


def _pattern(out: Path, split: str) -> str:
    count = len(list(out.glob(f"{split}-*.tar")))
    return f"{out}/{split}-{{000000..{count - 1:06d}}}.tar"


def test_shards_are_plain_webdataset_with_an_index(packed):
    root, out = packed
    index = json.loads((out / "index.json").read_text())
    assert index["class_names"] == CLASSES
    train = index["splits"]["train"]
    assert train["images"] == 36 and train["class_counts"] == [6] * 6  # the broken file is not packed ...
    assert [Path(s["path"]).name for s in index["skipped"]] == ["broken.jpg"]  # ... but listed
    assert len(train["shards"]) > 1 and all(s["bytes"] <= 40_000 + 12_000 for s in train["shards"])
    for shard in train["shards"]:
        path = out / shard["name"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == shard["sha256"]
        with tarfile.open(path) as tar:
            names = tar.getnames()
            # WebDataset: <key>.<ext> then <key>.cls, the class index as text
            assert all(re.fullmatch(r"\d{9}\.(png|jpg)", a) and b == a.split(".")[0] + ".cls"
                       for a, b in zip(names[::2], names[1::2], strict=True))  # fmt: skip
            for image_name, cls_name in zip(names[::2], names[1::2], strict=True):
                label = int(tar.extractfile(cls_name).read())
                data = tar.extractfile(image_name).read()
                source = next(p for p in (root / "train" / CLASSES[label]).iterdir() if p.read_bytes() == data)
                assert source.parent.name == CLASSES[label]
    assert not list(out.glob("*.partial"))


def test_the_webdataset_library_reads_the_shards_as_ours_does(packed):
    """The shards are plain WebDataset: `webdataset` itself reads every image and label, equal to our reader's."""
    wds = pytest.importorskip("webdataset")
    _, out = packed
    urls = sorted(str(p) for p in out.glob("train-*.tar"))
    theirs = {key: (image, int(label)) for key, image, label in
              wds.WebDataset(urls, shardshuffle=False).to_tuple("__key__", "jpg;png", "cls")}  # fmt: skip
    ours = shard_reader.ShardDataset(open_shards(urls, "train"))
    assert len(theirs) == len(ours) == 36
    for i in range(len(ours)):
        image, label = theirs[f"{int(ours.split.key[i]):09d}"]
        assert image == ours.read_bytes(i) and label == ours.targets[i]


def test_reading_shards_gives_the_folder_sources_images_and_labels(packed):
    _, out = packed
    data = ImageDataModule(shards=_pattern(out, "train"), val_shards=_pattern(out, "val"), image_size=32,
                           num_workers=0, auto_augment="none")  # fmt: skip
    data.setup("fit")
    assert data.class_names == CLASSES and data.num_classes == 6
    train, val = data.datasets["train"], data.datasets["val"]
    assert len(train) == 36 and len(val) == 12
    assert data.class_balance("train").counts == dict.fromkeys(CLASSES, 6)
    evaluation = data.eval_dataloader("train").dataset  # the evaluation transform: deterministic, comparable
    for i in range(len(evaluation)):
        image, label = evaluation[i]
        source = evaluation.split.sources([i])[0]
        assert evaluation.paths[i].endswith(".tar#" + evaluation.paths[i].rsplit("#", 1)[1])
        assert CLASSES[label] == Path(source).parent.name
        expected, _ = ImageFileDataset([source], [label], evaluation.transform)[0]
        assert torch.equal(image, expected)


def test_without_val_shards_a_validation_part_is_held_out(packed):
    _, out = packed
    data = ImageDataModule(shards=_pattern(out, "train"), image_size=32, num_workers=0, val_split=0.5)
    data.setup("fit")
    train, val = data.datasets["train"], data.datasets["val"]
    assert len(train) == len(val) == 18 and not set(train.paths[:]) & set(val.paths[:])


def test_leaks_between_splits_are_found_from_the_index_hashes(tmp_path):
    root = photos(tmp_path / "photos", per_class=2, val=1)
    (root / "val" / "star" / "copy.png").write_bytes((root / "train" / "ring" / "1.png").read_bytes())
    write_shards({"train": _records(root, "train"), "val": _records(root, "val")}, CLASSES, tmp_path / "s",
                 shard_size="1MB", log=lambda _: None)  # fmt: skip
    data = ImageDataModule(shards=f"{tmp_path}/s/train-000000.tar", val_shards=f"{tmp_path}/s/val-000000.tar",
                           image_size=32, on_leakage="error")  # fmt: skip
    with pytest.raises(ValueError, match=r"1 image\(s\) appear in more than one split") as err:
        data.setup("fit")
    assert "ring/1.png" in str(err.value) and "copy.png" in str(err.value)


def _records(root: Path, split: str) -> list[tuple[str, int]]:
    return [(str(p), CLASSES.index(p.parent.name)) for p in sorted((root / split).rglob("*.*"))]


def test_an_interrupted_shard_run_keeps_what_it_finished(tmp_path):
    root = photos(tmp_path / "photos")
    records = {"train": _records(root, "train")}
    first = write_shards(records, CLASSES, tmp_path / "a", shard_size="30KB", log=lambda _: None)
    digests = {n: hashlib.sha256((tmp_path / "a" / n).read_bytes()).hexdigest() for n in first.shards["train"]}
    # as a kill would leave it: no index yet, one shard missing, one half-written under its temporary name
    (tmp_path / "a" / "index.json").unlink()
    (tmp_path / "a" / first.shards["train"][-1]).unlink()
    (tmp_path / "a" / f"{first.shards['train'][0]}.partial").write_bytes(b"cut")
    again = write_shards(records, CLASSES, tmp_path / "a", shard_size="30KB", log=lambda _: None)
    assert again.reused == len(first.shards["train"]) - 1
    assert {n: hashlib.sha256((tmp_path / "a" / n).read_bytes()).hexdigest() for n in again.shards["train"]} == digests
    with pytest.raises(ValueError, match="already holds shards"):
        write_shards(records, CLASSES, tmp_path / "a", log=lambda _: None)


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        ("{out}/train-{{000007..000009}}.tar", "matches no file"),
        ("{out}/val-000000.tar", "are not train shards"),
        ("{out}/../elsewhere/train-000000.tar", "matches no file"),
    ],
)
def test_shard_patterns_that_do_not_fit_are_one_line_errors(packed, pattern, message):
    _, out = packed
    with pytest.raises(ValueError, match=message):
        open_shards(pattern.format(out=out), "train")


def test_a_shard_without_its_index_or_with_a_foreign_one_is_refused(tmp_path, packed):
    _, out = packed
    lone = tmp_path / "train-000000.tar"
    lone.write_bytes((out / "train-000000.tar").read_bytes())
    with pytest.raises(ValueError, match=r"No index\.json beside the train shards"):
        open_shards(str(lone), "train")
    (tmp_path / "index.json").write_text(json.dumps({"format": "something else"}))
    with pytest.raises(ValueError, match="is not a shard index"):
        open_shards(str(lone), "train")


def test_a_label_outside_the_classes_is_refused(tmp_path, packed):
    _, out = packed
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in out.iterdir():
        if f.is_file():
            (copy / f.name).write_bytes(f.read_bytes())
    members = dict(np.load(copy / "train.members.npz"))
    members["label"][3] = 9
    np.savez(copy / "train.members.npz", **members)
    with pytest.raises(ValueError, match="label 9, outside the index's 6 classes"):
        open_shards(str(copy / "train-000000.tar"), "train")


def test_a_cut_shard_skips_the_missing_images_and_says_so(tmp_path, packed):
    _, out = packed
    for f in out.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    shard = tmp_path / "train-000000.tar"
    shard.write_bytes(shard.read_bytes()[:1500])  # an interrupted copy: the first image at most
    data = ImageDataModule(shards=str(shard), image_size=32, num_workers=0, val_split=0.0)
    data.setup("fit")
    dataset = data.datasets["train"]
    with pytest.warns(UserWarning, match="a cut shard"):
        items = [dataset[i] for i in range(len(dataset))]
    assert items.count(None) >= 1


def test_shards_and_a_folder_together_are_refused(packed):
    root, out = packed
    with pytest.raises(ValueError, match="Give `shards` or `data_dir`, not both"):
        ImageDataModule(shards=_pattern(out, "train"), data_dir=str(root)).setup("fit")


def test_brace_patterns_and_sizes():
    assert expand_braces("s/train-{000..002}.tar") == ["s/train-000.tar", "s/train-001.tar", "s/train-002.tar"]
    assert expand_braces("{a,b}-{1..2}") == ["a-1", "a-2", "b-1", "b-2"]
    assert parse_size("1GB") == 10**9 and parse_size("64MiB") == 64 * 2**20 and parse_size(5000) == 5000
    for bad in ("lots", "1XB", "10"):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


@pytest.fixture
def server(packed):
    with serve(packed[1]) as (url, _):
        yield url


def test_shards_stream_over_http_with_the_same_images(packed, server):
    _, out = packed
    count = len(list(out.glob("train-*.tar")))
    remote = ImageDataModule(shards=f"{server}/train-{{000000..{count - 1:06d}}}.tar", image_size=32, num_workers=0,
                             val_split=0.0, auto_augment="none")  # fmt: skip
    local = ImageDataModule(shards=_pattern(out, "train"), image_size=32, num_workers=0, val_split=0.0,
                            auto_augment="none")  # fmt: skip
    remote.setup("fit")
    local.setup("fit")
    a, b = remote.eval_dataloader("train").dataset, local.eval_dataloader("train").dataset
    assert len(a) == len(b) == 36
    for i in (0, 17, 35):
        assert torch.equal(a[i][0], b[i][0]) and a[i][1] == b[i][1]


def test_a_batch_from_urls_is_fetched_concurrently_with_the_same_images(packed):
    """Through the DataLoader's batched fetch, the images of a batch are requested together (a server with 50 ms
    latency sees them in flight at once), and the batch equals the local one."""
    _, out = packed
    count = len(list(out.glob("train-*.tar")))
    with serve(out, latency=0.05) as (url, stats):
        remote = ImageDataModule(shards=f"{url}/train-{{000000..{count - 1:06d}}}.tar", image_size=32,
                                 num_workers=0, val_split=0.0, auto_augment="none", batch_size=12)  # fmt: skip
        remote.setup("fit")
        before = stats.requests
        images, labels = next(iter(remote.eval_dataloader("train", batch_size=12)))
        print(f"requests for a batch of 12: {stats.requests - before}, most in flight at once: {stats.most_in_flight}")
        assert stats.requests - before == 12 and stats.most_in_flight >= 6
    local = ImageDataModule(shards=_pattern(out, "train"), image_size=32, num_workers=0, val_split=0.0,
                            auto_augment="none")  # fmt: skip
    local.setup("fit")
    want = [local.eval_dataloader("train").dataset[i] for i in range(12)]
    assert torch.equal(images, torch.stack([w[0] for w in want]))
    assert labels.tolist() == [w[1] for w in want]


def test_training_batches_from_urls_equal_the_local_ones(packed):
    """The training loader's seeded path (SeededDataset) prefetches too: same augmented batches as from files."""
    _, out = packed
    count = len(list(out.glob("train-*.tar")))
    with serve(out) as (url, stats):
        batches = []
        for pattern in (f"{url}/train-{{000000..{count - 1:06d}}}.tar", _pattern(out, "train")):
            data = ImageDataModule(shards=pattern, image_size=32, num_workers=0, val_split=0.0, batch_size=8)
            data.setup("fit")
            batches.append(next(iter(data.train_dataloader())))
        assert stats.most_in_flight >= 2
    assert torch.equal(batches[0][0], batches[1][0]) and torch.equal(batches[0][1], batches[1][1])


def test_shards_on_an_fsspec_url_read_the_same_images(packed):
    """Object stores (s3://, gs://) go through fsspec; its in-memory file system stands in for them here."""
    fsspec = pytest.importorskip("fsspec")
    _, out = packed
    memory = fsspec.filesystem("memory")
    for path in out.iterdir():
        if path.is_file():
            memory.pipe_file(f"/bucket/shards/{path.name}", path.read_bytes())
    count = len(list(out.glob("train-*.tar")))
    try:
        remote = open_shards(f"memory://bucket/shards/train-{{000000..{count - 1:06d}}}.tar", "train")
        local = open_shards(_pattern(out, "train"), "train")
        assert np.array_equal(remote.label, local.label) and len(remote) == 36
        a, b = shard_reader.ShardDataset(remote), shard_reader.ShardDataset(local)
        assert a.__getitems__([0, 20, 35]) is not None
        for i in (0, 20, 35):
            assert a.read_bytes(i) == b.read_bytes(i)
        with pytest.raises(ValueError, match=r"No index\.json beside"):
            open_shards("memory://bucket/elsewhere/train-000000.tar", "train")
    finally:
        memory.rm("/bucket", recursive=True)


def test_an_unknown_url_scheme_is_a_one_line_error():
    pytest.importorskip("fsspec")
    with pytest.raises(ValueError, match=r"Cannot read 'nosuchfs://b/index\.json'.*fsspec URL"):
        open_shards("nosuchfs://b/train-000000.tar", "train")


def test_an_unreachable_url_is_a_clear_error_after_bounded_retries(monkeypatch):
    monkeypatch.setattr(shard_reader.time, "sleep", lambda _: None)  # the retries, without their waits
    import socket

    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match=r"after 4 attempts.*Is the server up"):
        open_shards(f"http://127.0.0.1:{port}/train-000000.tar", "train")


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2])
def test_training_on_shards_resumes_bitwise_after_a_stop(tmp_path, packed, workers):
    """The folder resume recipe on shards: stop mid-epoch (SIGTERM), resume from the checkpoint, equal weights."""
    _, out = packed

    def shards():
        return ImageDataModule(shards=_pattern(out, "train"), image_size=32, batch_size=4, num_workers=workers,
                               val_split=0.0, mixup_alpha=0.4, cutmix_alpha=1.0)  # fmt: skip

    reference, steps = fit(tmp_path / "ref", dm=shards())
    stop = Stop(epoch=1, batch=3)
    fit(tmp_path / "stop", dm=shards(), callbacks=[stop, PreemptionCheckpoint(dirpath=tmp_path / "ck")])
    resumed, resumed_steps = fit(tmp_path / "resume", dm=shards(), ckpt_path=tmp_path / "ck" / "interrupted.ckpt")
    assert resumed_steps == steps
    assert_bitwise(resumed, reference)
    assert os.path.isfile(tmp_path / "ck" / "interrupted.ckpt")


def test_setup_reads_the_index_and_no_shard(packed, monkeypatch):
    _, out = packed

    def no_reading(*args, **kwargs):
        raise AssertionError("setup read a shard")

    monkeypatch.setattr(shard_reader, "read_range", no_reading)
    data = ImageDataModule(shards=_pattern(out, "train"), val_shards=_pattern(out, "val"), image_size=32)
    data.setup("fit")  # classes, splits, balance report and leakage check, all from index.json and the tables
    assert len(data.datasets["train"]) == 36 and data.label_counts("train")[1] == 36


def test_an_index_cannot_size_a_huge_read(tmp_path, packed):
    _, out = packed
    for f in out.iterdir():
        if f.is_file():
            (tmp_path / f.name).write_bytes(f.read_bytes())
    members = dict(np.load(tmp_path / "train.members.npz"))
    members["size"][0], members["offset"][1] = 2**40, -5  # planted: a terabyte read, a negative offset
    np.savez(tmp_path / "train.members.npz", **members)
    count = len(list(tmp_path.glob("train-*.tar")))
    data = ImageDataModule(shards=f"{tmp_path}/train-{{000000..{count + 1:06d}}}.tar", image_size=32, num_workers=0,
                           val_split=0.0, leakage_check="off")  # fmt: skip
    with pytest.raises(ValueError, match=r"2 of the train shards do not exist"):
        data.setup("fit")  # the pattern names more shards than there are: said before anything is read
    data = ImageDataModule(shards=f"{tmp_path}/train-{{000000..{count - 1:06d}}}.tar", image_size=32, num_workers=0,
                           val_split=0.0, leakage_check="off")  # fmt: skip
    data.setup("fit")
    dataset = data.datasets["train"]
    with pytest.warns(UserWarning, match="the index gives"):
        assert dataset[0] is None and dataset[1] is None
    assert dataset[2] is not None


def test_shard_a_csv_list(tmp_path):
    root = photos(tmp_path / "photos", per_class=2, val=1)
    rows = ["path,label"] + [f"{p},{p.parent.name}" for p in sorted((root / "train").rglob("*.*"))]
    (tmp_path / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "s"
    args = ["shard", "--data.train_file", str(tmp_path / "train.csv"), "--data.val_split", "0", "--output", str(out)]
    assert main(args) == 0
    split = open_shards(str(out / "train-000000.tar"), "train")
    assert split.class_names == CLASSES and split.class_counts() == [2] * 6


@pytest.fixture(scope="module")
def multilabel_packed(tmp_path_factory):
    """A multi-label CSV list (0 to 3 labels an image) and its shards."""
    tmp = tmp_path_factory.mktemp("multilabel")
    root = photos(tmp / "photos", per_class=3, val=0)
    files = sorted((root / "train").rglob("*.*"))
    sets = [[CLASSES[(i + k) % 6] for k in range(i % 3)] for i in range(len(files))]  # every class, some none
    rows = ["path,labels"] + [f"{p},{';'.join(labels)}" for p, labels in zip(files, sets, strict=True)]
    (tmp / "train.csv").write_text("\n".join(rows) + "\n")
    out = tmp / "shards"
    args = ["shard", "--data.train_file", str(tmp / "train.csv"), "--data.val_split", "0", "--output", str(out),
            "--shard_size", "20KB"]  # fmt: skip
    assert main(args) == 0
    return tmp / "train.csv", out


def test_multilabel_lists_pack_into_shards_with_their_label_sets(multilabel_packed):
    csv, out = multilabel_packed
    index = json.loads((out / "index.json").read_text())
    assert index["task"] == "multilabel" and len(index["splits"]["train"]["shards"]) > 1
    with tarfile.open(out / "train-000000.tar") as tar:
        members = tar.getnames()
        labels = json.loads(tar.extractfile(members[1]).read())["labels"]  # webdataset decodes .json as this
    assert members[1].endswith(".json") and all(0 <= i < 6 for i in labels)
    kwargs = dict(image_size=32, num_workers=0, val_split=0.0, auto_augment="none", leakage_check="off")
    sharded = ImageDataModule(shards=_pattern(out, "train"), **kwargs)
    listed = ImageDataModule(train_file=str(csv), **kwargs)
    sharded.setup("fit")
    listed.setup("fit")
    assert sharded.task == listed.task == "multilabel" and sharded.class_names == listed.class_names
    assert torch.equal(sharded.label_counts("train")[0], listed.label_counts("train")[0])
    a, b = sharded.eval_dataloader("train").dataset, listed.eval_dataloader("train").dataset  # no augmentation
    by_path = {str(p): i for i, p in enumerate(b.paths)}
    split = sharded._shards["train"]
    for i in range(len(a)):
        j = by_path[split.sources([i])[0]]
        assert torch.equal(a[i][0], b[j][0]) and torch.equal(a[i][1], b[j][1])  # image and multi-hot target


def test_a_multilabel_model_trains_on_multilabel_shards(multilabel_packed, tmp_path):
    from lightning.pytorch import Trainer

    from lightning_cv import ImageClassifier

    _, out = multilabel_packed
    data = ImageDataModule(shards=_pattern(out, "train"), image_size=32, num_workers=0, val_split=0.25,
                           batch_size=8)  # fmt: skip
    model = ImageClassifier(backbone="test_resnet", num_classes=6, task="multilabel", pretrained=False)
    trainer = Trainer(max_epochs=1, limit_train_batches=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path)  # fmt: skip
    trainer.fit(model, data)
    assert trainer.global_step == 2 and "val_map" in trainer.callback_metrics


@pytest.mark.parametrize(
    "plant, message",
    [
        (lambda m: m.update(label_index=np.full_like(m["label_index"], 6)), "outside the index's 6 classes"),
        (lambda m: m.update(label_start=m["label_start"][::-1].copy()), "offsets rising from 0"),
        (lambda m: m.update(label_index=np.zeros_like(m["label_index"])), "a label twice"),
        (lambda m: m.update(label=np.zeros(len(m["key"]), dtype=np.int64)) or m.pop("label_start"), "label_start"),
    ],
    ids=["outside", "falling", "repeated", "multiclass-table"],
)
def test_a_planted_multilabel_member_table_is_refused(tmp_path, multilabel_packed, plant, message):
    _, out = multilabel_packed
    copy = _copy(out, tmp_path / "copy")
    members = dict(np.load(copy / "train.members.npz"))
    plant(members)
    np.savez(copy / "train.members.npz", **members)
    with pytest.raises(ValueError, match=message):
        open_shards(_pattern(copy, "train"), "train")


def _copy(out: Path, to: Path) -> Path:
    to.mkdir(exist_ok=True)
    for f in out.iterdir():
        if f.is_file():
            (to / f.name).write_bytes(f.read_bytes())
    return to


@pytest.mark.parametrize(
    "plant",
    [
        lambda m: m.update(digest=m["digest"][:, 0].astype(np.int64) * 2**33),  # bytes(2**33) would allocate 8 GB
        lambda m: m.update(label=m["label"][:-1]),  # arrays of different lengths
        lambda m: m.pop("key"),
        lambda m: m.update(offset=np.zeros((10**9, 0))),  # a huge declared shape, refused before it is allocated
    ],
    ids=["digest-ints", "short-labels", "missing-key", "huge-shape"],
)
def test_a_planted_member_table_is_refused(tmp_path, packed, plant):
    _, out = packed
    copy = _copy(out, tmp_path / "copy")
    members = dict(np.load(copy / "train.members.npz"))
    plant(members)
    np.savez(copy / "train.members.npz", **members)
    with pytest.raises(ValueError, match="member table does not fit their index"):
        open_shards(str(copy / "train-000000.tar"), "train")


def test_a_pattern_naming_too_many_shards_is_refused():
    with pytest.raises(ValueError, match="names more than 1,000,000 shards"):
        expand_braces("s/train-{0..999999999999}.tar")
    with pytest.raises(ValueError, match="names more than"):
        expand_braces("".join("{a,b}" for _ in range(40)))


def test_a_server_without_byte_ranges_is_a_clear_error(packed):
    _, out = packed
    quiet = type("Quiet", (http.server.SimpleHTTPRequestHandler,), {"log_message": lambda *a: None})
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(quiet, directory=str(out)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/train-000000.tar"
        data = ImageDataModule(shards=url, image_size=32, num_workers=0, val_split=0.0, leakage_check="off")
        data.setup("fit")  # the index and member table are whole files: fine
        with pytest.raises(OSError, match="answered a byte-range request with the whole file"):
            data.datasets["train"][0]
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.slow
def test_a_model_trained_on_shards_is_calibrated_and_exported_from_them(packed, tmp_path, monkeypatch, capsys):
    from lightning_cv.cli import LightningCVCLI
    from tests.conftest import TINY_CLI

    _, out = packed
    monkeypatch.chdir(tmp_path)
    cli = LightningCVCLI(args=["fit", *[a for a in TINY_CLI if "dataset_kwargs" not in a], "--trainer.max_epochs=1",
                               f"--data.shards={_pattern(out, 'train')}", f"--data.val_shards={_pattern(out, 'val')}"])
    best = cli.trainer.checkpoint_callback.best_model_path
    assert main(["calibrate", "--ckpt_path", best, "--output", "c.ckpt"]) == 0
    assert "fitted on 12 validation images" in capsys.readouterr().out
    # a shared checkpoint naming shards on a server: the deploy commands never fetch them on their own
    ckpt = torch.load(best, weights_only=True)
    ckpt["datamodule_hyper_parameters"]["shards"] = "http://127.0.0.1:9/train-000000.tar"
    ckpt["datamodule_hyper_parameters"]["val_shards"] = None
    torch.save(ckpt, tmp_path / "remote.ckpt")
    assert main(["export", "--ckpt_path", "remote.ckpt", "--output", "m.onnx", "--eval_images", "4"]) == 0
    printed = capsys.readouterr().out
    assert "the checkpoint's shards name remote data, not fetched" in printed and "no accuracy check" in printed


class _SaveShare(Callback):
    """Each rank writes the images (shard name and key) its training loader yields in epoch 0."""

    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_train_start(self, trainer, pl_module):
        loader = trainer.train_dataloader
        sampler = loader.sampler
        dataset = loader.dataset
        names = [dataset.paths[index] for _, index in sampler]
        torch.save(names, f"{self.out_dir}/share{trainer.global_rank}.pt")


@pytest.mark.slow
def test_ddp_ranks_take_disjoint_shares_of_the_shards(packed, tmp_path):
    from lightning_cv import ImageClassifier
    from tests.conftest import run_spawned, tiny_trainer

    _, out = packed
    data = ImageDataModule(shards=_pattern(out, "train"), image_size=32, batch_size=4, num_workers=0, val_split=0.0)
    model = ImageClassifier(backbone="test_resnet", num_classes=6, pretrained=False)
    trainer = tiny_trainer(tmp_path, max_steps=1, strategy="ddp_spawn", devices=2, callbacks=[_SaveShare(tmp_path)])
    run_spawned(lambda: trainer.fit(model, data), written=[tmp_path / f"share{r}.pt" for r in (0, 1)])
    shares = [torch.load(tmp_path / f"share{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 18  # 36 images, 2 ranks: no padding needed
    assert not set(shares[0]) & set(shares[1])
    assert len(set(shares[0]) | set(shares[1])) == 36 and all(".tar#" in name for name in shares[0])


@pytest.mark.slow
def test_resume_under_ddp_on_shards_is_bitwise_exact(packed, tmp_path):
    """Two gloo processes on shards, killed mid-epoch (resumed from a step checkpoint): the uninterrupted run's
    weights, optimizer and schedule, bit for bit, as for folders (tests/test_fault_tolerance.py)."""
    from tests.test_fault_tolerance import assert_same_training, ddp_args, final_state, run_cli

    _, out = packed

    def args(root):
        recipe = [a for a in ddp_args(root / "ckpts", 2, root / "logs") if not a.startswith("--data.dataset")]
        return [*recipe, f"--data.shards={_pattern(out, 'train')}", f"--data.val_shards={_pattern(out, 'val')}"]

    reference = tmp_path / "reference"
    run_cli(args(reference), cwd=tmp_path, timeout=600, processes=2)
    steps = final_state(reference / "ckpts")["global_step"]
    assert steps == 6  # 36 images, a global batch of 16 (8 a rank): 3 steps an epoch, 2 epochs
    resumed = tmp_path / "resumed"
    source = reference / "ckpts" / "step-00000004.ckpt"  # inside the second epoch
    run_cli([*args(resumed), f"--ckpt_path={source}"], cwd=tmp_path, timeout=600, processes=2)
    assert_same_training(final_state(resumed / "ckpts"), final_state(reference / "ckpts"), steps=steps)
