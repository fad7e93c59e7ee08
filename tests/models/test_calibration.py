"""Temperature scaling and the reject threshold: fit_temperature, figures, coverage, Calibration, ImageClassifier."""

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from lightning_cv import ImageClassifier
from lightning_cv.models.calibration import (
    UNKNOWN,
    Calibration,
    calibration_figures,
    check_coverage,
    check_min_confidence,
    check_temperature,
    coverage_threshold,
    fit_temperature,
    risk_coverage,
)

OLD_CHECKPOINT = Path(__file__).parents[1] / "fixtures" / "checkpoint_2026_11" / "last.ckpt"
#: the over-confidence factor of :func:`overconfident`: the logits are 4 times those of the model the labels follow
SCALE = 4.0


@pytest.fixture(scope="module")
def overconfident() -> tuple[torch.Tensor, torch.Tensor]:
    """(2000, 5) logits 4x too sure: labels are drawn from softmax(z), the logits given are 4 z."""
    g = torch.Generator().manual_seed(0)
    features = torch.randn(2000, 8, generator=g)
    weights = torch.randn(8, 5, generator=g)
    base = (features @ weights) * 0.5
    labels = torch.multinomial(base.softmax(dim=1), 1, generator=g).squeeze(1)
    return (SCALE * base).float(), labels


def grid_nll(logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> float:
    return float(F.cross_entropy(logits.double() / temperature, labels))


def grid_nlls(logits: torch.Tensor, labels: torch.Tensor, temperatures: torch.Tensor) -> torch.Tensor:
    """``F.cross_entropy(logits / T, labels)`` for each T, 250 temperatures per call."""
    z, n = logits.double(), len(labels)
    chunks = []
    for ts in temperatures.split(250):
        scaled = (z / ts.view(-1, 1, 1)).flatten(0, 1)  # (len(ts) * N, C)
        chunks.append(F.cross_entropy(scaled, labels.repeat(len(ts)), reduction="none").view(len(ts), n).mean(1))
    return torch.cat(chunks)


# ------------------------------------------------------------------ fit_temperature and the figures
def test_fit_temperature_agrees_with_a_grid_search_over_t(overconfident):
    logits, labels = overconfident
    grid = torch.logspace(math.log10(0.05), math.log10(20.0), 4000, dtype=torch.float64)
    nlls = grid_nlls(logits, labels, grid)
    assert float(nlls[1234]) == pytest.approx(grid_nll(logits, labels, float(grid[1234])), rel=1e-12)
    best = int(nlls.argmin())
    grid_t, grid_best_nll = float(grid[best]), float(nlls[best])
    assert 0 < best < len(grid) - 1  # an interior optimum: the grid brackets it
    log_step = math.log(float(grid[1] / grid[0]))  # the grid's resolution in log T

    fitted = fit_temperature(logits, labels)
    print(f"fit_temperature: T={fitted:.5f}   grid search: T={grid_t:.5f}")

    assert abs(math.log(fitted) - math.log(grid_t)) <= log_step
    assert grid_nll(logits, labels, fitted) <= grid_best_nll + 1e-6
    assert fitted == pytest.approx(SCALE, rel=0.1)  # the over-confidence the logits were built with


def test_fit_temperature_of_calibrated_logits_is_about_one_and_of_underconfident_ones_below_one(overconfident):
    logits, labels = overconfident
    assert fit_temperature(logits / SCALE, labels) == pytest.approx(1.0, rel=0.1)
    assert fit_temperature(logits / (2 * SCALE), labels) == pytest.approx(0.5, rel=0.1)


@pytest.mark.parametrize(
    "logits, targets",
    [
        (torch.zeros(0, 3), torch.zeros(0, dtype=torch.long)),
        (torch.zeros(4, 3), torch.zeros(5, dtype=torch.long)),
        (torch.zeros(4), torch.zeros(4, dtype=torch.long)),
        (torch.zeros(4, 3), torch.zeros(4, 1, dtype=torch.long)),
    ],
)
def test_fit_temperature_refuses_empty_or_mismatched_inputs(logits, targets):
    with pytest.raises(ValueError, match="N > 0"):
        fit_temperature(logits, targets)


def test_calibrated_ece_and_nll_are_lower_and_accuracy_is_unchanged(overconfident):
    logits, labels = overconfident
    temperature = fit_temperature(logits, labels)
    before = calibration_figures(logits, labels, 1.0)
    after = calibration_figures(logits, labels, temperature)
    print(f"ECE {before['ece']:.4f} -> {after['ece']:.4f}, NLL {before['nll']:.4f} -> {after['nll']:.4f}")

    assert after["ece"] < before["ece"] / 3  # 0.31 -> 0.03 here: a 4x over-confident model is badly calibrated
    assert after["nll"] < before["nll"]
    assert torch.equal((logits / temperature).argmax(dim=1), logits.argmax(dim=1))
    assert after["accuracy"] == before["accuracy"]
    assert before["accuracy"] == pytest.approx(float((logits.argmax(dim=1) == labels).double().mean()))


def test_calibration_figures_match_an_independent_nll_and_binned_ece(overconfident):
    logits, labels = overconfident
    temperature, bins = 2.5, 15
    figures = calibration_figures(logits, labels, temperature, bins=bins)

    z = logits.double() / temperature
    assert figures["nll"] == pytest.approx(float(-z.log_softmax(dim=1)[torch.arange(len(labels)), labels].mean()))
    confidence, predicted = z.softmax(dim=1).max(dim=1)
    correct = (predicted == labels).double()
    which = (confidence * bins).ceil().long().clamp(1, bins) - 1  # bins (k/15, (k+1)/15]
    ece = sum(
        abs(float(correct[which == k].mean() - confidence[which == k].mean())) * int((which == k).sum()) / len(labels)
        for k in range(bins)
        if (which == k).any()
    )
    assert figures["ece"] == pytest.approx(ece, abs=1e-5)


# ------------------------------------------------------------------ coverage
#: ten confidences, sorted high to low, with a tie at 0.75 (exact in float32, so the thresholds compare exactly)
CONFIDENCE = [0.96875, 0.9375, 0.875, 0.8125, 0.75, 0.75, 0.625, 0.5, 0.4375, 0.375]
CORRECT = [1, 1, 0, 1, 1, 0, 1, 0, 0, 1]
#: coverage -> (threshold, answered, accuracy), worked out by hand: answer ceil(coverage * 10) images, then every
#: image tied with the last of them
BY_HAND = {
    1.0: (0.375, 10, 6 / 10),
    0.9: (0.4375, 9, 5 / 9),
    0.8: (0.5, 8, 5 / 8),
    0.5: (0.75, 6, 4 / 6),  # 5 must be answered; the 6th ties with the 5th at 0.75, so 6 are
    0.35: (0.8125, 4, 3 / 4),  # ceil(3.5) = 4
    0.05: (0.96875, 1, 1.0),  # at least one image is always answered
}


def shuffled() -> tuple[torch.Tensor, torch.Tensor]:
    order = torch.tensor([3, 7, 0, 9, 5, 1, 8, 4, 2, 6])  # the functions must sort, not trust the order given
    return torch.tensor(CONFIDENCE)[order], torch.tensor(CORRECT, dtype=torch.bool)[order]


@pytest.mark.parametrize("coverage", list(BY_HAND))
def test_coverage_threshold_against_hand_worked_values(coverage):
    confidence, _ = shuffled()
    threshold, answered, _ = BY_HAND[coverage]
    assert coverage_threshold(confidence, coverage) == threshold
    assert int((confidence >= coverage_threshold(confidence, coverage)).sum()) == answered


def test_risk_coverage_against_hand_worked_values():
    confidence, correct = shuffled()
    rows = risk_coverage(confidence, correct, list(BY_HAND))
    assert [row["coverage"] for row in rows] == list(BY_HAND)
    for row, (threshold, answered, accuracy) in zip(rows, BY_HAND.values(), strict=True):
        assert row["min_confidence"] == threshold
        assert row["answered"] == answered
        assert row["of"] == 10
        assert row["accuracy"] == pytest.approx(accuracy)
        assert row["risk"] == pytest.approx(1 - accuracy)


def test_risk_coverage_default_coverages_answer_everything_at_full_coverage():
    confidence, correct = shuffled()
    rows = risk_coverage(confidence, correct)
    assert [row["coverage"] for row in rows] == [1.0, 0.95, 0.9, 0.8]
    assert [row["answered"] for row in rows] == [10, 10, 9, 8]  # ceil(9.5) = 10
    assert rows[0]["accuracy"] == pytest.approx(0.6)


def test_ties_at_the_cut_answer_more_not_fewer():
    confidence = torch.tensor([0.5, 0.5, 0.5, 0.5, 0.25])
    threshold = coverage_threshold(confidence, 0.2)  # one image must be answered: the four tied ones all are
    assert threshold == 0.5
    assert risk_coverage(confidence, torch.ones(5), [0.2])[0]["answered"] == 4


def test_coverage_times_count_a_hair_above_an_integer_does_not_answer_one_more():
    confidence = torch.arange(25, 0, -1).float() / 32  # 25 distinct values, exact in float32
    assert 0.28 * 25 > 7  # 7.000000000000001 in floating point: a plain ceil would answer 8
    assert coverage_threshold(confidence, 0.28) == 19 / 32  # the 7th highest
    assert risk_coverage(confidence, torch.ones(25), [0.28])[0]["answered"] == 7


@pytest.mark.parametrize("coverage", [0, 0.0, -0.5, 1.5, float("nan"), True, "0.9", None])
def test_bad_coverage_is_refused_naming_coverage(coverage):
    confidence, correct = shuffled()
    with pytest.raises(ValueError, match="`coverage`"):
        coverage_threshold(confidence, coverage)
    with pytest.raises(ValueError, match="`coverage`"):
        risk_coverage(confidence, correct, [coverage])
    with pytest.raises(ValueError, match="`coverage`"):
        check_coverage(coverage)


def test_coverage_threshold_refuses_no_images():
    with pytest.raises(ValueError, match="No images"):
        coverage_threshold(torch.zeros(0), 0.9)


def test_float64_confidences_answer_at_least_the_coverage():
    confidence = torch.tensor([0.95, 0.9, 0.85, 0.8, 0.7, 0.6, 0.55, 0.5, 0.4, 0.3], dtype=torch.float64)
    rows = risk_coverage(confidence, torch.ones(10, dtype=torch.bool), [1.0, 0.4])
    assert [row["answered"] for row in rows] == [10, 4]


# ------------------------------------------------------------------ argument checks
@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), 0, 0.0, -1.0, True, False, "2", None])
def test_check_temperature_refuses_what_is_not_a_finite_positive_number(value):
    with pytest.raises(ValueError, match="temperature"):
        check_temperature(value)


@pytest.mark.parametrize("value, expected", [(2, 2.0), (0.5, 0.5), (1e-3, 1e-3), (1.0, 1.0)])
def test_check_temperature_accepts_positive_numbers_as_floats(value, expected):
    checked = check_temperature(value)
    assert checked == expected and type(checked) is float


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf"), -0.01, 1.5, 2, True, False, "0.5"])
def test_check_min_confidence_refuses_what_is_not_a_probability(value):
    with pytest.raises(ValueError, match="`min_confidence`"):
        check_min_confidence(value)


@pytest.mark.parametrize("value, expected", [(None, None), (0, 0.0), (0.0, 0.0), (0.5, 0.5), (1, 1.0)])
def test_check_min_confidence_accepts_probabilities_and_none(value, expected):
    checked = check_min_confidence(value)
    assert checked == expected
    assert checked is None or type(checked) is float


def test_calibration_refuses_bad_values_at_construction():
    with pytest.raises(ValueError, match="temperature"):
        Calibration(temperature=0.0)
    with pytest.raises(ValueError, match="`min_confidence`"):
        Calibration(min_confidence=1.5)


# ------------------------------------------------------------------ Calibration's extra state
@pytest.mark.parametrize("temperature, min_confidence", [(2.5, 0.7), (0.8, None), (1.0, 0.0), (3.0, 1.0)])
def test_calibration_extra_state_round_trips(temperature, min_confidence):
    source = Calibration(temperature, min_confidence)
    state = source.state_dict()
    assert list(state) == ["_extra_state"]
    saved = state["_extra_state"]
    assert saved.dtype == torch.float64 and saved.shape == (2,)
    assert saved[0].item() == temperature
    assert saved[1].item() == (-1.0 if min_confidence is None else min_confidence)

    target = Calibration(temperature=7.0, min_confidence=0.3)  # other values, all overwritten by the load
    target.load_state_dict(state)
    assert target.temperature == temperature
    assert target.min_confidence == min_confidence
    assert target.calibrated is (temperature != 1.0)


@pytest.mark.parametrize(
    "state, match",
    [
        ({"temperature": 2.0, "min_confidence": 0.5}, "calibration state"),
        (torch.tensor([2.0, 0.5, 0.1], dtype=torch.float64), "calibration state"),
        (torch.tensor([[2.0, 0.5]], dtype=torch.float64), "calibration state"),
        (torch.tensor([2, 0]), "calibration state"),  # integers: not the float tensor written
        ([2.0, 0.5], "calibration state"),
        (torch.tensor([-1.0, float("nan")], dtype=torch.float64), "temperature"),
        (torch.tensor([0.0, float("nan")], dtype=torch.float64), "temperature"),
        (torch.tensor([float("inf"), 0.5], dtype=torch.float64), "temperature"),
        (torch.tensor([float("nan"), 0.5], dtype=torch.float64), "temperature"),
        (torch.tensor([1.0, 2.0], dtype=torch.float64), "`min_confidence`"),
        (torch.tensor([1.0, -0.5], dtype=torch.float64), "`min_confidence`"),
    ],
)
def test_hostile_calibration_state_is_refused_on_load(state, match):
    calibration = Calibration()
    with pytest.raises(ValueError, match=match):
        calibration.load_state_dict({"_extra_state": state})


def test_a_refused_calibration_state_leaves_the_module_unchanged():
    calibration = Calibration(temperature=1.5, min_confidence=0.4)
    with pytest.raises(ValueError):
        calibration.load_state_dict({"_extra_state": torch.tensor([2.0, 2.0], dtype=torch.float64)})
    assert (calibration.temperature, calibration.min_confidence) == (1.5, 0.4)


# ------------------------------------------------------------------ ImageClassifier
def tiny(**kwargs) -> ImageClassifier:
    torch.manual_seed(0)
    return ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, **kwargs).eval()


def test_a_new_classifier_is_uncalibrated():
    model = tiny()
    assert model.temperature == 1.0
    assert model.min_confidence is None
    assert not model.calibration.calibrated


def test_temperature_scales_predict_step_probabilities_and_keeps_the_argmax():
    model = tiny()
    images = torch.randn(6, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = model(images)
        plain = model.predict_step(images, 0)
        model.temperature = 0.05
        cooled = model.predict_step(images, 0)
    assert model.temperature == 0.05

    torch.testing.assert_close(plain["probs"], logits.softmax(dim=1), rtol=0, atol=0)
    torch.testing.assert_close(cooled["probs"], (logits / 0.05).softmax(dim=1), rtol=0, atol=0)
    assert (cooled["probs"] - plain["probs"]).abs().max() > 1e-3  # the temperature really changed them
    assert torch.equal(cooled["preds"], logits.argmax(dim=1))
    assert torch.equal(cooled["preds"], plain["preds"])
    torch.testing.assert_close(cooled["confidence"], cooled["probs"].max(dim=1).values, rtol=0, atol=0)
    with torch.no_grad():  # forward (and so training) keeps the raw logits
        torch.testing.assert_close(model(images), logits, rtol=0, atol=0)


def test_min_confidence_answers_unknown_below_it():
    model = tiny(class_names=["a", "b", "c"])
    model.temperature = 0.05  # spreads the confidences of the barely trained model apart
    images = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model.predict_step(images, 0)
    confidence = before["confidence"]
    ranked = confidence.sort().values
    threshold = float((ranked[3] + ranked[4]) / 2)  # half the rows above it, half below
    assert ranked[3] < threshold < ranked[4]

    model.min_confidence = threshold
    with torch.no_grad():
        out = model.predict_step(images, 0)

    below = confidence < threshold
    assert int(below.sum()) == 4
    expected = torch.where(below, torch.full_like(before["preds"], -1), before["preds"])
    assert torch.equal(out["preds"], expected)
    names = ["a", "b", "c"]
    pairs = zip(below.tolist(), before["preds"].tolist(), strict=True)
    assert out["class_names"] == [UNKNOWN if b else names[p] for b, p in pairs]
    assert out["class_names"].count("unknown") == 4
    torch.testing.assert_close(out["probs"], before["probs"], rtol=0, atol=0)  # the scores are unchanged
    torch.testing.assert_close(out["confidence"], confidence, rtol=0, atol=0)

    model.min_confidence = None  # answer every image again
    with torch.no_grad():
        assert torch.equal(model.predict_step(images, 0)["preds"], before["preds"])


def test_min_confidence_at_an_images_own_confidence_answers_it():
    model = tiny()
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        before = model.predict_step(images, 0)
    model.min_confidence = float(before["confidence"].max())
    with torch.no_grad():
        preds = model.predict_step(images, 0)["preds"]
    top = int(before["confidence"].argmax())
    assert preds[top] == before["preds"][top]  # conf >= threshold is answered
    assert int((preds == -1).sum()) == int((before["confidence"] < before["confidence"].max()).sum())


@pytest.mark.parametrize("value", [1.5, -0.1, float("nan"), True])
def test_bad_min_confidence_is_refused_and_leaves_the_threshold(value):
    model = tiny()
    model.min_confidence = 0.5
    with pytest.raises(ValueError, match="`min_confidence`"):
        model.min_confidence = value
    assert model.min_confidence == 0.5


@pytest.mark.parametrize("value", [0.0, -2.0, float("inf"), float("nan")])
def test_bad_temperature_is_refused_and_leaves_the_temperature(value):
    model = tiny()
    model.temperature = 2.0
    with pytest.raises(ValueError, match="temperature"):
        model.temperature = value
    assert model.temperature == 2.0


def test_multilabel_models_refuse_a_temperature_and_a_reject_threshold():
    model = tiny(task="multilabel")
    with pytest.raises(ValueError, match="multi-class"):
        model.temperature = 2.0
    with pytest.raises(ValueError, match="multi-class"):
        model.min_confidence = 0.5
    model.min_confidence = None  # nothing to set, nothing refused
    assert model.temperature == 1.0
    assert model.min_confidence is None
    assert not hasattr(model, "calibration")
    assert not any(key.startswith("calibration.") for key in model.state_dict())


def test_temperature_and_min_confidence_survive_a_state_dict_round_trip():
    model = tiny()
    model.temperature = 2.5
    model.min_confidence = 0.4
    state = model.state_dict()
    assert "calibration._extra_state" in state
    assert state["calibration._extra_state"].tolist() == [2.5, 0.4]

    fresh = tiny()
    assert fresh.temperature == 1.0
    fresh.load_state_dict(state, strict=True)
    assert fresh.temperature == 2.5
    assert fresh.min_confidence == 0.4
    images = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(fresh.predict_step(images, 0)["probs"], model.predict_step(images, 0)["probs"])


def test_a_calibrated_checkpoint_file_loads_calibrated(tmp_path):
    import lightning

    model = tiny(class_names=["a", "b", "c"])
    model.temperature = 1.75
    model.min_confidence = 0.6
    path = tmp_path / "calibrated.ckpt"
    torch.save(
        {
            "state_dict": model.state_dict(),
            "hyper_parameters": dict(model.hparams),
            "pytorch-lightning_version": lightning.__version__,
        },
        path,
    )
    loaded = ImageClassifier.load_from_checkpoint(path)
    assert loaded.temperature == 1.75
    assert loaded.min_confidence == 0.6


def test_an_old_checkpoint_without_calibration_state_loads_uncalibrated():
    checkpoint = torch.load(OLD_CHECKPOINT, map_location="cpu", weights_only=True)
    assert "calibration._extra_state" not in checkpoint["state_dict"]  # written before calibration existed
    assert not any(key.startswith("calibration") for key in checkpoint["state_dict"])

    model = ImageClassifier.load_from_checkpoint(OLD_CHECKPOINT)
    assert model.temperature == 1.0
    assert model.min_confidence is None
    assert not model.calibration.calibrated
    assert model.state_dict()["calibration._extra_state"].shape == (2,)
    weights = next(k for k in checkpoint["state_dict"] if k.endswith("weight"))
    torch.testing.assert_close(model.state_dict()[weights], checkpoint["state_dict"][weights])  # the weights did load


def test_training_resets_a_calibration_made_for_earlier_weights(tmp_path):
    from tests.conftest import make_loader, tiny_trainer

    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    model.temperature, model.min_confidence = 2.5, 0.4
    tiny_trainer(tmp_path, max_steps=1).fit(model, make_loader())
    assert (model.temperature, model.min_confidence) == (1.0, None)
