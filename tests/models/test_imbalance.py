"""ImageClassifier's options for imbalanced classes: class weights, the focal loss and logit adjustment."""

import pytest
import torch
import torch.nn.functional as F

from lightning_cv import ImageClassifier
from tests.conftest import make_loader, tiny_trainer


class ClassCounts:
    """What ImageDataModule.label_counts gives for 100 training images: 70, 20 and 10 per class."""

    def label_counts(self, split):
        assert split == "train"
        return torch.tensor([70.0, 20.0, 10.0]), 100


def model_with_counts(tmp_path, **kwargs) -> ImageClassifier:
    model = ImageClassifier(backbone="test_resnet", pretrained=False, num_classes=3, **kwargs)
    trainer = tiny_trainer(tmp_path, max_steps=1)
    trainer.datamodule = ClassCounts()
    model.trainer = trainer
    model.on_fit_start()
    model.log = lambda *args, **kw: None
    return model.eval()  # eval: the step's logits equal a second forward pass


def test_balanced_class_weights_are_inverse_frequency_with_mean_one_and_reach_the_loss(tmp_path):
    model = model_with_counts(tmp_path, class_weights="balanced", label_smoothing=0.1)
    inverse = torch.tensor([1 / 70, 1 / 20, 1 / 10])
    torch.testing.assert_close(model.class_weights, inverse / inverse.mean())
    images, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 0, 1, 2, 0, 1])
    loss = model.training_step((images, labels), 0)
    with torch.no_grad():
        expected = F.cross_entropy(model(images), labels, weight=model.class_weights, label_smoothing=0.1)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_logit_adjustment_trains_on_logits_plus_tau_log_prior(tmp_path):
    model = model_with_counts(tmp_path, logit_adjustment=0.5)
    torch.testing.assert_close(model.log_prior, torch.tensor([0.7, 0.2, 0.1]).log())
    images, labels = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 2])
    loss = model.training_step((images, labels), 0)
    with torch.no_grad():
        logits = model(images)
    expected = F.cross_entropy(logits + 0.5 * torch.tensor([0.7, 0.2, 0.1]).log(), labels)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    with torch.no_grad():  # inference is unchanged: predictions come from the plain logits
        out = model.predict_step(images, 0)
    torch.testing.assert_close(out["probs"], logits.softmax(1))


def test_focal_loss_with_weights_and_mixed_targets(tmp_path):
    model = model_with_counts(tmp_path, loss="focal", loss_kwargs={"gamma": 1.5}, class_weights=[1.0, 2.0, 4.0])
    images = torch.randn(4, 3, 32, 32)
    soft = torch.tensor([[0.6, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.3, 0.7], [1.0, 0.0, 0.0]])
    loss = model.training_step((images, soft), 0)
    with torch.no_grad():
        p = model(images).softmax(1)
    expected = -(torch.tensor([1.0, 2.0, 4.0]) * soft * (1 - p) ** 1.5 * p.log()).sum(1).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs",
    [{"class_weights": "balanced"}, {"loss": "focal"}, {"logit_adjustment": 1.0}],
    ids=["class_weights", "focal", "logit_adjustment"],
)
def test_each_option_trains_with_a_data_module(tmp_path, kwargs):
    from lightning_cv import ImageDataModule

    data = ImageDataModule(dataset="shapes", image_size=32, batch_size=8, num_workers=0, auto_augment="none",
                           mixup_alpha=0.2, dataset_kwargs={"num_train": 24, "num_val": 12, "num_test": 6,
                                                            "image_size": 32})  # fmt: skip
    model = ImageClassifier(backbone="test_resnet", pretrained=False, num_classes=6, label_smoothing=0.1, **kwargs)
    trainer = tiny_trainer(tmp_path, max_epochs=1)
    trainer.fit(model, data)
    assert torch.isfinite(trainer.callback_metrics["train_loss_epoch"])


def test_balanced_weights_without_a_data_module_name_the_fix(tmp_path):
    model = ImageClassifier(backbone="test_resnet", pretrained=False, num_classes=3, class_weights="balanced")
    with pytest.raises(ValueError, match="`class_weights='balanced'` counts the training labels"):
        tiny_trainer(tmp_path, max_steps=1).fit(model, make_loader())


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_weights": [1.0, 2.0]}, r"one positive number per class \(3\)"),
        ({"class_weights": [1.0, -2.0, 1.0]}, "one positive number per class"),
        ({"class_weights": "inverse"}, "'balanced', a list of numbers or None"),
        ({"logit_adjustment": -1.0}, "number >= 0"),
        ({"loss": "focal", "loss_kwargs": {"gamma_neg": 2}}, r"Unknown `loss_kwargs` \['gamma_neg'\]"),
        ({"loss": "focal", "task": "multilabel"}, "is for one class per image"),
        ({"class_weights": "balanced", "task": "multilabel"}, "`pos_weight` instead"),
        ({"logit_adjustment": 1.0, "task": "multilabel"}, "is for one class per image"),
    ],
)
def test_bad_imbalance_options_name_the_fix(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageClassifier(backbone="test_resnet", pretrained=False, num_classes=3, **kwargs)


def test_the_command_line_takes_every_imbalance_option(capsys):
    import yaml

    from lightning_cv.cli import main

    args = ["fit", "--model.class_weights=balanced", "--model.loss=focal", "--model.loss_kwargs={gamma: 1.5}",
            "--model.logit_adjustment=1", "--data.balanced_sampler=true", "--print_config"]  # fmt: skip
    try:
        main(args)
    except SystemExit as exit_info:
        assert exit_info.code in (0, None)
    model = yaml.safe_load(capsys.readouterr().out)["model"]
    assert (model["class_weights"], model["loss"], model["logit_adjustment"]) == ("balanced", "focal", 1.0)
    assert model["loss_kwargs"] == {"gamma": 1.5}
