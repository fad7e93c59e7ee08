"""Multi-label data: list formats, discovery, multi-hot targets, the embedded multi-label shapes, label balance, the
balanced sampler, mixing of multi-hot rows, the model's task, bad files and exact resume."""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, LightningModule, Trainer, seed_everything
from lightning.pytorch.utilities.exceptions import SIGTERMException
from torch import nn

from lightning_cv import ImageDataModule
from lightning_cv.callbacks import PreemptionCheckpoint
from lightning_cv.data import SHAPE_CLASSES, BatchMixer, ImageFileDataset, LabelBalance, MultiLabelShapesDataset
from lightning_cv.data.checks import label_balance
from lightning_cv.data.sources import read_labelled_list, read_list_file
from lightning_cv.resume import TrainingState
from tests.conftest import tiny_trainer
from tests.data.helpers import write_image

# ---------------------------------------------------------------------------------------------------- helpers


def write_list(folder, name, text, images=()):
    """``folder/name`` with ``text``, and a small random image for every name in ``images``."""
    for i, image in enumerate(images):
        write_image(folder / image, seed=100 + i)
    (folder / name).write_text(text)
    return folder / name


def labels_csv(folder, rows, name="train.csv", column="labels", seed=0):
    """A `path,labels` list of fresh images, one per row (each row a label string)."""
    lines = [f"path,{column}"]
    for i, labels in enumerate(rows):
        write_image(folder / f"{name}_{i}.png", seed=seed * 1000 + i)
        lines.append(f"{name}_{i}.png,{labels}")
    return write_list(folder, name, "\n".join(lines) + "\n")


def data(tmp_path, train, val=None, **kwargs):
    defaults = dict(image_size=16, batch_size=4, auto_augment="none", num_workers=0, val_split=0.0)
    return ImageDataModule(
        train_file=str(train), val_file=str(val) if val else None, **{**defaults, **kwargs}
    )  # fmt: skip


class TinyMultiLabel(LightningModule):
    """A few-parameter module that trains with BCE on ``(N, C)`` targets and keeps the targets it was given."""

    def __init__(self, num_classes: int = 3, task: str = "multilabel") -> None:
        super().__init__()
        self.save_hyperparameters()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)
        )
        self.seen: list[torch.Tensor] = []
        self._resume = TrainingState()

    def training_step(self, batch, batch_idx):
        images, targets = batch
        self.seen.append(targets.detach().clone())
        return F.binary_cross_entropy_with_logits(self.net(images), targets)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1, momentum=0.9)

    def on_save_checkpoint(self, checkpoint):
        self._resume.save(self, checkpoint)

    def on_load_checkpoint(self, checkpoint):
        self._resume.load(checkpoint, fitting=self.trainer.state.fn == "fit")

    def on_train_start(self):
        self._resume.restore(self)


# ---------------------------------------------------------------------------------------------------- list files


def test_labels_column_splits_strips_and_collapses(tmp_path):
    text = "path,labels\na.png,cat;dog\nb.png,\nc.png, dog ; dog ;cat;\n"
    records = read_list_file(write_list(tmp_path, "list.csv", text))
    assert records == [
        (str(tmp_path / "a.png"), ("cat", "dog")),
        (str(tmp_path / "b.png"), ()),  # an empty cell: an image with no label
        (str(tmp_path / "c.png"), ("dog", "cat")),  # whitespace stripped, the repeat collapsed
    ]


def test_tags_column_in_a_tsv_with_another_separator(tmp_path):
    text = "id\tfilename\ttags\n1\tx/a.png\tsea|sky\n2\tx/b.png\tsky\n"
    listed = read_labelled_list(write_list(tmp_path, "list.tsv", text), label_separator="|")
    assert listed.multilabel and listed.label_column == "tags"
    assert listed.records == [(str(tmp_path / "x/a.png"), ("sea", "sky")), (str(tmp_path / "x/b.png"), ("sky",))]


def test_a_single_label_column_keeps_a_list_single_label(tmp_path):
    # `label` wins over `labels`: such lists were read as single-label before multi-label support, and still are
    listed = read_labelled_list(write_list(tmp_path, "list.csv", "path,label,labels\na.png,cat,cat;dog\n"))
    assert not listed.multilabel
    assert read_list_file(tmp_path / "list.csv") == [(str(tmp_path / "a.png"), "cat")]


def test_multi_hot_table(tmp_path):
    text = "file,zebra,ant,cow\na.png,1,0,\nb.png,0,0,0\nc.png,1.0,1,0.0\n"
    listed = read_labelled_list(write_list(tmp_path, "table.csv", text))
    assert listed.multilabel and listed.classes == ("zebra", "ant", "cow")  # the header's order
    assert listed.records == [
        (str(tmp_path / "a.png"), ("zebra",)),
        (str(tmp_path / "b.png"), ()),
        (str(tmp_path / "c.png"), ("zebra", "ant")),
    ]


def test_multi_hot_cell_other_than_0_or_1_is_named(tmp_path):
    file = write_list(tmp_path, "table.csv", "path,cat,dog\na.png,1,0\nb.png,0,yes\n")
    with pytest.raises(
        ValueError,
        match=r"table.csv, row 3, column 'dog': expected 0 or 1 \(empty counts as 0\), but got 'yes'\. .*fix the "
        r"cell; if 'dog' is not a class, remove the column, or name the label column `label`",
    ):
        read_list_file(file)


def test_multi_hot_header_needs_distinct_names(tmp_path):
    file = write_list(tmp_path, "table.csv", "path,cat,cat\na.png,1,0\n")
    with pytest.raises(ValueError, match=r"table.csv: .* but has repeated names \['cat'\]\. Name every column once"):
        read_list_file(file)


def test_labels_cell_split_by_the_delimiter_is_named(tmp_path):
    file = write_list(tmp_path, "list.csv", "path,labels\na.png,cat,dog\n")
    with pytest.raises(
        ValueError,
        match=r"list.csv, row 2: expected 2 cells like the header, but got 3: .*needs quotes .*`label_separator`",
    ):
        read_list_file(file, label_separator=",")
    (tmp_path / "quoted.csv").write_text('path,labels\na.png,"cat,dog"\n')
    assert read_list_file(tmp_path / "quoted.csv", label_separator=",") == [(str(tmp_path / "a.png"), ("cat", "dog"))]


def test_empty_path_cell_is_named(tmp_path):
    file = write_list(tmp_path, "list.csv", "path,labels\n,cat\n")
    with pytest.raises(ValueError, match=r"list.csv, row 2: the path cell is empty"):
        read_list_file(file)


@pytest.mark.parametrize(
    "text", ["path,labels\nok.png,cat\n../out.png,dog\n", "path,cat,dog\nok.png,1,0\n../out.png,0,1\n"]
)
def test_multi_label_rows_must_stay_inside_the_folder(tmp_path, text):
    lists = tmp_path / "lists"
    lists.mkdir()
    file = write_list(lists, "list.csv", text)
    with pytest.raises(
        ValueError, match=r"(?s)list.csv: 1 row\(s\) name files outside .*row 3: '../out.png' climbs out"
    ):
        read_list_file(file)
    assert len(read_list_file(file, follow_links="all")) == 2


# ---------------------------------------------------------------------------------------------------- discovery


def test_class_names_and_multi_hot_targets(tmp_path):
    train = labels_csv(tmp_path, ["10;2", "9", "", "2;9;10"])
    val = labels_csv(tmp_path, ["2", "10;9"], name="val.csv", seed=1)
    dm = data(tmp_path, train, val)
    assert dm.task == "multilabel"
    assert dm.class_names == ["2", "9", "10"]  # sorted numerically, like class folders
    dm.setup("fit")
    train_set = dm.datasets["train"]
    assert train_set.targets == [(0, 2), (1,), (), (0, 1, 2)]
    _, target = train_set[0]
    assert target.dtype == torch.float32 and target.tolist() == [1.0, 0.0, 1.0]
    assert train_set[2][1].tolist() == [0.0, 0.0, 0.0]
    _, targets = next(iter(dm.val_dataloader()))
    assert targets.tolist() == [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]]


def test_multi_hot_tables_take_the_training_header_order(tmp_path):
    images = [f"{i}.png" for i in range(4)]
    train = write_list(tmp_path, "train.csv", "path,zebra,ant,cow\n0.png,1,0,0\n1.png,0,1,1\n", images)
    val = write_list(tmp_path, "val.csv", "path,cow,zebra,ant\n2.png,1,0,0\n3.png,0,1,1\n")  # another order
    dm = data(tmp_path, train, val)
    assert dm.class_names == ["zebra", "ant", "cow"]
    dm.setup("fit")
    assert dm.datasets["val"].targets == [(2,), (0, 1)]  # mapped by name, not by position


def test_val_label_unknown_to_training_is_named(tmp_path):
    train = labels_csv(tmp_path, ["cat", "dog;cat"])
    val = labels_csv(tmp_path, ["cat;emu", "yak"], name="val.csv", seed=1)
    with pytest.raises(
        ValueError,
        match=r"'.*val.csv' has label\(s\) that no training image has in '.*train.csv': \['emu', 'yak'\]\. Every "
        r"label must occur in training: add training images with them, or remove them from the list\.",
    ):
        data(tmp_path, train, val).setup("fit")


def test_val_table_with_other_columns_is_named(tmp_path):
    images = [f"{i}.png" for i in range(4)]
    train = write_list(tmp_path, "train.csv", "path,cat,dog\n0.png,1,0\n1.png,0,1\n", images)
    val = write_list(tmp_path, "val.csv", "path,cat,emu\n2.png,1,0\n3.png,0,1\n")
    with pytest.raises(
        ValueError,
        match=r"The class columns of '.*val.csv' differ from the training classes \('.*train.csv' is a multi-hot "
        r"table .*column\(s\) not in training: \['emu'\], training class\(es\) without a column: \['dog'\]\. "
        r"Give every multi-hot table the same class columns",
    ):
        data(tmp_path, train, val).setup("fit")


def test_training_list_without_any_label_is_refused(tmp_path):
    train = labels_csv(tmp_path, ["", " ", ";"])
    with pytest.raises(ValueError, match=r"No image in '.*train.csv' has a label \(3 rows, every one empty or all 0\)"):
        data(tmp_path, train).setup("fit")


def test_class_without_a_training_positive_is_named(tmp_path):
    images = [f"{i}.png" for i in range(2)]
    train = write_list(tmp_path, "train.csv", "path,cat,emu,dog\n0.png,1,0,0\n1.png,0,0,1\n", images)
    with pytest.raises(
        ValueError,
        match=r"Class\(es\) \['emu'\] have no image in the training split \('.*train.csv' is a multi-hot table .*\)\. "
        r"Add training images with them, remove the column",
    ):
        data(tmp_path, train).setup("fit")


@pytest.mark.parametrize("multi_in", ["train", "val"])
def test_mixing_single_and_multi_label_lists_names_both_files(tmp_path, multi_in):
    multi = labels_csv(tmp_path, ["cat", "dog;cat"], name="multi.csv")
    single = labels_csv(tmp_path, ["cat", "dog"], name="single.csv", column="label", seed=1)
    train, val = (multi, single) if multi_in == "train" else (single, multi)
    first, second = ("has a `labels` column", "has a `label` column")
    if multi_in == "val":
        first, second = second, first
    with pytest.raises(
        ValueError,
        match=rf"'.*{train.name}' {first} but '.*{val.name}' {second}: the training and val lists must label images "
        rf"the same way .* Rewrite '.*{val.name}' in the format of '.*{train.name}'\.",
    ):
        data(tmp_path, train, val).setup("fit")


def test_val_split_is_seeded_and_stratified_by_the_rarest_label(tmp_path):
    rows = ["common"] * 16 + ["common;rare"] * 4 + [""] * 4
    train = labels_csv(tmp_path, rows)
    splits = []
    for _ in range(2):
        dm = data(tmp_path, train, val_split=0.25, seed=3)
        dm.setup("fit")
        splits.append({s: dm.datasets[s].paths for s in ("train", "val")})
    assert splits[0] == splits[1]
    dm_val, dm_train = dm.datasets["val"].targets, dm.datasets["train"].targets
    assert set(splits[0]["train"]).isdisjoint(splits[0]["val"]) and len(dm_val) + len(dm_train) == 24
    # each group (rarest label "rare", "common" alone, no label) is split on its own: a quarter of each held out
    assert sorted(dm_val) == [(), (0,), (0,), (0,), (0,), (0, 1)]
    other = data(tmp_path, train, val_split=0.25, seed=4)
    other.setup("fit")
    assert other.datasets["val"].paths != splits[0]["val"]


def test_leakage_check_sees_multi_label_lists(tmp_path):
    train = labels_csv(tmp_path, ["cat", "dog;cat"])
    val = labels_csv(tmp_path, ["cat", "dog"], name="val.csv", seed=1)
    (tmp_path / "val.csv_1.png").write_bytes((tmp_path / "train.csv_0.png").read_bytes())
    with pytest.raises(ValueError, match=r"(?s)1 image\(s\) appear in more than one split.*train.csv_0.png"):
        data(tmp_path, train, val, on_leakage="error").setup("fit")


# ---------------------------------------------------------------------------------------------------- datasets


def test_image_file_dataset_multi_hot_targets(tmp_path):
    paths = [str(write_image(tmp_path / f"{i}.png", i)) for i in range(2)]
    dataset = ImageFileDataset(paths, [(0, 3), ()], num_classes=4)
    assert dataset.multilabel and dataset.targets == [(0, 3), ()]
    assert dataset[0][1].tolist() == [1.0, 0.0, 0.0, 1.0] and dataset[0][1].dtype == torch.float32
    assert dataset[1][1].tolist() == [0.0] * 4
    with pytest.raises(ValueError, match=r"Expected `num_classes` with multi-label `labels`"):
        ImageFileDataset(paths, [(0,), ()])
    with pytest.raises(ValueError, match=r"Expected label indices in \[0, 4\), but got \[4\]"):
        ImageFileDataset(paths, [(4,), ()], num_classes=4)
    with pytest.raises(ValueError, match=r"but got a mix\. Write `\(k,\)`"):
        ImageFileDataset(paths, [(1,), 2], num_classes=4)


# ---------------------------------------------------------------------------------------------------- shapes


def test_multilabel_shapes_are_a_pure_function_of_seed_split_and_index():
    a, b = MultiLabelShapesDataset(12, image_size=32, seed=1), MultiLabelShapesDataset(30, image_size=32, seed=1)
    for index in (0, 5, 11):
        assert np.array_equal(np.asarray(a.render(index)[0]), np.asarray(b.render(index)[0]))
    assert a.targets == b.targets[:12]  # the labels of an image do not depend on the split's size
    val = MultiLabelShapesDataset(12, image_size=32, seed=1, split="val")
    other_seed = MultiLabelShapesDataset(12, image_size=32, seed=2)
    for other in (val, other_seed):
        assert not np.array_equal(np.asarray(a.render(5)[0]), np.asarray(other.render(5)[0]))
        assert a.targets != other.targets


def test_multilabel_shapes_label_frequencies_and_targets():
    ds = MultiLabelShapesDataset(600, image_size=32, seed=0)
    sets = ds.label_sets
    assert sets.shape == (600, 6) and sets.dtype == torch.bool
    frequency = sets.float().mean(0)
    assert bool(((frequency > 0.25) & (frequency < 0.40)).all()), frequency
    no_shape = (sets.sum(1) == 0).float().mean().item()
    assert 0.05 < no_shape < 0.15
    assert set(sets.sum(1).tolist()) == {0, 1, 2, 3}
    image, target = ds[3]
    assert target.dtype == torch.float32 and target.nonzero().flatten().tolist() == list(ds.targets[3])
    assert image.size == (32, 32)


def test_multilabel_shapes_sit_in_separate_cells():
    ds = MultiLabelShapesDataset(40, image_size=64, seed=0)
    for index in range(40):
        _, labels, boxes = ds.render(index)
        assert len(boxes) == len(labels) == len(set(labels))
        cells = {(x0 // 32, y0 // 32) for x0, y0, _, _ in boxes}
        assert len(cells) == len(boxes)  # one shape per quarter: no overlap
        for x0, y0, x1, y1 in boxes:
            assert (x1 - 1) // 32 == x0 // 32 and (y1 - 1) // 32 == y0 // 32 and x1 - x0 >= 8


def test_shapes_multilabel_in_the_data_module():
    dm = ImageDataModule(
        dataset="shapes_multilabel",
        dataset_kwargs={"num_train": 12, "num_val": 4, "num_test": 4, "image_size": 32},
        image_size=32,
        batch_size=4,
        num_workers=0,
    )
    assert dm.task == "multilabel" and dm.class_names == list(SHAPE_CLASSES)
    dm.setup("fit")
    images, targets = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and targets.shape == (4, 6) and targets.dtype == torch.float32
    assert isinstance(dm.class_balance(), LabelBalance)
    assert ImageDataModule(dataset="shapes").task == "multiclass"


# ---------------------------------------------------------------------------------------------------- reports


def test_label_balance_against_a_hand_count(tmp_path):
    rows = ["cat;dog", "dog", "", "dog;emu", "", "dog"]
    # by hand: cat 1, dog 4, emu 1; 2 images without a label; 6 images; ratio 4 / 1
    dm = data(tmp_path, labels_csv(tmp_path, rows))
    dm.setup("fit")
    balance = dm.class_balance()
    assert balance == LabelBalance({"cat": 1, "dog": 4, "emu": 1}, no_label=2, num_images=6)
    assert balance.imbalance_ratio == 4.0
    text = str(balance)
    assert "  dog" in text and "66.7%" in text and "(no label)" in text and "images: 6" in text
    assert "imbalance ratio (most / least frequent label): 4.00" in text
    positives, images = dm.label_counts()
    assert positives.tolist() == [1.0, 4.0, 1.0] and positives.dtype == torch.float32 and images == 6
    assert label_balance([(0, 0)], ["a"]).counts == {"a": 1}  # a label counts once per image
    with pytest.raises(ValueError, match=r"`class_weights\(\)` is for multiclass data .*`label_counts\(\)`"):
        dm.class_weights()


def test_balanced_sampler_weighs_an_image_by_its_rarest_label(tmp_path):
    # counts: a 3, b 2, no label 1
    dm = data(tmp_path, labels_csv(tmp_path, ["a", "a", "a;b", "", "b"]), balanced_sampler=True)
    dm.setup("fit")
    weights = dm.train_dataloader().resumable_sampler.weights
    expected = torch.tensor([1 / 3, 1 / 3, max(1 / 3, 1 / 2), 1 / 1, 1 / 2], dtype=torch.double)
    torch.testing.assert_close(weights, expected)


def test_label_separator_is_checked():
    for bad in ("", "  "):
        with pytest.raises(ValueError, match=r"Expected `label_separator` to be a non-empty string that is not only "):
            ImageDataModule(label_separator=bad)


def test_label_separator_reaches_the_lists(tmp_path):
    train = labels_csv(tmp_path, ["cat|dog", "dog"])
    assert data(tmp_path, train, label_separator="|").class_names == ["cat", "dog"]
    assert data(tmp_path, train).class_names == ["cat|dog", "dog"]


# ---------------------------------------------------------------------------------------------------- mixing


def images(n, h=8, w=8):
    return torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1).expand(n, 3, h, w).clone()


def test_mixer_mixes_multi_hot_rows_like_one_hot_rows():
    y = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    x, t = BatchMixer(3, mixup_alpha=1.0, seed=3)(images(4), y)
    lam = ((x[0, 0, 0, 0] - 3) / (0 - 3)).item()  # image 0 = lam * 0 + (1 - lam) * 3
    expected = [
        [lam * a + (1 - lam) * b for a, b in zip(y[i].tolist(), y[3 - i].tolist(), strict=True)] for i in range(4)
    ]
    torch.testing.assert_close(t, torch.tensor(expected))
    # the draws do not depend on the kind of target: class indices get the same mix
    x_indices, _ = BatchMixer(3, mixup_alpha=1.0, seed=3)(images(4), torch.tensor([0, 1, 2, 0]))
    torch.testing.assert_close(x, x_indices)


def test_mixer_cutmix_on_multi_hot_rows_uses_the_pasted_area():
    y = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    x, t = BatchMixer(2, cutmix_alpha=1.0, seed=0)(images(2, 16, 16), y)
    lam = 1 - (x[0, 0] != 0).float().mean().item()  # image 0 received pixels of image 1
    torch.testing.assert_close(t, torch.tensor([[lam, 1 - lam], [1 - lam, lam]]))


def test_mixer_refuses_targets_of_another_width():
    with pytest.raises(ValueError, match=r"Expected multi-hot targets of shape \(N, 3\), but got \(2, 4\): 4 labels"):
        BatchMixer(3, mixup_alpha=1.0)(images(2), torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"Expected class indices of shape \(2,\) or multi-hot targets of shape"):
        BatchMixer(3, mixup_alpha=1.0)(images(2), torch.zeros(3))


# ---------------------------------------------------------------------------------------------------- the model


def connected(tmp_path, dm, model):
    dm.trainer = tiny_trainer(tmp_path)
    dm.trainer.strategy.connect(model)
    return dm


def test_a_multiclass_model_on_multi_label_data_is_refused(tmp_path):
    dm = connected(tmp_path, data(tmp_path, labels_csv(tmp_path, ["a", "a;b"])), TinyMultiLabel(2, "multiclass"))
    with pytest.raises(
        ValueError,
        match=r"^The data is multi-label \('.*train.csv' has a `labels` column\) but the model is multiclass: create "
        r"it with `task='multilabel'` \(command line: `--model.task multilabel`\)\.$",
    ):
        dm.setup("fit")


def test_a_multi_label_model_on_multiclass_data_is_refused(tmp_path):
    dm = connected(tmp_path, ImageDataModule(dataset="shapes"), TinyMultiLabel(6, "multilabel"))
    with pytest.raises(
        ValueError,
        match=r"^The data is multiclass \(dataset 'shapes' has one shape per image\) but the model is multilabel: "
        r"create it with `task='multiclass'` \(command line: `--model.task multiclass`\)",
    ):
        dm.setup("fit")


def test_a_module_that_states_no_task_and_no_classes_is_not_checked(tmp_path):
    class Plain(LightningModule):
        pass

    dm = connected(tmp_path, data(tmp_path, labels_csv(tmp_path, ["a", "a;b"])), Plain())
    dm.setup("fit")  # no error: nothing to compare with


class StopAfter(Callback):
    """Stops training like SIGTERM does, after batch ``batch`` of epoch ``epoch``."""

    def __init__(self, epoch: int, batch: int) -> None:
        self.epoch, self.batch = epoch, batch

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.current_epoch == self.epoch and batch_idx == self.batch:
            os.kill(os.getpid(), signal.SIGTERM)  # Lightning's handler notes it and stops after this batch


def fit(root, train_file, callbacks=(), ckpt_path=None, max_epochs=2, **data_kwargs):
    seed_everything(0)
    dm = data(
        root, train_file, batch_size=4, auto_augment="randaugment", mixup_alpha=0.4, cutmix_alpha=1.0, **data_kwargs
    )
    model = TinyMultiLabel(dm.num_classes)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        deterministic=True,
        default_root_dir=str(root),
        callbacks=list(callbacks),
    )
    if any(isinstance(c, StopAfter) for c in callbacks):
        with pytest.raises(SIGTERMException):
            trainer.fit(model, dm, ckpt_path=ckpt_path)
    else:
        trainer.fit(model, dm, ckpt_path=ckpt_path)
    return model, trainer.global_step


def assert_bitwise(a, b):
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, f"{len(different)} of {len(a)} tensors differ, e.g. {different[:3]}"


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_training_batches_carry_mixed_multi_hot_targets_and_bad_files_are_skipped(tmp_path):
    train = labels_csv(tmp_path, ["a", "b", "a;b", "", "b", "a", "a;b", "b"])
    bad = tmp_path / "train.csv_3.png"
    bad.write_bytes(b"not an image")
    with pytest.warns(UserWarning, match=r"Skipping 1 file\(s\) that cannot be used as images:\n  .*train.csv_3.png"):
        model, steps = fit(tmp_path / "run", train, max_epochs=1)
    assert steps == 2  # the seven usable images, in batches of four
    seen = torch.cat(model.seen)
    assert seen.shape == (7, 2) and seen.dtype == torch.float32
    assert ((seen > 0) & (seen < 1)).any()  # mixed: weights between 0 and 1, not only labels
    assert ((seen >= 0) & (seen <= 1)).all()


@pytest.mark.filterwarnings("ignore:You passed in a `val_dataloader` but have no `validation_step`")
def test_resume_of_a_mixed_multi_label_run_is_exact(tmp_path):
    train = labels_csv(tmp_path, ["a", "b", "a;b", "", "c", "a;c", "b;c", "a;b;c"] * 2)
    reference, steps = fit(tmp_path / "ref", train)
    ck = tmp_path / "ck"
    fit(tmp_path / "stop", train, callbacks=[StopAfter(epoch=0, batch=1), PreemptionCheckpoint(dirpath=ck)])
    assert (ck / "interrupted.ckpt").is_file()
    resumed, resumed_steps = fit(tmp_path / "resume", train, ckpt_path=ck / "interrupted.ckpt")
    assert resumed_steps == steps == 8
    torch.testing.assert_close(torch.stack(resumed.seen), torch.stack(reference.seen[2:]), rtol=0, atol=0)
    assert_bitwise(resumed.state_dict(), reference.state_dict())


def test_a_val_or_test_list_without_a_training_list_is_refused_not_ignored():
    from lightning_cv import ImageDataModule

    with pytest.raises(ValueError, match=r"`test_file` is read together with `train_file`.*--data.train_file"):
        ImageDataModule(test_file="test.csv")
    with pytest.raises(ValueError, match="`val_file` is read together"):
        ImageDataModule(data_dir="images", val_file="val.csv")


def test_skipping_the_only_image_of_a_label_is_an_error_naming_it(tmp_path):
    train = labels_csv(tmp_path, ["a", "a;b", "a", "c", "c"])  # label b only in row 1
    (tmp_path / "train.csv_1.png").write_bytes(b"not an image")
    dm = data(tmp_path, train)
    with pytest.warns(UserWarning, match="Skipping 1 file"), pytest.raises(
        ValueError, match=r"class\(es\) \['b'\] have no training image left"
    ):
        dm.setup("fit")


def test_a_single_label_list_whose_labels_hold_the_separator_gets_a_hint(tmp_path):
    train = labels_csv(tmp_path, ["cat", "cat;dog", "dog"], column="label")
    with pytest.warns(UserWarning, match=r"'cat;dog'.*`path,labels` header"):
        assert data(tmp_path, train).class_names == ["cat", "cat;dog", "dog"]

