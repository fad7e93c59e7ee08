import pytest
import torch
import torchmetrics.functional.classification as tmf
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_cv import ImageClassifier
from lightning_cv.models.metrics import confusion_matrix_figure
from tests.conftest import make_loader, tiny_trainer


def predictions(model, loader):
    model.eval()
    with torch.no_grad():
        probs = torch.cat([model(x).softmax(1) for x, _ in loader])
    return probs, torch.cat([y for _, y in loader])


@pytest.mark.parametrize(("num_classes", "top_k", "k"), [(4, 2, 2), (3, 5, 2)])  # k capped at num_classes - 1
def test_validation_metrics_match_torchmetrics_functional(tmp_path, num_classes, top_k, k):
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone="test_resnet", num_classes=num_classes, pretrained=False, top_k=top_k, calibration_bins=10
    )
    loader = make_loader(num_samples=36, num_classes=num_classes, batch_size=5)  # uneven last batch
    metrics = tiny_trainer(tmp_path).validate(model, loader, verbose=False)[0]
    probs, target = predictions(model, loader)
    expected = {
        "val_acc": tmf.multiclass_accuracy(probs, target, num_classes, average="micro"),
        f"val_acc_top{k}": tmf.multiclass_accuracy(probs, target, num_classes, top_k=k, average="micro"),
        "val_precision": tmf.multiclass_precision(probs, target, num_classes, average="macro"),
        "val_recall": tmf.multiclass_recall(probs, target, num_classes, average="macro"),
        "val_f1": tmf.multiclass_f1_score(probs, target, num_classes, average="macro"),
        "val_ece": tmf.multiclass_calibration_error(probs, target, num_classes, n_bins=10),
        "val_loss": torch.nn.functional.cross_entropy(probs.log(), target),
    }
    assert set(expected) <= set(metrics)
    for name, value in expected.items():
        assert metrics[name] == pytest.approx(value.item(), abs=1e-5), name
    torch.testing.assert_close(model.confusion_matrix, tmf.multiclass_confusion_matrix(probs, target, num_classes))
    assert model.confusion_matrix.sum() == 36


def test_test_metrics_use_their_own_prefix(tmp_path):
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    metrics = tiny_trainer(tmp_path).test(model, make_loader(), verbose=False)[0]
    assert {"test_acc", "test_f1", "test_loss", "test_acc_top2"} <= set(metrics)


def test_no_top_k_metric_for_two_classes():
    model = ImageClassifier(backbone="test_resnet", num_classes=2, pretrained=False)
    assert not any("top" in name for name in model.val_metrics)


def test_confusion_matrix_logged_as_figure_to_tensorboard(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False, class_names=["a", "b", "c"])
    logger = TensorBoardLogger(str(tmp_path), name="tb")
    tiny_trainer(tmp_path, logger=logger, max_epochs=1).fit(model, make_loader(), make_loader())
    events = EventAccumulator(logger.log_dir)
    events.Reload()
    assert "val_confusion_matrix" in events.Tags()["images"]
    assert {"train_loss_epoch", "val_acc", "val_loss"} <= set(events.Tags()["scalars"])


def test_confusion_matrix_figure_has_class_names():
    fig = confusion_matrix_figure(torch.tensor([[3, 1], [0, 4]]), ["cat", "dog"])
    labels = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert labels == ["cat", "dog"]
    texts = sorted(t.get_text() for t in fig.axes[0].texts)
    assert texts == ["0", "1", "3", "4"]
