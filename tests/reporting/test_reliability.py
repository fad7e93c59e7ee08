"""Reliability diagrams: the bins are torchmetrics' own, so the diagram's ECE is the ECE training logs."""

import numpy as np
import pytest
import torch
from PIL import Image
from torchmetrics.functional.classification import multiclass_calibration_error

from lightning_cv.reporting.reliability import reliability_bins, write_reliability_diagram


def _over_confident(n=600, classes=4):
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(n, classes, generator=generator) * 12  # many rows at a top probability of exactly 1.0
    targets = torch.randint(0, classes, (n,), generator=generator)
    targets[: n // 2] = logits[: n // 2].argmax(1)  # right half the time
    return logits.softmax(1), targets


@pytest.mark.parametrize("bins", [5, 10, 15])
def test_the_bins_give_torchmetrics_ece(bins):
    probs, targets = _over_confident()
    assert (probs.max(1).values == 1.0).sum() > 10  # the edge case the bins must treat as torchmetrics does
    found = reliability_bins(probs, targets, bins)
    ece = float(np.nansum(found["count"] * abs(found["accuracy"] - found["confidence"])) / found["count"].sum())
    expected = multiclass_calibration_error(probs, targets, num_classes=4, n_bins=bins, norm="l1")
    assert ece == pytest.approx(float(expected), abs=1e-6)
    assert found["count"].sum() == len(targets)


def test_the_diagram_is_a_png_with_a_panel_each(tmp_path):
    probs, targets = _over_confident()
    path = write_reliability_diagram(tmp_path / "r.png", [("a", probs), ("b", probs.sqrt())], targets, title="t")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > image.height  # two panels side by side


def test_a_top_probability_of_exactly_one_has_its_own_bin_as_in_torchmetrics():
    # sure and wrong at exactly 1.0, right at 0.95: one bin for both would let the errors cancel
    probs = torch.tensor([[1.0, 0.0]] * 10 + [[0.95, 0.05]] * 10)
    targets = torch.tensor([1] * 10 + [0] * 10)
    found = reliability_bins(probs, targets, bins=15)
    assert found["count"][15] == 10 and found["accuracy"][15] == 0.0
    ece = float(np.nansum(found["count"] * abs(found["accuracy"] - found["confidence"])) / found["count"].sum())
    assert ece == pytest.approx(float(multiclass_calibration_error(probs, targets, num_classes=2, n_bins=15)), abs=1e-6)
    assert ece == pytest.approx((10 * 1.0 + 10 * 0.05) / 20, abs=1e-6)
