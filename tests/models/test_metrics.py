import numpy as np
import pytest
import torch
import torchmetrics.functional.classification as tmf
from lightning.pytorch.loggers import TensorBoardLogger
from torchmetrics.classification import MulticlassF1Score, MulticlassPrecision, MulticlassRecall

from lightning_cv import ImageClassifier
from lightning_cv.models.metrics import confusion_matrix_figure, confusion_matrix_image, per_class_rows
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


def test_confusion_matrix_image_not_normalised_shades_cells_by_count_and_writes_the_counts():
    counts = torch.tensor([[9, 0, 3], [0, 6, 0], [1, 0, 9]])
    image = confusion_matrix_image(counts, ["cat", "dog", "a bird with a long name"], normalize=False)
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    colours = cell_colours(image, 3, 40).astype(int)
    brightness = colours.sum(axis=2)
    order = np.argsort(-counts.flatten().numpy(), kind="stable")  # more images, darker cell
    assert (np.diff(brightness.flatten()[order]) >= 0).all()
    assert tuple(colours[0, 1]) == (247, 251, 255) and tuple(colours[0, 0]) == (8, 48, 107)  # Blues: none, most
    cell = image[-3 * 40 - 4 : -4, -3 * 40 - 4 : -4][:40, :40]
    assert (cell.min(axis=2) > 200).sum() > 10  # the count 9 in white on the darkest cell
    no_names = confusion_matrix_image(counts, normalize=False)
    assert no_names.shape[1] < image.shape[1]  # the long name takes a wider margin than "2"
    row_names = image[-3 * 40 - 4 : -4, : -3 * 40 - 4]
    assert [(row_names[k * 40 : (k + 1) * 40].max(axis=2) < 100).any() for k in range(3)] == [True] * 3


def test_confusion_matrix_image_of_many_classes_stays_bounded():
    image = confusion_matrix_image(torch.eye(500, dtype=torch.long))
    assert image.shape == (1500, 1500, 3)  # 3 px cells, no room for names


@pytest.mark.parametrize("draw", [confusion_matrix_image, per_class_rows])
def test_confusion_matrix_image_and_rows_reject_bad_input(draw):
    with pytest.raises(ValueError, match=r"Expected a square \(C, C\) confusion matrix, but got shape \(2, 3\)"):
        draw(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"Expected one class name per row of the matrix \(2\), but got 3"):
        draw(torch.zeros(2, 2), ["a", "b", "c"])
    with pytest.raises(ValueError, match=r"Expected a confusion matrix of counts, but got fractional values; pass"):
        draw(torch.tensor([[0.75, 0.25], [0.0, 1.0]]))


def test_confusion_matrix_image_shades_by_the_share_of_the_row_by_default():
    # the rare class (2 of 2 right) is as dark on the diagonal as the common one (50 of 50): the colour is the
    # share of each true class's row, not the count
    counts = torch.tensor([[50, 0, 0], [0, 2, 0], [3, 0, 1]])
    image = confusion_matrix_image(counts, ["common", "rare", "mixed"])
    colours = cell_colours(image, 3, 40).astype(int)
    darkest, white = (8, 48, 107), (247, 251, 255)
    assert tuple(colours[0, 0]) == tuple(colours[1, 1]) == darkest
    assert tuple(colours[0, 1]) == tuple(colours[1, 0]) == white
    stops = np.linspace(0, 1, 9)  # the Blues stops, so a share of 0.75 is the colour between two of them
    blues = cell_colours(confusion_matrix_image(torch.tensor([[3, 1], [0, 4]]), normalize=True), 2, 40)[0, 0]
    assert abs(int(blues.sum()) - int(np.interp(0.75, stops, [sum(c) for c in BLUES]))) <= 3
    assert colours[2, 0].sum() < colours[2, 2].sum()  # 3 of 4 darker than 1 of 4
    by_count = cell_colours(confusion_matrix_image(counts, normalize=False), 3, 40).astype(int)
    assert by_count[1, 1].sum() > by_count[0, 0].sum()  # by count, 2 is much lighter than 50
    rare = image[-2 * 40 - 4 : -40 - 4, -2 * 40 - 4 : -40 - 4]  # the rare class's diagonal cell: its count in white
    assert (rare.min(axis=2) > 200).sum() > 10
    assert image.shape == confusion_matrix_image(counts, ["common", "rare", "mixed"], normalize=False).shape  # layout


def test_confusion_matrix_image_of_an_empty_row_is_white():
    colours = cell_colours(confusion_matrix_image(torch.tensor([[4, 1], [0, 0]])), 2, 40)
    assert [tuple(c) for c in colours[1]] == [(247, 251, 255)] * 2


def test_confusion_matrix_figure_shades_like_the_image():
    counts = torch.tensor([[50, 0], [1, 1]])
    shown = np.asarray(confusion_matrix_figure(counts).axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[1.0, 0.0], [0.5, 0.5]])
    shown = np.asarray(confusion_matrix_figure(counts, normalize=False).axes[0].images[0].get_array())
    np.testing.assert_allclose(shown, [[1.0, 0.0], [0.02, 0.02]])


BLUES = [(247, 251, 255), (222, 235, 247), (198, 219, 239), (157, 202, 225), (106, 174, 214), (65, 145, 198)]
BLUES += [(32, 112, 180), (8, 80, 155), (8, 48, 107)]


def test_per_class_rows_match_torchmetrics_per_class_metrics():
    num_classes = 6
    g = torch.Generator().manual_seed(0)
    target = torch.randint(0, 5, (400,), generator=g)  # class 5 has no images: recall undefined
    preds = torch.randint(0, 6, (400,), generator=g)
    preds[preds == 2] = 3  # class 2 is never predicted: precision undefined
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    matrix.index_put_((target, preds), torch.ones(400, dtype=torch.long), accumulate=True)
    rows = per_class_rows(matrix, [f"c{i}" for i in range(num_classes)])
    expected = {
        "precision": MulticlassPrecision(num_classes, average=None)(preds, target),
        "recall": MulticlassRecall(num_classes, average=None)(preds, target),
        "f1": MulticlassF1Score(num_classes, average=None)(preds, target),
    }
    for name, values in expected.items():
        torch.testing.assert_close(
            torch.tensor([row[name] for row in rows], dtype=torch.float64), values.double(), atol=1e-6, rtol=0
        )
    assert [row["support"] for row in rows] == torch.bincount(target, minlength=num_classes).tolist()
    assert [row["class"] for row in rows] == [f"c{i}" for i in range(num_classes)]
    assert rows[2]["precision"] == 0.0 and rows[5]["recall"] == 0.0 and rows[5]["f1"] == 0.0


def test_per_class_rows_name_the_class_that_takes_most_of_each_class():
    matrix = torch.tensor(
        [
            [7, 1, 2, 0],  # cat: 2 to owl
            [0, 5, 0, 0],  # dog: none taken
            [3, 3, 4, 0],  # owl: a tie between cat and dog, the first wins
            [0, 0, 0, 0],  # emu: no images
        ]
    )
    rows = per_class_rows(matrix, ["cat", "dog", "owl", "emu"])
    assert [(r["most_confused_with"], r["confused"]) for r in rows] == [("owl", 2), ("", 0), ("cat", 3), ("", 0)]
    assert [r["support"] for r in rows] == [10, 5, 10, 0]
    assert rows[0] == {
        "class": "cat",
        "support": 10,
        "precision": pytest.approx(7 / 10),
        "recall": pytest.approx(7 / 10),
        "f1": pytest.approx(2 * 7 / (2 * 7 + 3 + 3)),
        "most_confused_with": "owl",
        "confused": 2,
    }
    assert [r["class"] for r in per_class_rows(matrix)] == ["0", "1", "2", "3"]  # no names: the indices


def test_per_class_rows_of_a_tested_model_match_torchmetrics_on_its_predictions(tmp_path):
    torch.manual_seed(0)
    model = ImageClassifier(backbone="test_resnet", num_classes=3, pretrained=False)
    loader = make_loader(num_samples=20, num_classes=3, batch_size=6)
    tiny_trainer(tmp_path).test(model, loader, verbose=False)
    probs, target = predictions(model, loader)
    rows = per_class_rows(model.confusion_matrix)
    for name, metric in [("precision", tmf.multiclass_precision), ("recall", tmf.multiclass_recall)]:
        expected = metric(probs, target, 3, average=None)
        torch.testing.assert_close(
            torch.tensor([r[name] for r in rows], dtype=torch.float64), expected.double(), atol=1e-6, rtol=0
        )
    torch.testing.assert_close(
        torch.tensor([r["f1"] for r in rows], dtype=torch.float64),
        tmf.multiclass_f1_score(probs, target, 3, average=None).double(),
    )
    assert [r["support"] for r in rows] == [7, 7, 6]
