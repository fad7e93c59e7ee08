"""Hugging Face datasets as a source, from local files built here (no network): `save_to_disk` folders and Parquet."""

from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lightning_cv import ImageDataModule
from lightning_cv.callbacks import PreemptionCheckpoint
from lightning_cv.data.image_io import load_image
from tests.test_resume_cases import Stop, assert_bitwise, fit

datasets = pytest.importorskip("datasets")

CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]


def _png(seed: int) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 255, (30, 34, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _split(count: int, offset: int, labels=None) -> dict:
    return {
        "picture": [{"bytes": _png(offset + i), "path": None} for i in range(count)],
        "kind": labels if labels is not None else [i % len(CLASSES) for i in range(count)],
    }


def _features(label=None):
    return datasets.Features({"picture": datasets.Image(), "kind": label or datasets.ClassLabel(names=CLASSES)})


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A DatasetDict written by `save_to_disk`: 36 training rows, 12 validation rows, ClassLabel labels."""
    root = tmp_path_factory.mktemp("hf") / "pictures"
    data = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(_split(36, 0), features=_features()),
            "validation": datasets.Dataset.from_dict(_split(12, 100), features=_features()),
        }
    )
    data.save_to_disk(str(root))
    return root


def module(path, **kwargs) -> ImageDataModule:
    settings = dict(hf_dataset=str(path), hf_image_column="picture", hf_label_column="kind", image_size=32,
                    num_workers=0, auto_augment="none")  # fmt: skip
    return ImageDataModule(**{**settings, **kwargs})


def test_a_saved_dataset_gives_its_rows_classes_and_splits(saved):
    data = module(saved, hf_val_split="validation")
    data.setup("fit")
    assert data.class_names == CLASSES
    train = data.eval_dataloader("train").dataset
    assert len(train) == 36 and len(data.datasets["val"]) == 12
    assert data.class_balance("train").counts == dict.fromkeys(CLASSES, 6)
    for row in (0, 7, 35):
        image, label = train[row]
        expected = train.transform(load_image("x.png", data=_png(row)))
        assert torch.equal(image, expected) and label == row % 6


def test_parquet_files_with_text_labels(tmp_path):
    folder = tmp_path / "parquet"
    folder.mkdir()
    names = ["dog", "cat", "emu"]
    rows = _split(9, 0, labels=[names[i % 3] for i in range(9)])
    datasets.Dataset.from_dict(rows, features=_features(datasets.Value("string"))).to_parquet(str(folder / "x.parquet"))
    data = module(folder, val_split=0.0)
    data.setup("fit")
    assert data.class_names == ["cat", "dog", "emu"]  # sorted, as class folders are
    assert data.datasets["train"].targets == [1, 0, 2] * 3


def test_without_a_validation_split_one_is_held_out(saved):
    data = module(saved, val_split=0.5)
    data.setup("fit")
    assert len(data.datasets["train"]) == len(data.datasets["val"]) == 18


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"hf_image_column": "photo"}, r"has no column 'photo'; its columns: picture, kind"),
        ({"hf_label_column": "picture"}, r"Column 'picture' of .* holds Image\(.*not one class per image"),
        ({"hf_image_column": "kind"}, "not images"),
        ({"hf_val_split": "dev"}, r"has no split 'dev'; its splits: train, validation"),
    ],
)
def test_mistakes_name_the_fix(saved, settings, message):
    with pytest.raises(ValueError, match=message):
        module(saved, **settings).setup("fit")


def test_a_validation_class_the_training_split_lacks_is_refused(tmp_path):
    root = tmp_path / "d"
    string = _features(datasets.Value("string"))
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(_split(4, 0, labels=["a", "b", "a", "b"]), features=string),
            "validation": datasets.Dataset.from_dict(_split(2, 50, labels=["a", "zebra"]), features=string),
        }
    ).save_to_disk(str(root))
    with pytest.raises(ValueError, match=r"1 label\(s\) outside the 2 classes, e.g. 'zebra'"):
        module(root, hf_val_split="validation").setup("fit")


def test_bad_rows_are_skipped_and_leaks_found(tmp_path):
    root = tmp_path / "d"
    train = _split(6, 0)
    train["picture"][2] = {"bytes": b"\x89PNG broken", "path": None}
    validation = _split(6, 0)  # the very same pictures: every one leaks
    datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict(train, features=_features()),
            "validation": datasets.Dataset.from_dict(validation, features=_features()),
        }
    ).save_to_disk(str(root))
    with pytest.raises(ValueError, match=r"5 image\(s\) appear in more than one split"):
        module(root, hf_val_split="validation", on_leakage="error").setup("fit")
    data = module(root, hf_val_split="validation", leakage_check="off")
    data.setup("fit")
    with pytest.warns(UserWarning, match="not a readable image"):
        assert data.datasets["train"][2] is None


def test_training_on_a_hugging_face_dataset_resumes_bitwise(tmp_path, saved):
    def hf():
        return module(saved, batch_size=4, val_split=0.0, mixup_alpha=0.4, auto_augment="randaugment")

    reference, steps = fit(tmp_path / "ref", dm=hf())
    fit(tmp_path / "stop", dm=hf(), callbacks=[Stop(epoch=1, batch=2), PreemptionCheckpoint(dirpath=tmp_path / "ck")])
    resumed, resumed_steps = fit(tmp_path / "resume", dm=hf(), ckpt_path=tmp_path / "ck" / "interrupted.ckpt")
    assert resumed_steps == steps
    assert_bitwise(resumed, reference)


def test_a_saved_folder_naming_files_elsewhere_is_refused(tmp_path, saved):
    import json
    import shutil

    planted = tmp_path / "planted"
    shutil.copytree(saved, planted)
    outside = tmp_path / "elsewhere.arrow"
    outside.write_bytes((planted / "train" / "data-00000-of-00001.arrow").read_bytes())
    state = json.loads((planted / "train" / "state.json").read_text())
    state["_data_files"] = [{"filename": str(outside)}]  # an absolute path: a file outside the folder
    (planted / "train" / "state.json").write_text(json.dumps(state))
    with pytest.raises(ValueError, match="only plain names inside it are read"):
        module(planted).setup("fit")
    (planted / "dataset_dict.json").write_text(json.dumps({"splits": ["train", "../../somewhere"]}))
    with pytest.raises(ValueError, match="only plain names inside it are read"):
        module(planted).setup("fit")


def test_a_parquet_folder_is_read_from_its_own_files_only(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    datasets.Dataset.from_dict(_split(12, 0), features=_features()).to_parquet(str(elsewhere / "train.parquet"))
    folder = tmp_path / "mine"
    folder.mkdir()
    datasets.Dataset.from_dict(_split(6, 50), features=_features()).to_parquet(str(folder / "train-00000.parquet"))
    # a dataset card may name data files anywhere; they are not read
    (folder / "README.md").write_text(
        "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
        f"    path: {elsewhere}/*.parquet\n---\n"
    )
    data = module(folder, val_split=0.0)
    data.setup("fit")
    assert len(data.datasets["train"]) == 6


def test_a_single_saved_dataset_has_no_validation_split(tmp_path):
    root = tmp_path / "one"
    datasets.Dataset.from_dict(_split(12, 0), features=_features()).save_to_disk(str(root))
    with pytest.raises(ValueError, match="holds one dataset without splits, so it has no split 'validation'"):
        module(root, hf_val_split="validation").setup("fit")
    data = module(root, val_split=0.5)
    data.setup("fit")
    assert len(data.datasets["train"]) == len(data.datasets["val"]) == 6


def test_a_hugging_face_dataset_packs_into_shards_with_the_same_images(tmp_path, saved):
    """`lightning-cv shard --data.hf_dataset ...`: each row's bytes become a member (its format names the
    extension), a broken row is skipped and listed, and the shards give the rows' images and labels."""
    from lightning_cv.cli import main

    root = tmp_path / "d"
    train = _split(12, 0)
    train["picture"][3] = {"bytes": b"\x89PNG broken", "path": None}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(train, features=_features())}).save_to_disk(str(root))
    out = tmp_path / "shards"
    args = ["shard", "--data.hf_dataset", str(root), "--data.hf_image_column", "picture", "--data.hf_label_column",
            "kind", "--data.val_split", "0", "--output", str(out)]  # fmt: skip
    assert main(args) == 0
    index = json.loads((out / "index.json").read_text())
    assert index["class_names"] == CLASSES and index["splits"]["train"]["images"] == 11
    assert [s["path"] for s in index["skipped"]] == [f"{root}[train][3]"]
    with tarfile.open(out / "train-000000.tar") as tar:
        assert {n.rsplit(".", 1)[1] for n in tar.getnames()} == {"png", "cls"}
    sharded = ImageDataModule(shards=str(out / "train-000000.tar"), image_size=32, num_workers=0, val_split=0.0,
                              auto_augment="none", leakage_check="off")  # fmt: skip
    rows = module(root, val_split=0.0, leakage_check="off")
    sharded.setup("fit")
    rows.setup("fit")
    a, b = sharded.eval_dataloader("train").dataset, rows.eval_dataloader("train").dataset
    split = sharded._shards["train"]
    for i in range(len(a)):
        row = int(split.sources([i])[0].rsplit("[", 1)[1].rstrip("]"))
        assert torch.equal(a[i][0], b[row][0]) and a[i][1] == b[row][1] == row % len(CLASSES)


@pytest.mark.slow
def test_ddp_ranks_share_a_hugging_face_dataset_as_one_process_would(tmp_path):
    """2 gloo processes, batch 2 each, on 13 rows: disjoint shares (the epoch's tail padded by repeating the first
    image of the order, as DistributedSampler does, so both ranks take 7 images), and each global step's four
    images are the ones a single process with batch 4 takes at that step."""
    from lightning_cv import ImageClassifier
    from lightning_cv.resume.loader import ResumableSampler
    from tests.conftest import run_spawned, tiny_trainer
    from tests.data.test_shards import _SaveShare

    root = tmp_path / "d"
    datasets.Dataset.from_dict(_split(13, 0), features=_features()).save_to_disk(str(root))
    data = module(root, batch_size=2, val_split=0.0, leakage_check="off")
    model = ImageClassifier(backbone="test_resnet", num_classes=6, pretrained=False)
    trainer = tiny_trainer(tmp_path, max_steps=1, strategy="ddp_spawn", devices=2, callbacks=[_SaveShare(tmp_path)])
    run_spawned(lambda: trainer.fit(model, data), written=[tmp_path / f"share{r}.pt" for r in (0, 1)])
    shares = [torch.load(tmp_path / f"share{r}.pt", weights_only=True) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 7
    assert len(set(shares[0]) | set(shares[1])) == 13  # every row, and one repeated to even out the tail
    single = [f"{root}[train][{i}]" for i in ResumableSampler(13, seed=data.hparams.seed).global_order(0)]
    for step in range(3):  # the full steps (the fourth holds the padding)
        two = {*shares[0][2 * step : 2 * step + 2], *shares[1][2 * step : 2 * step + 2]}
        assert two == set(single[4 * step : 4 * step + 4])
