"""Per-label decision thresholds of a multi-label classifier: held with the weights, tuned to maximise F1.

A multi-label model answers every label whose sigmoid score reaches that label's threshold. 0.5 is rarely the best
cut for a rare label, so :func:`tune_thresholds` picks, for each label, the threshold that maximises its F1 on the
validation images (exactly, over every distinct score), and falls back to 0.5 for a label without positives there.

The thresholds live in :class:`DecisionThresholds`, a module whose only state is "extra state" of its
``state_dict``: checkpoints, ``load_state_dict`` and exports carry them with the weights, while weight averaging
(the EMA callback averages parameters and buffers) leaves them alone: they are a decision rule tuned for the weights
being evaluated, not a weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from lightning_cv.data.batch import DEFAULT_THRESHOLD, label_sets

__all__ = ["DecisionThresholds", "check_thresholds", "tune_thresholds"]


def check_thresholds(value: float | Sequence[float] | None, num_classes: int) -> Tensor | None:
    """``value`` as a ``(C,)`` float tensor (one number applies to every label), ``None`` for "tune them"."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ValueError(f"Expected `thresholds` to be a number, a list of numbers or None, but got {value!r}.")
    values = [float(value)] * num_classes if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != num_classes:
        raise ValueError(
            f"Expected one threshold per class ({num_classes}) or a single number, but got {len(values)} `thresholds`."
        )
    outside = [v for v in values if not 0.0 <= v <= 1.0]
    if outside:
        raise ValueError(f"Expected `thresholds` in [0, 1] (they cut sigmoid scores), but got {outside[:5]}.")
    return torch.tensor(values, dtype=torch.float32)


def tune_thresholds(scores: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
    """For each label, the threshold that maximises its F1 on ``scores`` against ``targets``, and that F1.

    Args:
        scores: ``(N, C)`` sigmoid scores.
        targets: ``(N, C)`` multi-hot targets (0/1).

    Returns:
        ``(thresholds, best_f1)``, both ``(C,)``. A label is predicted when its score is at least its threshold. The
        threshold lies halfway between the lowest score still predicted and the next lower score (a margin on both
        sides); a label without positives gets 0.5 and F1 ``nan``.
    """
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(f"Expected scores and targets of one shape (N, C), got {tuple(scores.shape)}, "
                         f"{tuple(targets.shape)}.")  # fmt: skip
    num_classes = scores.shape[1]
    thresholds = torch.full((num_classes,), DEFAULT_THRESHOLD)
    best = torch.full((num_classes,), float("nan"))
    for c in range(num_classes):
        column, truth = scores[:, c].double().cpu(), label_sets(targets)[:, c].cpu()
        positives = int(truth.sum())
        if positives == 0:
            continue
        order = column.argsort(descending=True)
        ranked, hits = column[order], truth[order].double()
        tp = hits.cumsum(0)
        predicted = torch.arange(1, len(ranked) + 1, dtype=torch.float64)
        f1 = 2 * tp / (predicted + positives)
        # only cut where the next score is lower: tied scores are predicted together or not at all
        last_of_tie = torch.ones(len(ranked), dtype=torch.bool)
        last_of_tie[:-1] = ranked[1:] < ranked[:-1]
        f1 = torch.where(last_of_tie, f1, torch.tensor(-1.0, dtype=torch.float64))
        k = int(f1.argmax())
        cut = float(ranked[k])
        if k + 1 < len(ranked):
            lower = float(ranked[k + 1])
            halfway = float(torch.tensor((cut + lower) / 2, dtype=torch.float32))
            # scores one float32 step apart have no float32 number between them: cut at the lowest predicted one
            thresholds[c] = halfway if lower < halfway <= cut else cut
        else:
            thresholds[c] = cut
        best[c] = float(f1[k])
    return thresholds, best


class DecisionThresholds(nn.Module):
    """The per-label thresholds ``values`` ``(C,)``, saved in the owner's ``state_dict`` as ``<name>._extra_state``."""

    def __init__(self, num_classes: int, initial: Tensor | None = None) -> None:
        super().__init__()
        self.values = initial.clone() if initial is not None else torch.full((num_classes,), DEFAULT_THRESHOLD)

    def get_extra_state(self) -> Any:
        # a bare tensor: exporters and tools that walk a state dict expect tensors in it
        return self.values.detach().cpu().clone()

    def set_extra_state(self, state: Any) -> None:
        values = state
        if not isinstance(values, Tensor) or values.shape != self.values.shape:
            raise ValueError(
                f"The checkpoint's decision thresholds do not fit this model ({self.values.shape[0]} labels): "
                f"got {values.shape if isinstance(values, Tensor) else type(values).__name__}."
            )
        self.values = values.float().cpu().clone()

    def extra_repr(self) -> str:
        return f"num_labels={self.values.shape[0]}"
