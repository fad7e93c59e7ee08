"""Lightning's "modules in eval mode" warning: hidden for frozen layers during their own fit, no filter left behind."""

import warnings

import pytest

from lightning_cv import ImageClassifier
from tests.conftest import make_loader, tiny_trainer

EVAL_MODE = "module(s) in eval mode at the start of training"


def fit_and_record(tmp_path, model, **trainer_kwargs):
    """The warnings a fit shows, and the process's warning filters before and after it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        try:
            tiny_trainer(tmp_path, **trainer_kwargs).fit(model, make_loader(num_samples=8), make_loader(num_samples=8))
        finally:
            after = list(warnings.filters)
    return [str(w.message) for w in caught if EVAL_MODE in str(w.message)], before, after


def frozen(**kwargs):
    return ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True, **kwargs)


class WithoutFilter(ImageClassifier):
    def configure_callbacks(self):
        return []


def test_hidden_for_a_frozen_model_and_no_filter_left(tmp_path):
    shown, before, after = fit_and_record(tmp_path, frozen())
    assert shown == [] and after == before


def test_lightning_still_warns_without_the_filter(tmp_path):
    """The control: if Lightning stops warning (or words it differently), the test above proves nothing."""
    model = WithoutFilter(backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True)
    shown, _, _ = fit_and_record(tmp_path, model)
    assert len(shown) == 1 and shown[0].startswith("Found ")


def test_a_model_without_frozen_layers_still_gets_the_warning(tmp_path):
    fit_and_record(tmp_path / "first", frozen())  # nothing of the frozen model's fit stays in force
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    model.model.layer1.eval()  # an eval-mode module nobody asked for: worth a warning
    shown, _, _ = fit_and_record(tmp_path / "second", model)
    assert len(shown) == 1


class FailsSanityCheck(ImageClassifier):
    def validation_step(self, batch, batch_idx):
        raise RuntimeError("broken validation_step")


def test_no_filter_left_when_the_fit_fails_before_training(tmp_path):
    model = FailsSanityCheck(backbone="test_resnet", num_classes=3, pretrained=False, freeze_backbone=True)
    with warnings.catch_warnings():
        before = list(warnings.filters)
        with pytest.raises(RuntimeError, match="broken validation_step"):
            loader = make_loader(num_samples=8)
            tiny_trainer(tmp_path, num_sanity_val_steps=1).fit(model, loader, loader)
        assert list(warnings.filters) == before
