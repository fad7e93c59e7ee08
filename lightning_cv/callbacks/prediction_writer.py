"""Write predictions to CSV (and JSON Lines) as they are made, one row per image, unreadable images included."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info
from torch import Tensor
from typing_extensions import override

from lightning_cv.data.batch import MULTILABEL, decision_thresholds, predicted_sets, task_of
from lightning_cv.models.calibration import UNKNOWN
from lightning_cv.reporting.tables import FORMULA_STARTS, csv_text

__all__ = ["CSV_COLUMNS", "FORMULA_STARTS", "MULTILABEL_CSV_COLUMNS", "PredictionWriter", "csv_text"]


#: the CSV header of a multi-class module
CSV_COLUMNS = ("path", "predicted_class", "predicted_index", "probability", "top_k", "error")
#: the CSV header of a multi-label module
MULTILABEL_CSV_COLUMNS = ("path", "predicted_labels", "scores", "top_k", "error")


def _safe_name(name: str) -> str:
    if not name or name in (".", "..") or os.sep in name or "/" in name or (os.altsep and os.altsep in name):
        raise ValueError(f"Expected `filename` to be a plain file name without folders, but got {name!r}.")
    return name


class PredictionWriter(BasePredictionWriter):
    """Stream ``Trainer.predict`` results to ``<output_dir>/<filename>.csv`` (and ``.jsonl``).

    Each row holds the image path, the predicted class name and index, its probability and the top-k classes; where
    the module's ``predict_step`` answers "unknown" (class index -1 in its ``"preds"``, below its reject threshold
    ``min_confidence``) the row says ``unknown`` and -1, with the probability and top-k still shown. Images
    that could not be read get a row with an ``error`` and no prediction, so the output accounts for every input;
    when *no* image could be read, the rows are written and then a ``ValueError`` ends the run (the command line
    exits with status 2), since an output without a single prediction is a failed run. Rows are written batch by
    batch, so predicting a million images needs no memory for their results. Only the fixed file names are written,
    inside ``output_dir``; nothing taken from the data becomes a path.

    File and class names come from the data, and spreadsheet programs run a CSV cell that starts with ``=``, ``+``,
    ``-``, ``@``, a tab or a carriage return as a formula (CSV injection). In the CSV file such text cells (path,
    class, top-k and each class name inside it, error) get a leading ``'``, which spreadsheets show as text, and
    every text cell is quoted, so a spreadsheet that splits on ``;`` cannot cut a cell into a new one that starts a
    formula; the numbers this writer formats itself are left as they are. The JSON Lines file keeps every value
    unchanged: it is read by programs, not spreadsheets.

    Works with any LightningModule whose ``predict_step`` returns class probabilities (a tensor, or a dict with
    ``"probs"``) and a predict dataset whose items are ``(image, index)`` with ``dataset.paths`` (as
    :class:`~lightning_cv.data.ImageFileDataset` gives); other datasets are written with the running index.

    A multi-label module (``hparams["task"] == "multilabel"``, its ``"probs"`` one sigmoid score per label) predicts a
    set of labels per image, possibly empty: the ``"preds"`` of its ``predict_step`` when it gives them, else every
    label whose score reaches the module's decision threshold (its ``thresholds`` tensor, 0.5 by default). Its CSV
    columns are ``path``, ``predicted_labels`` (the set, highest score first, joined with ``;``), ``scores`` (the
    same labels as ``name:score`` pairs, in that order, the way ``top_k`` writes them), ``top_k`` (the ``top_k``
    best scores, predicted or not) and ``error``; each JSON Lines row is ``{"path", "labels": [...], "scores":
    {name: score}, "top_k": [[name, score], ...], "error"}``, ``scores`` holding the predicted labels only. Every
    label name in the CSV is guarded as above.

    Args:
        output_dir: folder for the files; defaults to the run's log directory.
        filename: base name of the files, without folders.
        formats: ``"csv"`` and/or ``"jsonl"``.
        top_k: how many of the most probable classes to list per image.
    """

    def __init__(
        self,
        output_dir: str | None = None,
        filename: str = "predictions",
        formats: Sequence[Literal["csv", "jsonl"]] = ("csv",),
        top_k: int = 5,
    ) -> None:
        super().__init__(write_interval="batch")
        self.output_dir = output_dir
        self.filename = _safe_name(filename)
        unknown = [f for f in formats if f not in ("csv", "jsonl")]
        if unknown or not formats:
            raise ValueError(f"Expected `formats` from 'csv' and 'jsonl', but got {list(formats)!r}.")
        if top_k < 1:
            raise ValueError(f"Expected `top_k` >= 1, but got {top_k}.")
        self.formats = tuple(formats)
        self.top_k = top_k
        self.paths: dict[str, Path] = {}
        self._files: dict[str, Any] = {}
        self._csv: Any = None
        self._seen: set[int] = set()
        self._offset = 0
        self._multilabel = False

    def _directory(self, trainer: Trainer) -> Path:
        base = self.output_dir or trainer.log_dir or trainer.default_root_dir
        return Path(base)

    @override
    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        directory = self._directory(trainer)
        directory.mkdir(parents=True, exist_ok=True)
        suffix = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        self._seen, self._offset = set(), 0
        self._multilabel = task_of(pl_module) == MULTILABEL
        for fmt in self.formats:
            path = directory / f"{self.filename}{suffix}.{fmt}"
            self.paths[fmt] = path
            self._files[fmt] = open(path, "w", newline="", encoding="utf-8")
        if "csv" in self._files:
            # every text cell in quotes: a spreadsheet that splits on ";" (or "," in other locales) keeps it whole
            self._csv = csv.writer(self._files["csv"], quoting=csv.QUOTE_NONNUMERIC)
            self._csv.writerow(list(MULTILABEL_CSV_COLUMNS if self._multilabel else CSV_COLUMNS))

    def _rows(self, trainer: Trainer, pl_module: LightningModule, prediction: Any, batch: Any) -> list[dict[str, Any]]:
        probs = prediction["probs"] if isinstance(prediction, dict) else prediction
        probs = probs.detach().float().cpu()
        names = list(pl_module.hparams.get("class_names") or []) if hasattr(pl_module, "hparams") else []
        names = names or [str(i) for i in range(probs.shape[1])]
        dataset = getattr(trainer.predict_dataloaders, "dataset", None)
        paths = getattr(dataset, "paths", None)
        indices = batch[1].tolist() if isinstance(batch, (list, tuple)) and len(batch) > 1 else None
        if indices is None or paths is None:
            indices = list(range(self._offset, self._offset + probs.shape[0]))
        self._offset += probs.shape[0]
        k = min(self.top_k, probs.shape[1])
        top_p, top_i = probs.topk(k, dim=1)
        chosen = self._label_sets(pl_module, prediction, probs) if self._multilabel else None
        answers = None if self._multilabel else self._answers(prediction, top_i[:, 0])
        rows = []
        for row, index in enumerate(indices):
            self._seen.add(int(index))
            top = [[names[int(i)], round(float(p), 6)] for p, i in zip(top_p[row], top_i[row], strict=True)]
            path = paths[index] if paths is not None else str(index)
            if chosen is not None:
                found = chosen[row].nonzero().flatten()
                labels = found[probs[row, found].argsort(descending=True, stable=True)].tolist()
                pairs = {names[c]: round(float(probs[row, c]), 6) for c in labels}
                named = [names[c] for c in labels]
                rows.append({"path": path, "labels": named, "scores": pairs, "top_k": top, "error": ""})
                continue
            answer = int(answers[row])  # type: ignore[index]
            rows.append(
                {
                    "path": path,
                    "predicted_class": names[answer] if answer >= 0 else UNKNOWN,
                    "predicted_index": answer,
                    "probability": round(float(top_p[row, 0]), 6),
                    "top_k": top,
                    "error": "",
                }
            )
        return rows

    @staticmethod
    def _answers(prediction: Any, best: Tensor) -> Tensor:
        """The predicted class of each image: the module's own ``"preds"`` (-1: unknown), else the most probable."""
        preds = prediction.get("preds") if isinstance(prediction, dict) else None
        if isinstance(preds, Tensor) and preds.shape == best.shape:
            return preds.detach().cpu().long()
        return best

    @staticmethod
    def _label_sets(pl_module: LightningModule, prediction: Any, probs: Tensor) -> Tensor:
        """The predicted label sets ``(N, C)``: the module's own ``"preds"``, else thresholded scores."""
        preds = prediction.get("preds") if isinstance(prediction, dict) else None
        if isinstance(preds, Tensor) and preds.shape == probs.shape:
            return preds.detach().cpu().bool()
        return predicted_sets(probs, decision_thresholds(pl_module, probs.shape[1]).cpu())

    def _csv_cells(self, row: dict[str, Any]) -> list[Any]:
        """A row's CSV cells, every text from the data guarded by :func:`csv_text`."""
        top = ";".join(f"{csv_text(name)}:{p:.4f}" for name, p in row["top_k"])  # each name is a cell start
        path, error = csv_text(str(row["path"])), csv_text(str(row["error"]))
        if self._multilabel:
            labels = ";".join(csv_text(name) for name in row["labels"])
            pairs = ";".join(f"{csv_text(name)}:{row['scores'][name]:.4f}" for name in row["labels"])
            return [path, csv_text(labels), csv_text(pairs), csv_text(top), error]
        name = csv_text(str(row["predicted_class"]))
        return [path, name, row["predicted_index"], row["probability"], csv_text(top), error]

    def _write(self, rows: list[dict[str, Any]]) -> None:
        for row in rows:
            if self._csv is not None:
                self._csv.writerow(self._csv_cells(row))
            if "jsonl" in self._files:
                self._files["jsonl"].write(json.dumps(row) + "\n")

    @override
    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        self._write(self._rows(trainer, pl_module, prediction, batch))

    @override
    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        dataset = getattr(trainer.predict_dataloaders, "dataset", None)
        paths = getattr(dataset, "paths", None)
        unreadable = 0
        if paths is not None and trainer.world_size == 1:
            from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError, load_image

            max_pixels = getattr(dataset, "max_pixels", DEFAULT_MAX_PIXELS)  # the limit the dataset refused them by
            for index, path in enumerate(paths):
                if index in self._seen:
                    continue
                try:
                    load_image(path, max_pixels=max_pixels).close()
                    error = "not predicted (the run stopped before it)"
                except BadImageError as err:
                    error, unreadable = f"unreadable: {err.reason}", unreadable + 1
                except OSError as err:
                    error, unreadable = f"unreadable: {err}", unreadable + 1
                if self._multilabel:
                    row: dict[str, Any] = {"path": path, "labels": [], "scores": {}}
                else:
                    row = {"path": path, "predicted_class": "", "predicted_index": "", "probability": ""}
                self._write([{**row, "top_k": [], "error": error}])
        for handle in self._files.values():
            handle.close()
        self._files, self._csv = {}, None
        written = ", ".join(str(p) for p in self.paths.values())
        if unreadable and not self._seen:
            raise ValueError(
                f"None of the {unreadable} image(s) to predict could be read; {written} list(s) each file with its "
                "error."
            )
        note = f" ({unreadable} of {len(paths or ())} image(s) could not be read; their rows hold the error)"
        note = note if unreadable else ""
        rank_zero_info(f"Predictions written to {written}{note}")

    def on_exception(self, trainer: Trainer, pl_module: LightningModule, exception: BaseException) -> None:
        for handle in self._files.values():
            handle.close()  # keep what was written so far
        self._files, self._csv = {}, None
