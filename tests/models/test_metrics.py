import numpy as np
import pytest
import torch
import torchmetrics.functional.classification as tmf
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_cv import ImageClassifier
from lightning_cv.models.metrics import confusion_matrix_figure, confusion_matrix_image
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


def test_confusion_matrix_logged_as_image_to_tensorboard(tmp_path):
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


def cell_colours(image, n, cell):
    """The colour at the centre-left of each cell (clear of the count written in its middle), ``(n, n, 3)``."""
    grid = image[-n * cell - 4 : image.shape[0] - 4, -n * cell - 4 : image.shape[1] - 4]
    return grid[cell // 2 :: cell, 2::cell][:n, :n]


def test_confusion_matrix_image_shades_cells_by_count_and_writes_the_counts():
    counts = torch.tensor([[9, 0, 3], [0, 6, 0], [1, 0, 9]])
    image = confusion_matrix_image(counts, ["cat", "dog", "a bird with a long name"])
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    colours = cell_colours(image, 3, 40).astype(int)
    brightness = colours.sum(axis=2)
    order = np.argsort(-counts.flatten().numpy(), kind="stable")  # more images, darker cell
    assert (np.diff(brightness.flatten()[order]) >= 0).all()
    assert tuple(colours[0, 1]) == (247, 251, 255) and tuple(colours[0, 0]) == (8, 48, 107)  # Blues: none, most
    cell = image[-3 * 40 - 4 : -4, -3 * 40 - 4 : -4][:40, :40]
    assert (cell.min(axis=2) > 200).sum() > 10  # the count 9 in white on the darkest cell
    no_names = confusion_matrix_image(counts)
    assert no_names.shape[1] < image.shape[1]  # the long name takes a wider margin than "2"
    row_names = image[-3 * 40 - 4 : -4, : -3 * 40 - 4]
    assert [(row_names[k * 40 : (k + 1) * 40].max(axis=2) < 100).any() for k in range(3)] == [True] * 3


def test_confusion_matrix_image_of_many_classes_stays_bounded():
    image = confusion_matrix_image(torch.eye(500, dtype=torch.long))
    assert image.shape == (1500, 1500, 3)  # 3 px cells, no room for names


def test_confusion_matrix_image_rejects_bad_input():
    with pytest.raises(ValueError, match=r"Expected a square \(C, C\) confusion matrix, but got shape \(2, 3\)"):
        confusion_matrix_image(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"Expected one class name per row of the matrix \(2\), but got 3"):
        confusion_matrix_image(torch.zeros(2, 2), ["a", "b", "c"])
