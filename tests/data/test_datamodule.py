import struct

import numpy as np
import pytest
import torch
from lightning.pytorch import Callback, Trainer
from PIL import Image

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.data import SHAPE_CLASSES
from tests.conftest import tiny_trainer
from tests.data.helpers import make_class_tree, write_image
from tests.data.test_image_io import truncated_jpeg

SMALL = {"num_train": 36, "num_val": 12, "num_test": 12, "image_size": 32}


def shapes(**kwargs):
    return ImageDataModule(dataset="shapes", dataset_kwargs=SMALL, image_size=32, batch_size=8, **kwargs)


def labels_of(loader):
    return torch.cat([y for _, y in loader]).tolist()


def test_shapes_is_the_default_and_knows_its_classes():
    dm = ImageDataModule()
    assert dm.class_names == list(SHAPE_CLASSES) and dm.num_classes == 6


def test_folder_splits_give_labels_and_class_names(tmp_path):
    for split in ("train", "val", "test"):
        make_class_tree(tmp_path / split, per_class=3, seed=hash(split) % 100)
    dm = ImageDataModule(data_dir=str(tmp_path), image_size=16, batch_size=4, auto_augment="none")
    dm.setup("fit")
    assert dm.class_names == ["cat", "dog", "owl"]
    paths = dm.datasets["val"].paths
    labels = dm.datasets["val"].targets
    assert [dm.class_names[y] for y in labels] == [p.split("/")[-2] for p in paths]
    assert sorted(labels_of(dm.val_dataloader())) == [0, 0, 0, 1, 1, 1, 2, 2, 2]


def test_single_folder_is_split_stratified_and_seeded(tmp_path):
    make_class_tree(tmp_path, per_class=10)
    dm = ImageDataModule(data_dir=str(tmp_path), val_split=0.2, test_split=0.1, seed=3)
    dm.setup("fit")
    again = ImageDataModule(data_dir=str(tmp_path), val_split=0.2, test_split=0.1, seed=3)
    again.setup("fit")
    assert dm.datasets["val"].paths == again.datasets["val"].paths
    assert sorted(dm.datasets["val"].targets) == [0, 0, 1, 1, 2, 2]
    assert sorted(dm.datasets["test"].targets) == [0, 1, 2]
    splits = [set(dm.datasets[s].paths) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1]) and not (splits[0] & splits[2]) and sum(map(len, splits)) == 30


def test_csv_lists(tmp_path):
    rows = []
    for i in range(6):
        write_image(tmp_path / f"{i}.png", i)
        rows.append(f"{i}.png,{'big' if i % 2 else 'small'}")
    (tmp_path / "train.csv").write_text("path,label\n" + "\n".join(rows[:4]) + "\n")
    (tmp_path / "val.csv").write_text("path,label\n" + "\n".join(rows[4:]) + "\n")
    dm = ImageDataModule(train_file=str(tmp_path / "train.csv"), val_file=str(tmp_path / "val.csv"))
    dm.setup("fit")
    assert dm.class_names == ["big", "small"]
    assert dm.datasets["val"].targets == [1, 0]


def test_val_class_unknown_to_train_is_an_error(tmp_path):
    make_class_tree(tmp_path / "train", classes=("cat", "dog"), per_class=1)
    make_class_tree(tmp_path / "val", classes=("cat", "emu"), per_class=1)
    with pytest.raises(ValueError, match=r"Class folders differ .* missing in val: \['dog'\], not in train: \['emu'\]"):
        ImageDataModule(data_dir=str(tmp_path)).setup("fit")


def test_bad_files_are_skipped_and_reported_once(tmp_path, monkeypatch):
    make_class_tree(tmp_path, per_class=4)
    (tmp_path / "cat" / "empty.jpg").write_bytes(b"")
    (tmp_path / "dog" / "text.png").write_text("I am not a PNG")
    truncated_jpeg(tmp_path / "owl" / "cut.jpg")
    dm = ImageDataModule(data_dir=str(tmp_path), val_split=0.0, image_check="decode", leakage_check="off")
    with pytest.warns(
        UserWarning,
        match=r"(?s)Skipping 3 file\(s\).*empty.jpg: empty file.*text.png: not a readable"
        r".*cut.jpg: cannot be decoded",
    ):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 12
    # the file index remembers what the full decode found, so a header check in a later run knows it too
    remembered = ImageDataModule(data_dir=str(tmp_path), val_split=0.0, on_bad_file="error", leakage_check="off")
    with pytest.raises(ValueError, match=r"(?s)3 file\(s\) cannot be used as images.*cut.jpg"):
        remembered.setup("fit")
    monkeypatch.setenv("LIGHTNING_CV_CACHE", str(tmp_path.with_name(tmp_path.name + "-index")))  # header checks only
    strict = ImageDataModule(data_dir=str(tmp_path), val_split=0.0, on_bad_file="error", leakage_check="off")
    with pytest.raises(ValueError, match=r"(?s)2 file\(s\) cannot be used as images.*on_bad_file='skip'"):
        strict.setup("fit")


def test_file_broken_after_setup_is_dropped_without_label_drift(tmp_path):
    make_class_tree(tmp_path, classes=("a", "b"), per_class=2)
    dm = ImageDataModule(
        data_dir=str(tmp_path), val_split=0.0, image_size=16, auto_augment="none", batch_size=4, leakage_check="off"
    )
    dm.setup("fit")
    broken = dm.datasets["train"].paths[1]
    open(broken, "wb").close()
    with pytest.warns(UserWarning, match="Skipping an image that cannot be used"):
        images, labels = next(iter(dm.train_dataloader()))
    assert images.shape[0] == 3
    assert sorted(labels.tolist()) == [0, 1, 1]  # the bad "a" image is gone, no other label took its place


def test_planted_leak_is_found(tmp_path):
    make_class_tree(tmp_path / "train", per_class=3)
    make_class_tree(tmp_path / "val", per_class=2, seed=5)
    leaked = tmp_path / "val" / "dog" / "copy.png"
    leaked.write_bytes((tmp_path / "train" / "dog" / "dog_1.png").read_bytes())
    with pytest.warns(UserWarning, match=r"(?s)1 image\(s\) appear in more than one split.*dog_1.png.*copy.png"):
        ImageDataModule(data_dir=str(tmp_path)).setup("fit")
    with pytest.raises(ValueError, match="appear in more than one split"):
        ImageDataModule(data_dir=str(tmp_path), on_leakage="error").setup("fit")


def test_near_duplicate_found_by_perceptual_hash(tmp_path):
    make_class_tree(tmp_path / "train", per_class=2)
    make_class_tree(tmp_path / "val", per_class=1, seed=9)
    original = Image.open(tmp_path / "train" / "owl" / "owl_0.png")
    original.resize((48, 48)).save(tmp_path / "val" / "owl" / "bigger.png")
    with pytest.warns(UserWarning, match=r"perceptual: train:.*owl_0.png == val:.*bigger.png"):
        ImageDataModule(data_dir=str(tmp_path), leakage_check="perceptual").setup("fit")


def test_class_balance_and_weights(tmp_path):
    for name, count in (("rare", 2), ("common", 8)):
        for i in range(count):
            write_image(tmp_path / name / f"{i}.png", seed=len(name) * 100 + i)
    dm = ImageDataModule(
        data_dir=str(tmp_path), val_split=0.0, balanced_sampler=True, batch_size=10, image_size=16, auto_augment="none"
    )
    dm.setup("fit")
    balance = dm.class_balance()
    assert balance.counts == {"common": 8, "rare": 2} and balance.imbalance_ratio == 4.0
    torch.testing.assert_close(dm.class_weights(), torch.tensor([0.4, 1.6]))
    loader = dm.train_dataloader()
    drawn = []
    for epoch in range(20):  # each epoch draws anew (the draw is a function of the seed and the epoch)
        loader.sampler.set_epoch(epoch)
        drawn += labels_of(loader)
    assert 0.4 < sum(drawn) / len(drawn) < 0.6  # "rare" (label 1) drawn about half the time, not 20%


def test_settings_flow_from_the_model_and_can_be_overridden(tmp_path):
    model = ImageClassifier(backbone="test_efficientnet", num_classes=6, pretrained=False)
    dm = shapes()
    dm.trainer = tiny_trainer(tmp_path)
    dm.trainer.strategy.connect(model)
    dm.setup("fit")
    assert dm.data_config.image_size == (32, 32)  # overridden
    assert dm.data_config.mean == pytest.approx((0.485, 0.456, 0.406))  # from the model's pretrained config
    assert dm.data_config.interpolation == "bicubic" and dm.data_config.crop_pct == 0.95
    assert model.hparams["class_names"] == list(SHAPE_CLASSES)


def test_model_with_other_class_count_is_refused(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    with pytest.raises(ValueError, match=r"The model has 3 classes but the data has 6 .*num_classes=datamodule"):
        tiny_trainer(tmp_path).fit(model, shapes())


class SeeBatches(Callback):
    def __init__(self):
        self.targets = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.targets.setdefault("train", batch[1])

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.targets.setdefault("val", batch[1])

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        self.targets.setdefault("test", batch[1])


def test_mixing_only_on_training_batches(tmp_path):
    dm = shapes(mixup_alpha=1.0, cutmix_alpha=1.0)
    model = ImageClassifier(backbone="test_resnet", num_classes=6, pretrained=False)
    seen = SeeBatches()
    trainer = tiny_trainer(tmp_path, max_epochs=1, callbacks=[seen], limit_train_batches=2, limit_val_batches=1)
    trainer.fit(model, dm)
    trainer.test(model, dm, verbose=False)
    assert seen.targets["train"].shape == (8, 6) and seen.targets["train"].dtype == torch.float32
    torch.testing.assert_close(seen.targets["train"].sum(1), torch.ones(8))
    assert seen.targets["val"].ndim == 1 and seen.targets["test"].ndim == 1
    out = trainer.predict(model, dataloaders=dm.test_dataloader())
    assert out[0]["probs"].shape == (12, 6)


def test_eval_transform_is_deterministic():
    dm = shapes()
    dm.setup("fit")
    first, second = dm.datasets["val"][3][0], dm.datasets["val"][3][0]
    torch.testing.assert_close(first, second)
    assert first.shape == (3, 32, 32)
    train = dm.datasets["train"]
    assert not torch.equal(train[3][0], train[3][0])  # while training augmentation is random


def test_predict_folder_of_unlabelled_images(tmp_path):
    for i in range(3):
        write_image(tmp_path / "photos" / f"p{i}.jpg", i, fmt="JPEG")
    (tmp_path / "photos" / "readme.txt").write_text("x")
    dm = shapes(predict_dir=str(tmp_path / "photos"))
    model = ImageClassifier(backbone="test_resnet", num_classes=6, pretrained=False, class_names=list(SHAPE_CLASSES))
    out = tiny_trainer(tmp_path).predict(model, dm)
    assert [f.split("/")[-1] for f in dm.predict_files] == ["p0.jpg", "p1.jpg", "p2.jpg"]
    assert out[0]["class_names"][0] in SHAPE_CLASSES


def write_mnist(root, n=20, exist_ok=False):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=exist_ok)
    rng = np.random.default_rng(0)
    for prefix, count in (("train", n), ("t10k", n // 2)):
        images = rng.integers(0, 255, (count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) % 10).astype(np.uint8)
        with open(raw / f"{prefix}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, count, 28, 28) + images.tobytes())
        with open(raw / f"{prefix}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 2049, count) + labels.tobytes())


def test_torchvision_dataset_by_name(tmp_path, monkeypatch):
    import torchvision

    write_mnist(tmp_path)
    calls = []
    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: calls.append(self.root))
    dm = ImageDataModule(
        dataset="mnist", data_dir=str(tmp_path), download=True, image_size=16, val_split=0.5, auto_augment="none"
    )
    dm.prepare_data()
    assert calls == [str(tmp_path), str(tmp_path)]  # the real download path, for train and test
    dm.setup("fit")
    assert dm.num_classes == 10 and dm.class_names[3].startswith("3")
    image, _label = dm.datasets["train"][0]
    assert image.shape == (3, 16, 16)  # greyscale became RGB
    assert len(dm.datasets["train"]) == 10 and len(dm.datasets["val"]) == 10 and len(dm.datasets["test"]) == 10


def test_torchvision_classes_known_before_prepare_data_with_download(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setattr(torchvision.datasets.MNIST, "download", lambda self: write_mnist(tmp_path, exist_ok=True))
    dm = ImageDataModule(dataset="mnist", data_dir=str(tmp_path), download=True)
    assert dm.num_classes == 10  # the command line asks this first, before any prepare_data


def test_torchvision_dataset_missing_says_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"MNIST is not in '.*'.*Pass `download=True`"):
        ImageDataModule(dataset="mnist", data_dir=str(tmp_path)).setup("fit")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dataset="imagenet21k"), r"Unknown dataset 'imagenet21k'\. Use 'shapes'"),
        (dict(dataset="cifar10"), r"Dataset 'cifar10' needs `data_dir`"),
        (dict(val_split=1.5), r"Expected `val_split` in \[0, 1\), but got 1.5"),
        (dict(mixup_alpha=-1.0), r"Expected `mixup_alpha` >= 0, but got -1.0"),
        (dict(auto_augment="augmix"), r"Expected `auto_augment` one of randaugment"),
        (dict(scale=(0.5, 0.2)), r"Expected `scale` \(low, high\)"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageDataModule(**kwargs)


def test_missing_data_dir_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"Data folder '.*missing' does not exist"):
        ImageDataModule(data_dir=str(tmp_path / "missing")).setup("fit")


def test_no_test_split_is_explained():
    dm = ImageDataModule(data_dir=None)
    dm.setup("fit")
    assert dm.test_dataloader() is not None  # shapes has one
    with pytest.raises(ValueError, match="No images to predict: pass `predict_dir`"):
        dm.predict_dataloader()


def test_trainer_fit_end_to_end_on_folders(tmp_path):
    make_class_tree(tmp_path, per_class=6)
    dm = ImageDataModule(data_dir=str(tmp_path), batch_size=4, image_size=32, mixup_alpha=0.2, val_split=0.25)
    model = ImageClassifier(backbone="test_convnext", num_classes=dm.num_classes, pretrained=False)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=str(tmp_path),
    )
    trainer.fit(model, dm)
    assert "val_acc" in trainer.callback_metrics and model.hparams["class_names"] == ["cat", "dog", "owl"]


def test_non_square_model_input(tmp_path):
    model = ImageClassifier(
        backbone="test_vit", num_classes=6, pretrained=False, backbone_kwargs={"img_size": [32, 48]}
    )
    dm = ImageDataModule(dataset="shapes", dataset_kwargs=SMALL, batch_size=8)
    tiny_trainer(tmp_path, max_epochs=1, limit_train_batches=1, limit_val_batches=1).fit(model, dm)
    assert dm.datasets["val"][0][0].shape == (3, 32, 48) and dm.datasets["train"][0][0].shape == (3, 32, 48)


def test_missing_listed_file_is_skipped_not_fatal(tmp_path):
    for i in range(4):
        write_image(tmp_path / f"{i}.png", i)
    (tmp_path / "train.csv").write_text("0.png,a\n1.png,b\n2.png,a\n3.png,b\ngone.png,a\n")
    dm = ImageDataModule(train_file=str(tmp_path / "train.csv"), val_split=0.0)
    with pytest.warns(UserWarning, match=r"gone.png: missing or unreadable file"):
        dm.setup("fit")
    assert len(dm.datasets["train"]) == 4


def test_datasets_with_labels_instead_of_targets():
    from lightning_cv.data.datasets import TransformSubset

    class LabelsOnly:
        labels = [3, 1, 2]

        def __getitem__(self, i):
            return Image.new("L", (4, 4)), self.labels[i]

    subset = TransformSubset(LabelsOnly(), [2, 0])
    assert subset.targets == [2, 3] and subset[0][0].mode == "RGB"


def test_class_order_mismatch_is_refused(tmp_path):
    model = ImageClassifier(
        backbone="test_resnet", num_classes=6, pretrained=False, class_names=list(reversed(SHAPE_CLASSES))
    )
    with pytest.raises(ValueError, match=r"The model's classes .* differ from the data's"):
        tiny_trainer(tmp_path).fit(model, shapes())


def test_mixes_are_a_function_of_seed_rank_epoch_and_batch():
    class FakeTrainer:
        training, world_size, global_step, lightning_module, accelerator = True, 2, 0, None, None
        num_training_batches = float("inf")

        def __init__(self, rank):
            self.global_rank = rank

    def mixed_batches(rank, epoch):
        dm = shapes(mixup_alpha=1.0, num_workers=0)
        dm.trainer = FakeTrainer(rank)
        dm.setup("fit")
        loader = dm.train_dataloader()
        loader.sampler.set_epoch(epoch)
        batch = next(iter(loader))
        return [dm.on_after_batch_transfer((batch[0], batch[1]), 0)[1] for _ in range(2)]

    first, second = mixed_batches(rank=0, epoch=1)
    again = mixed_batches(rank=0, epoch=1)
    torch.testing.assert_close(first, again[0])  # the same position draws the same mix (a resume does)
    assert not torch.equal(first, second)  # the next batch draws anew
    assert not torch.equal(first, mixed_batches(rank=1, epoch=1)[0])  # other ranks draw their own


def test_perceptual_hash_sees_16bit_content(tmp_path):
    from lightning_cv.data.checks import perceptual_hash

    rng = np.random.default_rng(0)
    for name in ("a", "b"):
        Image.fromarray(rng.integers(0, 65535, (32, 32), dtype=np.uint16)).save(tmp_path / f"{name}.png")
    assert perceptual_hash(tmp_path / "a.png") != perceptual_hash(tmp_path / "b.png")
