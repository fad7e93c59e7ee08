"""From logits to scores: temperature, test-time augmentation views, softmax or sigmoid, and ScoreHead."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_cv import ImageClassifier
from lightning_cv.models.scoring import (
    TTA_VIEWS,
    ScoreHead,
    calibrated_logits,
    calibrated_probabilities,
    check_tta,
    tta_views,
)


def small_net(classes: int = 5) -> nn.Module:
    """A conv net that sees where things are (no global pooling), so flips and crops change its output."""
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3, stride=2, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(64, classes),
    )
    with torch.no_grad():
        net[-1].weight.mul_(8.0)  # logits of a few units: probabilities well away from uniform
    return net.eval()


def images(n: int = 4, height: int = 32, width: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, height, width, generator=torch.Generator().manual_seed(seed))


def resized(crop: torch.Tensor, height: int, width: int) -> torch.Tensor:
    return F.interpolate(crop, size=(height, width), mode="bilinear", align_corners=False)


def views_32x40(x: torch.Tensor) -> list[torch.Tensor]:
    """The six flip_crops views of a 32x40 image, written out: corner crops of round(32*7/8)=28 by round(40*7/8)=35."""
    assert x.shape[-2:] == (32, 40)
    return [
        x,
        x.flip(-1),
        resized(x[..., 0:28, 0:35], 32, 40),  # top left
        resized(x[..., 0:28, 5:40], 32, 40),  # top right
        resized(x[..., 4:32, 0:35], 32, 40),  # bottom left
        resized(x[..., 4:32, 5:40], 32, 40),  # bottom right
    ]


def mean_softmax(net: nn.Module, views: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([(net(v) / temperature).softmax(dim=1) for v in views]).mean(dim=0)


def mean_sigmoid(net: nn.Module, views: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([(net(v) / temperature).sigmoid() for v in views]).mean(dim=0)


class Counting(nn.Module):
    """``net``, recording the shape of every batch it is called on."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        return self.net(x)


# ------------------------------------------------------------------ the views
def test_flip_probabilities_are_the_mean_of_the_image_and_its_mirror():
    net, x = small_net(), images()
    with torch.no_grad():
        plain, mirrored = net(x).softmax(dim=1), net(x.flip(-1)).softmax(dim=1)
        got = calibrated_probabilities(net, x, tta="flip")
    assert (plain - mirrored).abs().max() > 1e-3  # the mirror is a different view for this net
    torch.testing.assert_close(got, (plain + mirrored) / 2, rtol=0, atol=1e-6)


def test_flip_crops_probabilities_are_the_mean_of_six_independently_made_views():
    net, x = small_net(), images(height=32, width=40)  # not square: rows and columns must not be mixed up
    expected = mean_softmax(net, views_32x40(x))
    with torch.no_grad():
        got = calibrated_probabilities(net, x, tta="flip_crops")
        flip_only = calibrated_probabilities(net, x, tta="flip")
    assert (got - flip_only).abs().max() > 1e-3  # the crops count
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_flip_crops_on_a_square_image():
    net, x = small_net(), images()
    crops = [x[..., 0:28, 0:28], x[..., 0:28, 4:32], x[..., 4:32, 0:28], x[..., 4:32, 4:32]]  # round(32*7/8) = 28
    views = [x, x.flip(-1), *(resized(c, 32, 32) for c in crops)]
    with torch.no_grad():
        got = calibrated_probabilities(net, x, tta="flip_crops", temperature=1.3)
    torch.testing.assert_close(got, mean_softmax(net, views, 1.3), rtol=0, atol=1e-6)


def test_tta_views_counts_shapes_and_first_view():
    x = images(n=2, height=32, width=40)
    for mode, count in TTA_VIEWS.items():
        views = tta_views(x, mode)
        assert len(views) == count
        assert all(v.shape == x.shape for v in views)
        assert views[0] is x
    assert torch.equal(tta_views(x, "flip")[1], x.flip(-1))
    for got, expected in zip(tta_views(x, "flip_crops"), views_32x40(x), strict=True):
        torch.testing.assert_close(got, expected, rtol=0, atol=0)


# ------------------------------------------------------------------ logits and probabilities agree
@pytest.mark.parametrize("tta", ["none", "flip", "flip_crops"])
@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.5])
def test_softmax_of_calibrated_logits_is_calibrated_probabilities(tta, temperature):
    net, x = small_net(), images()
    with torch.no_grad():
        logits = calibrated_logits(net, x, tta=tta, temperature=temperature)
        probs = calibrated_probabilities(net, x, tta=tta, temperature=temperature)
    assert logits.dtype == torch.float32 and logits.shape == (4, 5)
    torch.testing.assert_close(logits.softmax(dim=1), probs, rtol=0, atol=1e-6)
    views = tta_views(x, tta)
    torch.testing.assert_close(probs, mean_softmax(net, views, temperature), rtol=0, atol=1e-6)


def test_multiclass_tta_logits_are_the_log_of_the_mean_probability():
    net, x = small_net(), images()
    with torch.no_grad():
        logits = calibrated_logits(net, x, tta="flip", temperature=2.0)
    expected = mean_softmax(net, [x, x.flip(-1)], 2.0).log()
    torch.testing.assert_close(logits, expected, rtol=0, atol=1e-5)


@pytest.mark.parametrize("tta", ["flip", "flip_crops"])
def test_multilabel_scores_are_the_mean_sigmoid_over_views(tta):
    net, x = small_net(), images()
    views = tta_views(x, tta)
    expected = mean_sigmoid(net, views, 1.5)
    with torch.no_grad():
        probs = calibrated_probabilities(net, x, task="multilabel", tta=tta, temperature=1.5)
        logits = calibrated_logits(net, x, task="multilabel", tta=tta, temperature=1.5)
    torch.testing.assert_close(probs, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(logits.sigmoid(), expected, rtol=0, atol=1e-6)
    assert (probs.sum(dim=1) - 1).abs().max() > 1e-2  # sigmoids: rows need not sum to 1
    assert not torch.allclose(probs, mean_softmax(net, views, 1.5), atol=1e-3)  # not a softmax


def test_multilabel_without_views_is_sigmoid_of_logits_over_temperature():
    net, x = small_net(), images()
    with torch.no_grad():
        raw = net(x)
        logits = calibrated_logits(net, x, task="multilabel", temperature=2.0)
        probs = calibrated_probabilities(net, x, task="multilabel", temperature=2.0)
    torch.testing.assert_close(logits, raw / 2.0, rtol=0, atol=0)
    torch.testing.assert_close(probs, (raw / 2.0).sigmoid(), rtol=0, atol=0)


def test_no_tta_and_temperature_one_is_the_model_itself():
    net, x = small_net(), images()
    with torch.no_grad():
        raw = net(x)
        assert torch.equal(calibrated_logits(net, x), raw)
        assert torch.equal(calibrated_logits(net, x, tta="none", temperature=1.0), raw)
        assert torch.equal(calibrated_logits(net, x, tta="none", temperature=4.0), raw / 4.0)
        torch.testing.assert_close(calibrated_probabilities(net, x), raw.softmax(dim=1), rtol=0, atol=0)


def test_half_precision_logits_come_back_as_float32():
    net, x = small_net().double(), images().double()
    with torch.no_grad():
        out = calibrated_logits(lambda v: net(v).half(), x)
    assert out.dtype == torch.float32


def test_an_unknown_task_is_refused():
    with pytest.raises(ValueError, match="`task`"):
        calibrated_probabilities(small_net(), images(), task="binary")


# ------------------------------------------------------------------ check_tta
@pytest.mark.parametrize("mode", ["flips", "Flip", "crops", "", None])
def test_check_tta_refuses_unknown_modes_naming_the_choices(mode):
    with pytest.raises(ValueError, match="none, flip, flip_crops") as info:
        check_tta(mode)
    assert repr(mode) in str(info.value)


@pytest.mark.parametrize("size", [(3, 12, 12), (12, 12), (3, 15, 64), (3, 64, 15)])
def test_flip_crops_on_a_too_small_input_is_refused_naming_flip(size):
    with pytest.raises(ValueError, match="tta='flip'") as info:
        check_tta("flip_crops", size)
    message = str(info.value)
    assert "\n" not in message
    assert f"{size[-2]}x{size[-1]}" in message
    assert check_tta("flip", size) == "flip"  # the fix it names works
    assert check_tta("none", size) == "none"


@pytest.mark.parametrize("size", [(3, 16, 16), (16, 16), (3, 16, 40), None])
def test_flip_crops_on_16px_or_more_is_accepted(size):
    assert check_tta("flip_crops", size) == "flip_crops"


def test_scoring_a_too_small_image_with_flip_crops_is_refused():
    with pytest.raises(ValueError, match="tta='flip'"):
        calibrated_probabilities(small_net(), images(height=12, width=12), tta="flip_crops")
    with torch.no_grad():
        out = calibrated_probabilities(small_net(), images(height=16, width=16), tta="flip_crops")
    assert out.shape == (4, 5)


# ------------------------------------------------------------------ ScoreHead
@pytest.mark.parametrize("tta", ["none", "flip", "flip_crops"])
def test_score_head_probabilities_equal_calibrated_probabilities(tta):
    net, x = small_net(), images()
    head = ScoreHead(net, temperature=1.5, tta=tta, probabilities=True).eval()
    with torch.no_grad():
        out = head(x)
        expected = calibrated_probabilities(net, x, temperature=1.5, tta=tta)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    torch.testing.assert_close(out, mean_softmax(net, tta_views(x, tta), 1.5), rtol=0, atol=1e-6)
    torch.testing.assert_close(out.sum(dim=1), torch.ones(4), rtol=0, atol=1e-6)


def test_score_head_logits_equal_calibrated_logits():
    net, x = small_net(), images()
    with torch.no_grad():
        out = ScoreHead(net, temperature=0.7, tta="flip")(x)
        expected = calibrated_logits(net, x, temperature=0.7, tta="flip")
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_score_head_multilabel_probabilities_are_mean_sigmoids():
    net, x = small_net(), images()
    with torch.no_grad():
        out = ScoreHead(net, task="multilabel", tta="flip", probabilities=True)(x)
    torch.testing.assert_close(out, mean_sigmoid(net, [x, x.flip(-1)]), rtol=0, atol=1e-6)


def test_score_head_refuses_bad_settings():
    with pytest.raises(ValueError, match="`tta`"):
        ScoreHead(small_net(), tta="mirror")
    with pytest.raises(ValueError, match="`task`"):
        ScoreHead(small_net(), task="binary")


# ------------------------------------------------------------------ one batch
@pytest.mark.parametrize("tta", ["none", "flip", "flip_crops"])
def test_the_views_go_through_the_model_as_one_batch(tta):
    net, x = Counting(small_net()), images(n=3, height=32, width=40)
    with torch.no_grad():
        calibrated_probabilities(net, x, tta=tta)
    assert net.calls == [(TTA_VIEWS[tta] * 3, 3, 32, 40)]

    net.calls.clear()
    with torch.no_grad():
        ScoreHead(net, tta=tta)(x)
    assert net.calls == [(TTA_VIEWS[tta] * 3, 3, 32, 40)]


# ------------------------------------------------------------------ ImageClassifier
def test_image_classifier_predicts_with_its_tta_and_temperature():
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False).eval()
    x = images(n=3, height=32, width=40)
    model.temperature = 0.5
    model.tta = "flip_crops"
    assert model.tta == "flip_crops"
    with torch.no_grad():
        out = model.predict_step(x, 0)
        plain = calibrated_probabilities(model, x, temperature=0.5)
    expected = mean_softmax(model, views_32x40(x), 0.5)
    torch.testing.assert_close(out["probs"], expected, rtol=0, atol=1e-6)
    assert (out["probs"] - plain).abs().max() > 1e-4  # the views made a difference
    assert torch.equal(out["preds"], expected.argmax(dim=1))
    with pytest.raises(ValueError, match="`tta`"):
        model.tta = "mirror"
    assert model.tta == "flip_crops"
