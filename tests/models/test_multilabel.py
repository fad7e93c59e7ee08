"""ImageClassifier(task="multilabel"): metrics against independent computations, threshold tuning, training."""

import itertools
import math

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier
from lightning_cv.callbacks import EMA
from lightning_cv.models.loss_weights import resolve_loss_weights
from lightning_cv.models.multilabel_metrics import MultilabelMetrics
from lightning_cv.models.thresholds import tune_thresholds
from tests.conftest import tiny_trainer


def average_precision(scores: list[float], truth: list[int]) -> float:
    """AP as scikit-learn defines it: the mean of the precision at the rank of each positive (ties counted together)."""
    positives = sum(truth)
    total = 0.0
    for score, is_positive in zip(scores, truth, strict=True):
        if not is_positive:
            continue
        predicted = [t for s, t in zip(scores, truth, strict=True) if s >= score]
        total += sum(predicted) / len(predicted)
    return total / positives


def f1(predicted: list[bool], truth: list[int]) -> float:
    tp = sum(p and t for p, t in zip(predicted, truth, strict=True))
    fp = sum(p and not t for p, t in zip(predicted, truth, strict=True))
    fn = sum(t and not p for p, t in zip(predicted, truth, strict=True))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def test_metrics_match_an_independent_computation():
    g = torch.Generator().manual_seed(0)
    scores = torch.rand(40, 4, generator=g)
    targets = (torch.rand(40, 4, generator=g) < 0.4).long()
    targets[:, 3] = 0  # a label without positives is left out of the mAP
    thresholds = torch.tensor([0.3, 0.5, 0.7, 0.5])
    metrics = MultilabelMetrics(4, prefix="test_")
    for rows in (slice(0, 15), slice(15, 40)):  # two batches
        metrics.update(scores[rows], targets[rows], thresholds)
    values = metrics.compute()

    aps = [average_precision(scores[:, c].tolist(), targets[:, c].tolist()) for c in range(3)]
    assert values["test_map"].item() == pytest.approx(sum(aps) / 3, abs=1e-6)
    decided = scores >= thresholds
    per_label_f1 = [f1(decided[:, c].tolist(), targets[:, c].tolist()) for c in range(4)]
    assert values["test_f1"].item() == pytest.approx(sum(per_label_f1) / 4, abs=1e-6)
    all_decided, all_truth = decided.flatten().tolist(), targets.flatten().tolist()
    assert values["test_f1_micro"].item() == pytest.approx(f1(all_decided, all_truth), abs=1e-6)
    exact = sum(bool((decided[i] == targets[i].bool()).all()) for i in range(40)) / 40
    assert values["test_subset_acc"].item() == pytest.approx(exact)
    assert values["test_hamming"].item() == pytest.approx(float((decided != targets.bool()).float().mean()))

    rows = metrics.per_label(metrics.compute_all(), thresholds, ["a", "b", "c", "d"])
    assert [r["class"] for r in rows] == ["a", "b", "c", "d"]
    assert [r["support"] for r in rows] == targets.sum(0).tolist()
    assert rows[1]["ap"] == pytest.approx(aps[1], abs=1e-6)
    assert rows[2]["f1"] == pytest.approx(per_label_f1[2], abs=1e-6)
    assert math.isnan(rows[3]["ap"]) and rows[0]["threshold"] == pytest.approx(0.3)


def test_tuned_thresholds_maximise_f1_on_a_constructed_case():
    # label 0: positives at 0.8 and 0.7, a negative between them and the rest: any cut in (0.6, 0.7] is best (F1 1);
    # label 1: no positive, falls back to 0.5; label 2: tied scores are decided together
    scores = torch.tensor([[0.8, 0.1, 0.9], [0.7, 0.2, 0.4], [0.6, 0.3, 0.4], [0.2, 0.4, 0.1], [0.65, 0.9, 0.05]])
    targets = torch.tensor([[1, 0, 1], [1, 0, 1], [0, 0, 0], [0, 0, 0], [0, 0, 0]])
    scores[4, 0] = 0.55
    thresholds, best = tune_thresholds(scores, targets)
    assert 0.6 < thresholds[0] <= 0.7 and best[0] == pytest.approx(1.0)
    assert thresholds[1] == 0.5 and math.isnan(best[1])
    # brute force over every threshold: none beats the tuned one, for every label with positives
    for c in (0, 2):
        candidates = sorted(set(scores[:, c].tolist()))
        brute = max(f1((scores[:, c] >= t).tolist(), targets[:, c].tolist()) for t in candidates)
        tuned = f1((scores[:, c] >= thresholds[c]).tolist(), targets[:, c].tolist())
        assert tuned == pytest.approx(brute) == pytest.approx(best[c].item())


def test_tuned_thresholds_on_random_cases_match_brute_force():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        scores = (torch.rand(30, 3, generator=g) * 10).round() / 10  # many ties
        targets = (torch.rand(30, 3, generator=g) < 0.3).long()
        thresholds, _ = tune_thresholds(scores, targets)
        for c in range(3):
            if targets[:, c].sum() == 0:
                continue
            brute = max(
                f1((scores[:, c] >= t).tolist(), targets[:, c].tolist()) for t in set(scores[:, c].tolist())
            )
            assert f1((scores[:, c] >= thresholds[c]).tolist(), targets[:, c].tolist()) == pytest.approx(brute)


def multilabel_loader(num_samples: int = 48, seed: int = 0, batch_size: int = 16, shuffle: bool = False) -> DataLoader:
    """Images whose labels shift the mean of one colour channel each, so a tiny model can learn them."""
    g = torch.Generator().manual_seed(seed)
    targets = (torch.rand(num_samples, 3, generator=g) < 0.4).float()
    images = torch.randn(num_samples, 3, 32, 32, generator=g) * 0.5 + 1.5 * targets.view(-1, 3, 1, 1) - 0.6
    return DataLoader(TensorDataset(images, targets), batch_size=batch_size, shuffle=shuffle)


def multilabel_model(**kwargs) -> ImageClassifier:
    settings = dict(backbone="test_resnet", pretrained=False, num_classes=3, class_names=["red", "green", "blue"],
                    task="multilabel", lr=0.01, scheduler="constant")  # fmt: skip
    return ImageClassifier(**{**settings, **kwargs})


def test_fit_tunes_thresholds_and_the_checkpoint_carries_them(tmp_path):
    torch.manual_seed(0)
    model = multilabel_model()
    trainer = tiny_trainer(tmp_path, max_epochs=6, enable_checkpointing=True)
    trainer.fit(model, multilabel_loader(shuffle=True), multilabel_loader(num_samples=32, seed=1))
    # baseline: a model that ranks at random scores the label frequency as AP (about 0.4 here)
    assert trainer.callback_metrics["val_map"] > 0.85
    tuned = model.thresholds.clone()
    assert not torch.equal(tuned, torch.full((3,), 0.5))  # tuned at the last validation
    # the tuned thresholds are the F1-maximising ones of the final weights' validation scores
    images, targets = multilabel_loader(num_samples=32, seed=1).dataset.tensors
    model.eval()
    with torch.no_grad():
        scores = model(images).sigmoid()
    torch.testing.assert_close(tuned, tune_thresholds(scores, targets)[0])

    path = trainer.checkpoint_callback.best_model_path
    loaded = ImageClassifier.load_from_checkpoint(path)
    assert loaded.hparams["task"] == "multilabel"
    torch.testing.assert_close(loaded.thresholds, tuned)
    given = ImageClassifier.load_from_checkpoint(path, thresholds=[0.2, 0.3, 0.4])  # the user's values win
    torch.testing.assert_close(given.thresholds, torch.tensor([0.2, 0.3, 0.4]))

    result = trainer.test(loaded, multilabel_loader(num_samples=32, seed=1), verbose=False)[0]
    decided = scores >= tuned
    expected_f1 = sum(f1(decided[:, c].tolist(), targets[:, c].long().tolist()) for c in range(3)) / 3
    assert result["test_f1"] == pytest.approx(expected_f1, abs=1e-5)
    table = (tmp_path / "per_class_test.md").read_text()
    assert "| red |" in table and "threshold" in table
    assert (tmp_path / "per_class_test.csv").read_text().splitlines()[0].startswith('"class","support","ap"')

    out = trainer.predict(loaded, DataLoader(images[:5], batch_size=5))[0]
    assert out["probs"].shape == (5, 3) and out["preds"].dtype == torch.bool
    torch.testing.assert_close(out["probs"], scores[:5], atol=1e-5, rtol=0)
    assert torch.equal(out["preds"], scores[:5] >= tuned)
    names = ["red", "green", "blue"]
    assert out["labels"] == [[n for n, d in zip(names, row, strict=True) if d] for row in out["preds"]]


def test_fixed_thresholds_are_never_tuned(tmp_path):
    model = multilabel_model(thresholds=0.35)
    tiny_trainer(tmp_path, max_epochs=1).fit(model, multilabel_loader(), multilabel_loader(seed=1))
    torch.testing.assert_close(model.thresholds, torch.full((3,), 0.35))


def test_ema_leaves_the_thresholds_alone(tmp_path):
    torch.manual_seed(0)
    model = multilabel_model()
    trainer = tiny_trainer(tmp_path, max_epochs=2, callbacks=[EMA(decay=0.5, warmup=False)])
    trainer.fit(model, multilabel_loader(), multilabel_loader(seed=1))
    images, targets = multilabel_loader(seed=1).dataset.tensors
    model.eval()  # the module holds the average after fit: the thresholds are the ones tuned for it
    with torch.no_grad():
        scores = model(images).sigmoid()
    torch.testing.assert_close(model.thresholds, tune_thresholds(scores, targets)[0])


class LabelCounts:
    def label_counts(self, split):
        assert split == "train"
        return torch.tensor([10.0, 40.0, 0.0]), 50


def test_balanced_pos_weight_comes_from_the_label_counts(tmp_path):
    model = multilabel_model(pos_weight="balanced")
    trainer = tiny_trainer(tmp_path, max_steps=1)
    trainer.datamodule = LabelCounts()  # what ImageDataModule provides
    model.trainer = trainer
    resolve_loss_weights(model)  # what on_fit_start does
    torch.testing.assert_close(model.pos_weight, torch.tensor([4.0, 0.25, 1.0]))

    images, targets = multilabel_loader().dataset.tensors
    model.pos_weight = torch.tensor([4.0, 0.25, 1.0])
    model.log = lambda *args, **kwargs: None
    model.eval()
    loss = model.training_step((images, targets), 0)
    with torch.no_grad():
        logits = model(images)
    p = logits.sigmoid()
    manual = -(torch.tensor([4.0, 0.25, 1.0]) * targets * p.log() + (1 - targets) * (1 - p).log()).mean()
    assert loss.item() == pytest.approx(manual.item(), rel=1e-5)


def test_balanced_pos_weight_without_label_counts_is_a_clear_error(tmp_path):
    model = multilabel_model(pos_weight="balanced")
    with pytest.raises(ValueError, match="label_counts"):
        tiny_trainer(tmp_path, max_steps=1).fit(model, multilabel_loader())


def test_a_multilabel_model_given_class_indices_says_so(tmp_path):
    model = multilabel_model()
    model.log = lambda *args, **kwargs: None
    with pytest.raises(ValueError, match="one 0/1 column per class"):
        model.training_step((torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 0])), 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"task": "multi-label"}, "Expected `task` to be one of 'multiclass', 'multilabel'"),
        ({"task": "multiclass", "loss": "bce"}, "applies to multi-label models only"),
        ({"task": "multiclass", "thresholds": 0.5}, "--model.task multilabel"),
        ({"loss": "cross_entropy"}, "use `loss='bce'`"),
        ({"thresholds": [0.5, 0.5]}, "one threshold per class"),
        ({"thresholds": 1.5}, r"in \[0, 1\]"),
        ({"pos_weight": [1.0, -1.0, 2.0]}, "one positive number per class"),
        ({"pos_weight": "inverse"}, "'balanced', a list of numbers or None"),
        ({"loss": "asl", "pos_weight": "balanced"}, "Drop one of the two"),
        ({"loss_kwargs": {"gamma_neg": 2}}, "`loss='asl'`"),
        ({"loss": "asl", "loss_kwargs": {"gamma": 2}}, "Unknown `loss_kwargs`"),
        ({"loss": "asl", "loss_kwargs": {"clip": 1.0}}, "< 1"),
    ],
)
def test_bad_multilabel_arguments_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        multilabel_model(**kwargs)


def test_asl_trains_and_thresholds_setter_checks(tmp_path):
    torch.manual_seed(0)
    model = multilabel_model(loss="asl", loss_kwargs={"gamma_neg": 2.0})
    trainer = tiny_trainer(tmp_path, max_epochs=4)
    trainer.fit(model, multilabel_loader(shuffle=True), multilabel_loader(num_samples=32, seed=1))
    assert trainer.callback_metrics["val_map"] > 0.8
    model.thresholds = 0.25
    torch.testing.assert_close(model.thresholds, torch.full((3,), 0.25))
    with pytest.raises(ValueError, match="one threshold per class"):
        model.thresholds = [0.1]
    with pytest.raises(ValueError, match="multi-label models"):
        ImageClassifier(backbone="test_resnet", pretrained=False, num_classes=3).thresholds = 0.5


def test_every_combination_of_targets_reaches_the_per_label_table():
    # all 8 label sets of 3 labels once: every label has 4 positives
    targets = torch.tensor(list(itertools.product([0, 1], repeat=3)))
    metrics = MultilabelMetrics(3)
    metrics.update(targets.float() * 0.8 + 0.1, targets, torch.full((3,), 0.5))
    rows = metrics.per_label(metrics.compute_all(), torch.full((3,), 0.5))
    assert [r["support"] for r in rows] == [4, 4, 4]
    assert all(r["ap"] == pytest.approx(1.0) and r["f1"] == pytest.approx(1.0) for r in rows)


def test_a_threshold_between_adjacent_float32_scores_still_separates_them():
    # two confident scores one float32 step apart: no float32 lies between them, so the midpoint would round onto
    # the lower (negative) one and predict it too
    high = torch.nextafter(torch.tensor(1.0 - 2**-22), torch.tensor(0.0))  # odd mantissa: halfway rounds down
    low = torch.nextafter(high, torch.tensor(0.0))
    assert float(torch.tensor((float(high) + float(low)) / 2, dtype=torch.float32)) == float(low)
    scores = torch.stack([high, low, torch.tensor(0.1)]).view(3, 1)
    targets = torch.tensor([[1], [0], [0]])
    thresholds, best = tune_thresholds(scores, targets)
    decided = scores[:, 0] >= thresholds[0]
    assert decided.tolist() == [True, False, False] and best[0] == 1.0


def test_assigning_thresholds_fixes_them_for_the_next_fit(tmp_path):
    model = multilabel_model()
    model.thresholds = [0.3, 0.4, 0.6]
    assert model.hparams["thresholds"] == pytest.approx([0.3, 0.4, 0.6])
    tiny_trainer(tmp_path, max_epochs=1).fit(model, multilabel_loader(), multilabel_loader(seed=1))
    torch.testing.assert_close(model.thresholds, torch.tensor([0.3, 0.4, 0.6]))
    with pytest.raises(ValueError, match="thresholds=None"):
        model.thresholds = None


def test_val_f1_tuned_is_the_f1_of_the_thresholds_the_checkpoint_carries(tmp_path):
    torch.manual_seed(0)
    model = multilabel_model()
    trainer = tiny_trainer(tmp_path, max_epochs=2)
    trainer.fit(model, multilabel_loader(shuffle=True), multilabel_loader(num_samples=32, seed=1))
    images, targets = multilabel_loader(num_samples=32, seed=1).dataset.tensors
    model.eval()
    with torch.no_grad():
        decided = model(images).sigmoid() >= model.thresholds
    per_label = [f1(decided[:, c].tolist(), targets[:, c].long().tolist()) for c in range(3)]
    assert float(trainer.callback_metrics["val_f1_tuned"]) == pytest.approx(sum(per_label) / 3, abs=1e-5)
    assert "test_f1_tuned" not in trainer.test(model, multilabel_loader(num_samples=32, seed=1), verbose=False)[0]
