"""ImageDataModule refuses impossible settings when it is created, before any run folder exists."""

import pytest

from lightning_cv import ImageDataModule


@pytest.mark.parametrize("size", [0, -3, (0, 32), (32,), (32, 32, 32), 32.0, True, "32"])
def test_image_size_must_be_positive(size):
    with pytest.raises(
        ValueError,
        match=r"Expected `image_size` to be a positive int or a \(height, width\) pair of positive ints, but got ",
    ):
        ImageDataModule(image_size=size)


def test_image_size_pair_from_yaml_is_kept_as_a_tuple():
    assert ImageDataModule(image_size=[32, 48]).hparams["image_size"] == (32, 48)
    assert ImageDataModule(image_size=32).hparams["image_size"] == 32


def test_image_size_zero_message_is_exact():
    expected = "Expected `image_size` to be a positive int or a (height, width) pair of positive ints, but got 0."
    with pytest.raises(ValueError) as caught:
        ImageDataModule(image_size=0)
    assert str(caught.value) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"batch_size": 0}, r"Expected `batch_size` >= 1, but got 0."),
        ({"eval_batch_size": 0}, r"Expected `eval_batch_size` >= 1 or None, but got 0."),
        (
            {"crop_pct": 0.0},
            r"Expected `crop_pct` > 0 \(the resize before the center crop divides by it\), but got 0.0",
        ),
        ({"std": (0.2, 0.0, 0.2)}, r"Expected `std` to be > 0 \(images are divided by it\), but got \(0.2, 0.0, 0.2\)"),
        ({"mean": (0.5, 0.5)}, r"Expected `mean` to have 3 values \(R, G, B\) or 1, but got \(0.5, 0.5\)"),
        ({"max_image_pixels": 0}, r"Expected `max_image_pixels` >= 1, but got 0."),
        ({"follow_links": "yes"}, r"Expected `follow_links` one of inside, all, none, but got 'yes'."),
    ],
)
def test_other_settings_fail_fast(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageDataModule(**kwargs)
