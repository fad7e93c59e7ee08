import numpy as np
import pytest

from lightning_cv.data import SHAPE_CLASSES, ShapesDataset


def test_images_are_a_pure_function_of_seed_split_and_index():
    a, b = ShapesDataset(12, seed=1), ShapesDataset(12, seed=1)
    assert np.array_equal(np.asarray(a.render(5)[0]), np.asarray(b.render(5)[0]))
    other_split = ShapesDataset(12, seed=1, split="val")
    assert not np.array_equal(np.asarray(a.render(5)[0]), np.asarray(other_split.render(5)[0]))
    other_seed = ShapesDataset(12, seed=2)
    assert not np.array_equal(np.asarray(a.render(5)[0]), np.asarray(other_seed.render(5)[0]))


def test_classes_are_balanced_and_labels_match_targets():
    ds = ShapesDataset(60)
    assert ds.classes == list(SHAPE_CLASSES)
    assert np.bincount(ds.targets).tolist() == [10] * 6
    assert [ds[i][1] for i in range(12)] == ds.targets[:12]


@pytest.mark.parametrize("index", range(12))
def test_box_holds_the_object(index):
    ds = ShapesDataset(12, image_size=64)
    image, label, (x0, y0, x1, y1) = ds.render(index)
    pixels = np.asarray(image).astype(np.int32)
    assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
    assert (x1 - x0) >= 64 * 0.2 and (y1 - y0) >= 64 * 0.2
    # the object is one flat colour; find it at the box centre (rings: on the band) and count it in and out of the box
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    probe = (cx, cy) if SHAPE_CLASSES[label] != "ring" else (cx, y0 + max(1, (y1 - y0) // 10))
    color = pixels[probe[1], probe[0]]
    same = np.all(np.abs(pixels - color) <= 2, axis=-1)
    inside = same[y0:y1, x0:x1].sum()
    assert inside > 0.9 * same.sum()  # nearly every pixel of the object's colour lies inside its box


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"Expected `split` to be one of train, val, test, predict"):
        ShapesDataset(split="holdout")


def test_an_imbalanced_shapes_training_split_and_its_checks():
    from lightning_cv import ImageDataModule
    from lightning_cv.data.shapes import ShapesDataset

    dm = ImageDataModule(dataset="shapes", image_size=32, dataset_kwargs={
        "num_train": 420, "num_val": 60, "num_test": 60, "image_size": 32,
        "train_class_fractions": [1, 1, 1, 1, 1, 0.05]})  # fmt: skip
    dm.setup("fit")
    counts = dm.class_balance("train").counts
    # 420 / 5.05 = 83.2 each, 4 rings; the one image left over goes to the first of the largest classes
    assert counts["ring"] == 4 and counts["circle"] == 84 and counts["square"] == 83 and sum(counts.values()) == 420
    assert set(dm.class_balance("val").counts.values()) == {10}  # validation stays balanced
    with pytest.raises(ValueError, match="6 positive numbers"):
        ShapesDataset(10, class_fractions=[1, 1])
    with pytest.raises(ValueError, match=r"dataset_kwargs of 'shapes_multilabel'.*train_class_fractions"):
        ImageDataModule(dataset="shapes_multilabel", dataset_kwargs={"train_class_fractions": [1] * 6})
