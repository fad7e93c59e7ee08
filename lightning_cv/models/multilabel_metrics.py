"""Metrics of a multi-label classifier (torchmetrics' multilabel classes), per label and averaged.

Two kinds, fed differently:

- **ranking**: average precision per label and its mean over the labels that have positives (mAP), from the scores
  alone; no threshold involved. Its state (every score and target of the split) also tunes the thresholds.
- **decisions**: F1, precision and recall (macro and micro averages), subset accuracy (every label of an image
  right) and the Hamming loss (the fraction of wrong label decisions), at the per-label thresholds in force. They
  are given the decisions themselves (0/1), so torchmetrics applies no threshold of its own.

Everything is synced across processes by torchmetrics, so every rank computes the same values and tunes the same
thresholds.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import torch
from torch import Tensor, nn
from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MultilabelAveragePrecision,
    MultilabelExactMatch,
    MultilabelF1Score,
    MultilabelHammingDistance,
    MultilabelPrecision,
    MultilabelRecall,
)
from torchmetrics.functional.classification import multilabel_average_precision
from torchmetrics.utilities import dim_zero_cat

from lightning_cv.data.batch import label_sets, predicted_sets
from lightning_cv.models.thresholds import tune_thresholds

__all__ = ["MultilabelMetrics"]


class MultilabelMetrics(nn.Module):
    """mAP, per-label AP, F1/precision/recall, subset accuracy and Hamming loss of one split.

    Args:
        num_classes: the number of labels.
        prefix: put before every logged name (``"val_"``, ``"test_"``).

    Example:
        >>> metrics = MultilabelMetrics(2, prefix="val_")
        >>> scores, targets = torch.tensor([[0.9, 0.2], [0.3, 0.8]]), torch.tensor([[1, 0], [0, 1]])
        >>> metrics.update(scores, targets, torch.full((2,), 0.5))
        >>> round(float(metrics.compute()["val_map"]), 3), round(float(metrics.compute()["val_f1"]), 3)
        (1.0, 1.0)
    """

    def __init__(self, num_classes: int, prefix: str = "") -> None:
        super().__init__()
        self.num_classes = num_classes
        self.prefix = prefix
        self.average_precision = MultilabelAveragePrecision(num_classes, average=None, thresholds=None)
        per_label = {"average": None}
        self.decisions = MetricCollection(
            {
                "f1": MultilabelF1Score(num_classes, average="macro"),
                "f1_micro": MultilabelF1Score(num_classes, average="micro"),
                "precision": MultilabelPrecision(num_classes, average="macro"),
                "recall": MultilabelRecall(num_classes, average="macro"),
                "precision_micro": MultilabelPrecision(num_classes, average="micro"),
                "recall_micro": MultilabelRecall(num_classes, average="micro"),
                "subset_acc": MultilabelExactMatch(num_classes),
                "hamming": MultilabelHammingDistance(num_classes, average="micro"),
                "f1_per_label": MultilabelF1Score(num_classes, **per_label),  # type: ignore[arg-type]
                "precision_per_label": MultilabelPrecision(num_classes, **per_label),  # type: ignore[arg-type]
                "recall_per_label": MultilabelRecall(num_classes, **per_label),  # type: ignore[arg-type]
            },
            # each metric its own state: automatic grouping can merge metrics whose states happen to be equal
            compute_groups=False,
        )

    @property
    def update_count(self) -> int:
        return int(self.average_precision.update_count)

    def update(self, scores: Tensor, targets: Tensor, thresholds: Tensor) -> None:
        """Add a batch: ``scores`` ``(N, C)`` sigmoid, ``targets`` ``(N, C)`` multi-hot, ``thresholds`` ``(C,)``."""
        truth = label_sets(targets).long()
        self.average_precision.update(scores.float(), truth)
        self.decisions.update(predicted_sets(scores.float(), thresholds).long(), truth)

    def scores_and_targets(self) -> tuple[Tensor, Tensor]:
        """Every score and target seen since the last reset, from every process: ``(N, C)`` each."""
        metric = self.average_precision
        with metric.sync_context(should_unsync=True):
            return dim_zero_cat(metric.preds).float(), dim_zero_cat(metric.target)

    def compute(self) -> dict[str, Tensor]:
        """The averaged metrics by logged name (``<prefix>map``, ``<prefix>f1`` ...)."""
        return {name: value for name, value in self.compute_all().items() if value.ndim == 0}

    def compute_all(self, tune: bool = False) -> dict[str, Tensor]:
        """:meth:`compute` plus the per-label values ``(C,)``, all under the prefix: ``ap_per_label``,
        ``f1_per_label``, ``precision_per_label``, ``recall_per_label`` and ``support`` (positives). With ``tune``
        also ``tuned_thresholds`` (each label's F1-maximising threshold on these images) and ``f1_tuned``, the macro
        F1 at those thresholds over the labels with positives.

        The scores of every process are gathered once, for the average precision and the tuning alike.
        """
        scores, targets = self.scores_and_targets()
        with warnings.catch_warnings():  # a label without positives gets AP nan and is left out of the mean
            warnings.filterwarnings("ignore", message="No positive samples found in target")
            per_label_ap = multilabel_average_precision(scores, targets, self.num_classes, average=None)
        support = targets.sum(0)
        has_positives = support > 0
        nan = torch.tensor(math.nan, device=scores.device)
        values = {
            "map": per_label_ap[has_positives].float().mean() if bool(has_positives.any()) else nan,
            "ap_per_label": per_label_ap,
            "support": support,
        }
        if tune:  # a sort of every label's scores: only where the thresholds are tuned
            tuned, best_f1 = tune_thresholds(scores, targets)
            values["tuned_thresholds"] = tuned.to(scores.device)
            present = best_f1[has_positives.cpu()]
            values["f1_tuned"] = present.mean().to(scores.device) if len(present) else nan
        values.update(self.decisions.compute())
        return {f"{self.prefix}{name}": value.float() if name != "support" else value for name, value in values.items()}

    def per_label(
        self, values: dict[str, Tensor], thresholds: Tensor, names: list[str] | None = None
    ) -> list[dict[str, Any]]:
        """One row per label from :meth:`compute_all`'s ``values``: name, support (positives), AP, F1, precision,
        recall and the threshold the decisions were made with."""
        values = {k.removeprefix(self.prefix): v.detach().cpu() for k, v in values.items()}
        rows = []
        for c in range(self.num_classes):
            support = int(values["support"][c])
            rows.append(
                {
                    "class": names[c] if names is not None else str(c),
                    "support": support,
                    "ap": float(values["ap_per_label"][c]) if support else math.nan,
                    "f1": float(values["f1_per_label"][c]),
                    "precision": float(values["precision_per_label"][c]),
                    "recall": float(values["recall_per_label"][c]),
                    "threshold": float(thresholds[c]),
                }
            )
        return rows

    def reset(self) -> None:
        self.average_precision.reset()
        self.decisions.reset()
