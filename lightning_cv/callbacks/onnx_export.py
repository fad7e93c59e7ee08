"""Export the best weights to ONNX when training ends, checked against PyTorch with onnxruntime."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import MULTILABEL, decision_thresholds, task_of, try_split_batch
from lightning_cv.data.config import find_data_config
from lightning_cv.deploy.onnx import DEFAULT_OPSET, ExportReport, export_onnx
from lightning_cv.resume.keys import EMA_KEY

__all__ = ["ONNXExport"]


class ONNXExport(Callback):
    """Write ``<dirpath>/<filename>`` from the best checkpoint's weights at the end of ``fit`` (or at every new best).

    Drop it into any Lightning project. The example input is the first training image (the size the model was
    trained at) or, when no training batch was seen, the module's ``example_input_array``. The file has a dynamic
    batch axis; it is run with onnxruntime on batches of 1 and 7 and compared with PyTorch (the max abs difference
    is reported, and above ``atol`` the export counts as failed). It carries metadata: class names
    (``hparams["class_names"]``), input size, mean and std (the data module's or the module's ``data_config``) and
    whether softmax is included. A multi-label module (``hparams["task"] == "multilabel"``) gets a file that ends in
    a sigmoid (output ``"scores"``), with ``task`` and its per-label ``thresholds`` (the ``thresholds`` of the
    exported weights, else 0.5 each) in the metadata. Weights come from the best checkpoint of the Trainer's
    ModelCheckpoint when there is one (its average when the :class:`EMA` callback wrote one), else from the module
    at the end of training (which the EMA callback leaves holding the average). It runs on rank zero only, and a
    failed export is reported as a warning that names the failing operator: it never takes the finished training
    or its checkpoints down.

    Args:
        dirpath: output folder; defaults to ``<run dir>/export``.
        filename: name of the ONNX file, without folders.
        softmax: include the softmax, so the file outputs probabilities (multi-class modules only: a multi-label
            module's file always ends in a sigmoid, and ``softmax=True`` with one stops ``fit`` at its start).
        opset: ONNX opset (17 runs on every current runtime).
        atol: largest absolute difference to PyTorch that the check accepts.
        every_best: export again each time the best checkpoint changes, not only at the end.
    """

    def __init__(
        self,
        dirpath: str | None = None,
        filename: str = "model.onnx",
        softmax: bool = False,
        opset: int = DEFAULT_OPSET,
        atol: float = 1e-4,
        every_best: bool = False,
    ) -> None:
        if "/" in filename or "\\" in filename or not filename.endswith(".onnx"):
            raise ValueError(f"Expected `filename` to be a plain name ending in .onnx, but got {filename!r}.")
        if atol <= 0:
            raise ValueError(f"Expected `atol` > 0, but got {atol}.")
        self.dirpath = dirpath
        self.filename = filename
        self.softmax = softmax
        self.opset = opset
        self.atol = atol
        self.every_best = every_best
        self.report: ExportReport | None = None
        self.error: BaseException | None = None
        self._example: Tensor | None = None
        self._exported_best = ""
        self._run_dir: Path | None = None

    def path(self, trainer: Trainer) -> Path:
        run_dir = self._run_dir or Path(trainer.default_root_dir)
        base = Path(self.dirpath) if self.dirpath else run_dir / "export"
        return base / self.filename

    @override
    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        # trainer.log_dir broadcasts across processes: ask on every rank here, never from rank zero alone (it hangs)
        self._run_dir = Path(trainer.log_dir or trainer.default_root_dir)
        if self.softmax and task_of(pl_module) == MULTILABEL:  # now, not after hours of training
            raise ValueError(
                "ONNXExport(softmax=True) is for multi-class models, but this module is multi-label: its file always "
                "ends in a sigmoid (one score per label). Drop `softmax=True`."
            )

    @override
    def on_train_batch_start(self, trainer: Trainer, pl_module: LightningModule, batch: Any, batch_idx: int) -> None:
        parts = try_split_batch(batch) if self._example is None else None
        if parts is not None:
            self._example = parts[0][:1].detach().float().cpu()

    def _example_input(self, pl_module: LightningModule) -> Tensor | None:
        # a real training image shows the size the model was trained at; example_input_array may be a default
        if self._example is not None:
            return self._example
        example = getattr(pl_module, "example_input_array", None)
        return example if isinstance(example, Tensor) else None

    def _best_path(self, trainer: Trainer) -> str:
        callback = trainer.checkpoint_callback
        best = callback.best_model_path if isinstance(callback, ModelCheckpoint) else ""
        return best if best and Path(best).is_file() else ""

    def _metadata(self, trainer: Trainer, pl_module: LightningModule, example: Tensor) -> dict[str, Any]:
        hparams = getattr(pl_module, "hparams", {})
        meta: dict[str, Any] = {}
        if hparams.get("class_names"):
            meta["class_names"] = list(hparams["class_names"])
        config = find_data_config(getattr(trainer, "datamodule", None), pl_module)
        if config is not None:
            meta.update(config.export_metadata())
        meta["input_size"] = list(example.shape[1:])  # what the file was traced with, whatever the config says
        return meta

    def export(self, trainer: Trainer, pl_module: LightningModule) -> ExportReport | None:
        """Export now; returns the report, or ``None`` (with a warning) when the export failed."""
        example = self._example_input(pl_module)
        if example is None:
            rank_zero_warn("ONNXExport: no example input (no example_input_array, no training batch seen); skipped.")
            return None
        best = self._best_path(trainer)
        try:
            module = copy.deepcopy(pl_module).cpu()
            if best:
                checkpoint = torch.load(best, map_location="cpu", weights_only=True)
                # the EMA callback keeps the averaged weights beside the raw ones: export the average
                state = {**checkpoint["state_dict"], **(checkpoint.get(EMA_KEY) or {})}
                module.load_state_dict(state)
            meta = self._metadata(trainer, pl_module, example)
            meta["weights"] = Path(best).name if best else "end of training"
            task = task_of(module)
            self.report = export_onnx(
                module,
                self.path(trainer),
                example,
                softmax=self.softmax,
                task=task,
                thresholds=_thresholds(module) if task == MULTILABEL else None,
                opset=self.opset,
                metadata=meta,
                atol=self.atol,
            )
            self.error = None
        except Exception as err:  # an export problem must not fail a finished training
            self.error = err
            rank_zero_warn(f"ONNXExport failed; the training and its checkpoints are unaffected. {err}")
            return None
        diffs = ", ".join(f"batch {b}: {d:.1e}" for b, d in self.report.max_abs_diff.items())
        rank_zero_info(f"ONNX model written to {self.report.path} (max abs difference to PyTorch: {diffs})")
        return self.report

    @override
    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # ModelCheckpoint runs after every other callback at epoch end, so a new best shows at the next epoch start
        if not self.every_best or not trainer.is_global_zero:
            return
        best = self._best_path(trainer)
        callback = trainer.checkpoint_callback
        score = getattr(callback, "best_model_score", None)
        key = f"{best}|{float(score) if score is not None else ''}|{Path(best).stat().st_mtime if best else ''}"
        if best and key != self._exported_best:
            self._exported_best = key
            self.export(trainer, pl_module)

    @override
    def on_fit_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        if trainer.is_global_zero:
            self.export(trainer, pl_module)


def _thresholds(module: LightningModule) -> Tensor | None:
    """The per-label thresholds of the weights being exported (the thresholds belong to the state dict
    that was loaded), or ``None`` (0.5 each) when the module does not say how many labels it has."""
    num_classes = getattr(module, "hparams", {}).get("num_classes")
    buffer = getattr(module, "thresholds", None)
    if not isinstance(num_classes, int) and isinstance(buffer, Tensor) and buffer.ndim == 1:
        num_classes = len(buffer)
    return decision_thresholds(module, num_classes) if isinstance(num_classes, int) else None
