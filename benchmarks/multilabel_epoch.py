"""What multi-label training costs against single-label training of the same model, measured side by side.

Both fit the same timm model with the same recipe (AdamW, cosine, batch 32, workers 0, no augmentation) for two
epochs on the embedded shapes sets at the same image size and count: ``shapes`` (one shape per image, 6 classes,
cross entropy, accuracy) and ``shapes_multilabel`` (0-3 shapes per image, 6 labels, binary cross entropy, mAP, F1,
threshold tuning). Each fit validates every epoch, so the extra work of multi-label evaluation (exact average
precision over every validation score, per-label threshold tuning) is counted. Reported, as medians over alternating
repeats: the time of the second training epoch, of the second validation, and their ratio multi-label / single-label.

    python benchmarks/multilabel_epoch.py                        # resnet10t, 48 px, 1024 train / 300 val images
    python benchmarks/multilabel_epoch.py --backbone test_resnet --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import torch
from lightning.pytorch import Callback, LightningModule, Trainer

from lightning_cv import ImageClassifier, ImageDataModule


class Timer(Callback):
    """Wall-clock time of each training epoch and each validation."""

    def __init__(self) -> None:
        self.train: list[float] = []
        self.val: list[float] = []
        self._start = 0.0

    def on_train_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self._start = time.perf_counter()

    def on_validation_epoch_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        self.train.append(time.perf_counter() - self._start)  # validation runs inside the training epoch
        self._val_start = time.perf_counter()

    def on_validation_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        # after the module's on_validation_epoch_end (which Lightning calls after the callbacks' one): the metrics,
        # the exact average precision and the threshold tuning are inside the measurement
        self.val.append(time.perf_counter() - self._val_start)


def fit(task: str, args: argparse.Namespace) -> tuple[float, float, dict[str, float]]:
    torch.manual_seed(0)
    data = ImageDataModule(
        dataset="shapes" if task == "multiclass" else "shapes_multilabel",
        dataset_kwargs={"num_train": args.images, "num_val": args.val_images, "num_test": 30, "image_size": args.size},
        image_size=args.size,
        batch_size=32,
        num_workers=0,
        auto_augment="none",
        scale=(0.6, 1.0),
    )
    model = ImageClassifier(backbone=args.backbone, pretrained=False, num_classes=6, task=task, lr=3e-3)
    timer = Timer()
    with tempfile.TemporaryDirectory() as run_dir:  # the confusion-matrix pictures go there, not into the cwd
        trainer = Trainer(
            accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, num_sanity_val_steps=0, callbacks=[timer], default_root_dir=run_dir,
        )  # fmt: skip
        trainer.fit(model, data)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k in ("val_acc", "val_map", "val_f1")}
    return timer.train[-1], timer.val[-1], metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--images", type=int, default=1024)
    parser.add_argument("--val_images", type=int, default=300)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    times: dict[str, list[tuple[float, float]]] = {"multiclass": [], "multilabel": []}
    for repeat in range(args.repeats):
        for task in ("multiclass", "multilabel") if repeat % 2 == 0 else ("multilabel", "multiclass"):
            train, val, metrics = fit(task, args)
            times[task].append((train, val))
            print(f"  {task:<10} train epoch {train:6.2f} s   validation {val:5.2f} s   {metrics}", flush=True)
    print(f"\n{args.backbone}, {args.size} px, {args.images} training / {args.val_images} validation images, "
          f"medians of {args.repeats}, torch threads: {torch.get_num_threads()}")  # fmt: skip
    print("| task | train epoch (s) | validation (s) |\n| --- | --- | --- |")
    medians = {}
    for task, rows in times.items():
        medians[task] = (statistics.median(t for t, _ in rows), statistics.median(v for _, v in rows))
        print(f"| {task} | {medians[task][0]:.2f} | {medians[task][1]:.2f} |")
    print(f"| ratio multilabel / multiclass | {medians['multilabel'][0] / medians['multiclass'][0]:.2f}x | "
          f"{medians['multilabel'][1] / medians['multiclass'][1]:.2f}x |")  # fmt: skip


if __name__ == "__main__":
    main()
