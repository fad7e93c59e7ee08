"""The train and eval presets, and the one-step conversion to a normalised tensor they end with."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import v2 as T

from lightning_cv.data.transforms import ToNormalizedTensor, build_eval_transform, build_train_transform

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def torchvision_steps(mean=MEAN, std=STD):
    return T.Compose([T.ToImage(), T.ToDtype(torch.float32, scale=True), T.Normalize(list(mean), list(std))])


@pytest.mark.parametrize("kind", ["pil", "array", "uint8 tensor", "float tensor"])
def test_one_step_conversion_equals_torchvision_three_steps(kind):
    pixels = np.random.default_rng(0).integers(0, 256, (37, 23, 3), dtype=np.uint8)
    image = {
        "pil": Image.fromarray(pixels),
        "array": pixels,
        "uint8 tensor": torch.from_numpy(pixels).permute(2, 0, 1).contiguous(),
        "float tensor": torch.from_numpy(pixels).permute(2, 0, 1).float() / 255,
    }[kind]
    ours, theirs = ToNormalizedTensor(MEAN, STD)(image), torchvision_steps()(image)
    assert ours.dtype == torch.float32 and ours.shape == theirs.shape == (3, 37, 23)
    assert torch.allclose(ours, theirs, atol=1e-6, rtol=0)
    assert ours.min() < -1.5 and ours.max() > 2.0  # really normalised, not just scaled to [0, 1]


def test_one_step_conversion_of_a_greyscale_image_with_one_channel_statistics():
    image = Image.fromarray(np.arange(64, dtype=np.uint8).reshape(8, 8))
    ours = ToNormalizedTensor([0.5], [0.25])(image)
    assert ours.shape == (1, 8, 8)
    assert torch.allclose(ours, torchvision_steps([0.5], [0.25])(image), atol=1e-6, rtol=0)


def test_one_step_conversion_refuses_mismatched_statistics():
    with pytest.raises(ValueError, match="as many `mean` as `std`"):
        ToNormalizedTensor([0.5, 0.5], [0.5])
    with pytest.raises(ValueError, match="std > 0"):
        ToNormalizedTensor([0.5], [0.0])


def test_presets_end_in_the_one_step_conversion_and_give_normalised_tensors():
    image = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 50, 3), dtype=np.uint8))
    eval_tf = build_eval_transform(32, mean=MEAN, std=STD, crop_pct=0.875)
    train_tf = build_train_transform(32, mean=MEAN, std=STD, auto_augment="none", hflip=0)
    assert isinstance(eval_tf.transforms[-1], ToNormalizedTensor)
    resized = T.CenterCrop(32)(T.Resize(36, antialias=True)(image))
    assert torch.allclose(eval_tf(image), torchvision_steps()(resized), atol=1e-6, rtol=0)
    torch.manual_seed(0)
    out = train_tf(image)
    assert out.shape == (3, 32, 32) and out.dtype == torch.float32


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "1"])
def test_images_that_are_not_eight_bit_take_torchvision_conversion(mode):
    pixels = {
        "I;16": np.array([[0, 300], [65535, 1000]], dtype=np.uint16),
        "I": np.array([[0, 70000], [5, 9]]),
        "F": np.array([[0.25, 0.5], [1.0, 0.0]], dtype=np.float32),
        "1": np.array([[0, 1], [1, 0]], dtype=bool),
    }
    image = Image.fromarray(pixels[mode]) if mode != "I" else Image.fromarray(pixels[mode].astype(np.int32), "I")
    assert image.mode == mode
    ours = ToNormalizedTensor([0.5], [0.25])(image)
    assert torch.allclose(ours, torchvision_steps([0.5], [0.25])(image), atol=1e-5, rtol=0)
