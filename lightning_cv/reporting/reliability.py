"""Reliability diagrams: how often a model is right at each confidence it states, before and after calibration.

Each bar is one equal-width confidence bin (the bins of the expected calibration error): its height the accuracy of
the images whose top probability falls in the bin, the diagonal what a calibrated model would reach; the gap between
bar and diagonal, weighted by the share of images in the bin, sums to the ECE. matplotlib is imported only here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

__all__ = ["reliability_bins", "write_reliability_diagram"]


def reliability_bins(probs: Tensor, targets: Tensor, bins: int = 15) -> dict[str, np.ndarray]:
    """Per bin: ``count``, mean ``confidence`` and ``accuracy`` (``nan`` for an empty bin), and ``edges``.

    The bins are torchmetrics' (``val_ece``'s): ``bins`` equal widths over [0, 1] in float32, a confidence on an edge
    in the upper bin, and a confidence of exactly 1 in a bin of its own (``bins + 1`` entries, the last for 1.0), so
    ``sum(count * |accuracy - confidence|) / N`` is the ECE torchmetrics reports.
    """
    confidence, predicted = probs.detach().float().cpu().max(dim=1)
    right = (predicted == targets.detach().cpu()).numpy().astype(np.float64)
    conf = confidence.numpy()
    edges = np.linspace(0.0, 1.0, bins + 1, dtype=np.float32)
    index = np.searchsorted(edges, conf, side="right") - 1  # torch.bucketize(right=True) - 1
    count = np.bincount(index, minlength=bins + 1).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(index, weights=conf.astype(np.float64), minlength=bins + 1) / count
        accuracy = np.bincount(index, weights=right, minlength=bins + 1) / count
    return {"count": count, "confidence": mean_conf, "accuracy": accuracy, "edges": edges.astype(np.float64)}


def write_reliability_diagram(
    path: str | os.PathLike[str],
    panels: Sequence[tuple[str, Tensor]],
    targets: Tensor,
    bins: int = 15,
    title: str | None = None,
) -> Path:
    """Write a PNG with one reliability diagram per ``(name, probabilities)`` panel, side by side.

    Args:
        path: the PNG to write (folders are created).
        panels: e.g. ``[("uncalibrated", probs), ("temperature 1.8", calibrated)]``, each ``(N, C)``.
        targets: ``(N,)`` class indices.
        bins: equal-width confidence bins.
        title: the figure's title.
    """
    try:
        from matplotlib.figure import Figure
    except ImportError as err:  # a dependency, but an environment may lack it
        raise ImportError("Drawing the reliability diagram needs matplotlib: pip install matplotlib") from err
    figure = Figure(figsize=(4.2 * len(panels), 4.4), dpi=110)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, probs) in zip(axes, panels, strict=True):
        found = reliability_bins(probs, targets, bins)
        width = 1.0 / bins
        ece = np.nansum(found["count"] * np.abs(found["accuracy"] - found["confidence"])) / found["count"].sum()
        # drawn: the images at exactly 1.0 join the last bar
        counts = found["count"][:bins].copy()
        right = np.nan_to_num(found["accuracy"] * found["count"])
        counts[-1] += found["count"][bins]
        with np.errstate(invalid="ignore", divide="ignore"):
            shown = np.concatenate([right[: bins - 1], [right[bins - 1] + right[bins]]]) / counts
        ax.bar(found["edges"][:-1], np.nan_to_num(shown), width=width, align="edge",
               color="#4292c6", edgecolor="#08306b", label="accuracy")  # fmt: skip
        ax.plot([0, 1], [0, 1], linestyle="--", color="#737373", label="calibrated")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.set_xlabel("confidence (top probability)")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{name}: ECE {ece:.4f}")
        ax.legend(loc="upper left")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(target)
    return target
