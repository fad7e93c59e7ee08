"""DataConfig: timm's config in, the data module's arguments on top, export metadata and display out."""

import json

import pytest
import timm
import torch
from lightning.pytorch import LightningModule
from timm.data import resolve_model_data_config
from torchvision.transforms import v2 as T

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.data import DataConfig, find_data_config
from lightning_cv.data.config import to_display
from lightning_cv.data.datamodule import DEFAULT_DATA_CONFIG
from lightning_cv.models import resolve_data_config

TIMM_STYLE = {
    "input_size": (3, 160, 160),
    "interpolation": "bicubic",
    "mean": (0.5, 0.5, 0.5),
    "std": (0.25, 0.25, 0.25),
    "crop_pct": 0.95,
    "crop_mode": "center",
}


def test_from_timm_round_trips_timms_own_config():
    cfg = resolve_model_data_config(timm.create_model("test_efficientnet", pretrained=False, num_classes=3))
    config = DataConfig.from_timm(cfg)
    assert config.to_timm() == cfg
    assert config.image_size == (160, 160) and config.input_size == (3, 160, 160) and config.transform_size == 160
    assert DataConfig.from_timm(config) is config


def test_backbone_kwargs_override_the_pretrained_size():
    vit = timm.create_model("test_vit", pretrained=False, num_classes=3, img_size=(48, 64))
    config = resolve_data_config(vit, {"img_size": (48, 64)})
    assert config.input_size == (3, 48, 64) and config.transform_size == (48, 64)
    grey = timm.create_model("test_resnet", pretrained=False, num_classes=3, in_chans=1)
    assert resolve_data_config(grey, {"in_chans": 1}).input_size == (1, 160, 160)


def test_override_applies_only_what_is_given():
    config = DataConfig.from_timm(TIMM_STYLE)
    assert config.override() == config
    square = config.override(image_size=32, crop_pct=1.0)
    assert square.image_size == (32, 32) and square.transform_size == 32 and square.crop_pct == 1.0
    assert (square.mean, square.std, square.interpolation) == (config.mean, config.std, "bicubic")
    assert config.override(image_size=[24, 32]).input_size == (3, 24, 32)  # YAML gives lists
    assert config.override(mean=[0, 0, 0]).mean == (0, 0, 0)  # as typed


def test_defaults_and_the_data_module_arguments():
    assert DEFAULT_DATA_CONFIG == {
        "image_size": 224,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "interpolation": "bilinear",
        "crop_pct": 0.875,
    }
    config = DataConfig.from_timm(TIMM_STYLE).override(image_size=(24, 32))
    assert DataConfig().override(**config.to_arguments()).to_timm() == config.to_timm()


def test_timms_other_interpolations_fall_back_to_bilinear():
    assert DataConfig(interpolation="random").with_supported_interpolation().interpolation == "bilinear"
    bicubic = DataConfig(interpolation="bicubic")
    assert bicubic.with_supported_interpolation() is bicubic


def _metadata_before_data_config(config: dict) -> dict:
    """How callbacks/onnx_export.py and deploy/commands.py built the metadata from a config dict before DataConfig."""
    meta = {}
    for key in ("mean", "std", "interpolation", "crop_pct"):
        if config.get(key) is not None:
            meta[key] = list(config[key]) if isinstance(config[key], tuple) else config[key]
    return meta


@pytest.mark.parametrize(
    ("old_config", "config"),
    [
        (TIMM_STYLE, DataConfig.from_timm(TIMM_STYLE)),  # the model's config
        (  # the data module's, with integer statistics a user typed
            {"image_size": 32, "mean": (0, 0, 0), "std": (1, 1, 1), "interpolation": "bilinear", "crop_pct": 1},
            DataConfig.from_timm(TIMM_STYLE).override(
                image_size=32, mean=(0, 0, 0), std=(1, 1, 1), interpolation="bilinear", crop_pct=1
            ),
        ),
    ],
)
def test_export_metadata_is_byte_identical_to_earlier_exports(old_config, config):
    as_written = lambda meta: {k: v if isinstance(v, str) else json.dumps(v) for k, v in meta.items()}  # noqa: E731
    expected = {**_metadata_before_data_config(old_config), "input_size": [3, 32, 32]}
    got = config.export_metadata(input_size=torch.Size([3, 32, 32]))
    assert list(got) == list(expected) and as_written(got) == as_written(expected)


def test_denormalize_inverts_torchvisions_normalize():
    config = DataConfig(mean=(0.4, 0.5, 0.6), std=(0.2, 0.25, 0.3))
    pixels = torch.rand(2, 3, 5, 7)
    normalised = T.Normalize(mean=list(config.mean), std=list(config.std))(pixels)
    torch.testing.assert_close(config.denormalize(normalised), pixels)
    torch.testing.assert_close(config.denormalize(normalised[0]), pixels[0])
    shown = to_display(normalised, config)
    assert shown.shape == (2, 5, 7, 3) and shown.dtype.name == "uint8"
    expected = (pixels.permute(0, 2, 3, 1) * 255).numpy().astype("uint8")
    assert abs(shown.astype(int) - expected.astype(int)).max() <= 1


def test_display_without_a_config_stretches_each_image():
    shown = to_display(torch.stack([torch.linspace(-3, 5, 48).view(3, 4, 4), torch.full((3, 4, 4), 2.0)]))
    assert (shown[0].min(), shown[0].max()) == (0, 255) and shown[1].max() == 0


class Foreign(LightningModule):
    def __init__(self, data_config=None):
        super().__init__()
        if data_config is not None:
            self.data_config = data_config


def test_find_data_config_of_any_module():
    ours = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    assert find_data_config(ours) is ours.data_config
    assert find_data_config(Foreign(TIMM_STYLE)) == DataConfig.from_timm(TIMM_STYLE)  # timm's dict
    assert find_data_config(Foreign({"mean": (0.5,)})) is None  # not enough to go on
    assert find_data_config(Foreign("bicubic")) is None
    assert find_data_config(Foreign(), None) is None
    data = ImageDataModule()
    assert data.data_config is None  # until setup
    assert find_data_config(data, Foreign(TIMM_STYLE)).interpolation == "bicubic"  # the first that has one
    data.setup("fit")
    assert find_data_config(data, Foreign(TIMM_STYLE)) is data.data_config
    assert data.data_config.input_size == (3, 224, 224)


def test_reads_like_the_dicts_it_replaces():
    config = DataConfig.from_timm(TIMM_STYLE)
    assert config["input_size"] == (3, 160, 160) and config["image_size"] == 160 and config["mean"] == (0.5,) * 3
    assert config.override(image_size=(24, 32))["image_size"] == (24, 32)
    assert dict(config) == TIMM_STYLE  # as `dict(model.data_config)` always was
    assert config.get("missing") is None and "image_size" in config


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"input_size": (3, 32, 32), "mean": (0.5,)}, r"`data_config` lacks 'std'; it has \['input_size', 'mean'\]"),
        ({"mean": (0.5,), "std": (0.5,)}, r"`data_config` lacks 'input_size'"),
        ({**TIMM_STYLE, "input_size": (32, 32)}, r"Expected `input_size` to be \(channels, height, width\), but got"),
        ({**TIMM_STYLE, "mean": 0.5}, r"Expected `mean` to be a sequence of numbers \(one per channel\), but got 0.5"),
        ({**TIMM_STYLE, "std": (1, 0, 1)}, r"Expected `std` to be > 0 \(images are divided by it\)"),
        ({**TIMM_STYLE, "crop_pct": 0}, r"Expected `crop_pct` > 0"),
        ({"image_size": 0, "mean": (0.5,), "std": (0.5,)}, r"Expected `image_size` to be a positive int or a \("),
    ],
)
def test_bad_configs_are_named(config, message):
    with pytest.raises(ValueError, match=message):
        DataConfig.from_timm(config)
