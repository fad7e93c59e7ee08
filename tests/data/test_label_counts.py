"""Label counts and balanced sampling weights, for one class per image and for label sets."""

import torch

from lightning_cv.data.label_counts import as_label_sets, balanced_sample_weights, label_counts


def test_one_class_per_image_is_inverse_class_frequency():
    targets = [0, 0, 0, 1, 2, 2]
    sets = as_label_sets(targets)
    assert sets == [(0,), (0,), (0,), (1,), (2,), (2,)]
    assert label_counts(sets, 4).tolist() == [3.0, 1.0, 2.0, 0.0]
    expected = torch.tensor([1 / 3, 1 / 3, 1 / 3, 1.0, 1 / 2, 1 / 2], dtype=torch.double)
    torch.testing.assert_close(balanced_sample_weights(sets, 4), expected)


def test_label_sets_weigh_each_image_by_its_rarest_label_and_images_without_labels_as_a_group():
    sets = as_label_sets([(0,), (0, 1), (0, 2), (), (), (1,)])  # counts: 0 -> 3, 1 -> 2, 2 -> 1
    assert label_counts(sets, 3).tolist() == [3.0, 2.0, 1.0]
    expected = torch.tensor([1 / 3, 1 / 2, 1.0, 1 / 2, 1 / 2, 1 / 2], dtype=torch.double)
    torch.testing.assert_close(balanced_sample_weights(sets, 3), expected)
