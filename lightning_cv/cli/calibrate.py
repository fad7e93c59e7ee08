"""``lightning-cv calibrate``: fit a checkpoint's temperature on the validation split and save it in a new file.

Wiring only: the work is :func:`lightning_cv.deploy.calibrate.calibrate`. Like ``export`` and ``benchmark``, the data
settings come from the checkpoint, with ``--data.*`` on top (:mod:`lightning_cv.cli.deploy`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["calibrate", "calibrated_path"]


def calibrated_path(ckpt_path: str) -> Path:
    """Where the calibrated copy of ``ckpt_path`` goes by default: ``<stem>.calibrated.ckpt`` next to it."""
    source = Path(ckpt_path)
    return source.with_name(f"{source.stem}.calibrated.ckpt")


def calibrate(
    ckpt_path: str,
    output: str | None = None,
    coverage: float | None = None,
    min_confidence: float | None = None,
    bins: int = 15,
    overwrite: bool = False,
    *,
    data: dict[str, Any] | None = None,
) -> int:
    """Fit a temperature on the validation split (NLL, L-BFGS) and save it with the weights in a new checkpoint.

    Reports NLL, ECE and accuracy before and after on the test split (the validation split when there is none),
    writes a reliability diagram next to the new checkpoint, and lists the accuracy at 100/95/90/80% coverage.
    Predict, test, export and benchmark of the new checkpoint use the calibrated probabilities.

    Args:
        ckpt_path: checkpoint from `lightning-cv fit`, or best / last.
        output: the calibrated checkpoint to write (default: <name>.calibrated.ckpt next to the input).
        coverage: also set the reject threshold that answers this share of the validation images (0.95).
        min_confidence: also set this reject threshold (below it predict answers 'unknown').
        bins: bins of the expected calibration error and the reliability diagram.
        overwrite: allow --output to replace an existing file (the input checkpoint included).
        data: overrides of the checkpoint's data settings (the --data.* options).
    """
    from lightning_cv.cli.deploy import _datamodule, _load
    from lightning_cv.data.batch import MULTILABEL, task_of
    from lightning_cv.deploy.calibrate import calibrate as fit
    from lightning_cv.deploy.calibrate import save_calibrated_checkpoint
    from lightning_cv.reporting.reliability import write_reliability_diagram
    from lightning_cv.reporting.tables import print_table

    if bins < 2:
        raise ValueError(f"Expected `--bins` >= 2, but got {bins}.")
    if coverage is not None and min_confidence is not None:
        raise ValueError("Give `--coverage` or `--min_confidence`, not both: each sets the reject threshold.")
    ckpt_path, model, data_hp = _load(ckpt_path)
    target = Path(output) if output else calibrated_path(ckpt_path)
    if target.exists() and not overwrite:  # refused before any work: nothing is lost, nothing is replaced
        same = target.resolve() == Path(ckpt_path).resolve()
        what = "is the checkpoint being calibrated" if same else "exists"
        raise ValueError(f"'{target}' {what}; nothing was written. Pass another `--output`, or `--overwrite`.")
    if task_of(model) == MULTILABEL:
        raise ValueError(
            "Temperature calibration is for multi-class models; this checkpoint's model is multi-label, whose "
            "decisions are its per-label thresholds (tuned on the validation split during fit; see --thresholds)."
        )
    datamodule = _datamodule(model, data_hp, data or {})
    try:
        validation = datamodule.eval_dataloader("val")
    except ValueError as err:
        raise ValueError(
            "Calibrating needs validation images the model was not trained on, and this data has none: pass a "
            "`--data.val_file` or a `--data.data_dir` with a val/ folder of held-out images."
        ) from err
    try:
        evaluation = datamodule.eval_dataloader("test")
    except ValueError:
        evaluation = None
        print("Note: no test split; the before/after figures are measured on the validation split itself.")
    report = fit(model, validation, evaluation, coverage=coverage, min_confidence=min_confidence, bins=bins)
    print(report.summary())
    print_table(report.rows(), f"Calibration on the {report.split} split (temperature {report.temperature:.4f})")
    written = save_calibrated_checkpoint(ckpt_path, target, model, overwrite=overwrite)
    assert report.evaluation is not None
    before, after, targets = report.evaluation
    diagram = write_reliability_diagram(
        target.with_name(f"{target.stem}.reliability.png"),
        [("uncalibrated", before), (f"temperature {report.temperature:.2f}", after)],
        targets,
        bins,
        title=f"Reliability on {report.evaluation_images} {report.split} images",
    )
    print(f"Wrote {written} (temperature {report.temperature:.4f}) and {diagram}")
    return 0
