"""Options for imbalanced classes, side by side on an imbalanced shapes set, with the same model and budget.

The training split of the embedded shapes set is made imbalanced (one class, ring, at ``--rare_fraction`` of each
other class); validation and test stay balanced, so every class is measured alike. Each option trains the same model
from the same seed for the same epochs: plain cross entropy, the balanced sampler, ``class_weights="balanced"``,
the focal loss, and logit adjustment (tau 1). Reported on the test split: balanced accuracy (the mean of the
per-class recalls) and the recall of the worst class, which is the rare one unless an option overcorrects.

    python benchmarks/imbalance.py              # resnet10t, 48 px, 800 images a class, 40 rings, 14 epochs (~17 min)
    python benchmarks/imbalance.py --epochs 6 --per_class 200
"""

from __future__ import annotations

import argparse
import tempfile
import time
from typing import Any

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.data.shapes import SHAPE_CLASSES

OPTIONS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {  # name: (model arguments, data arguments)
    "cross entropy": ({}, {}),
    "balanced sampler": ({}, {"balanced_sampler": True}),
    "class_weights='balanced'": ({"class_weights": "balanced"}, {}),
    "focal loss (gamma 2)": ({"loss": "focal"}, {}),
    "logit adjustment (tau 1)": ({"logit_adjustment": 1.0}, {}),
}


def run(name: str, args: argparse.Namespace) -> dict[str, float]:
    model_args, data_args = OPTIONS[name]
    seed_everything(0)
    fractions = [1.0] * (len(SHAPE_CLASSES) - 1) + [args.rare_fraction]
    num_train = round(args.per_class * sum(fractions))
    data = ImageDataModule(
        dataset="shapes",
        dataset_kwargs={"num_train": num_train, "num_val": 300, "num_test": 600, "image_size": args.size,
                        "train_class_fractions": fractions},
        image_size=args.size, batch_size=32, num_workers=0, auto_augment="none", scale=(0.6, 1.0), **data_args,
    )  # fmt: skip
    model = ImageClassifier(backbone=args.backbone, pretrained=False, num_classes=6, lr=3e-3, warmup_epochs=0.5,
                            label_smoothing=0.1, log_confusion_matrix=False, **model_args)  # fmt: skip
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        trainer = Trainer(accelerator="cpu", max_epochs=args.epochs, logger=False, enable_checkpointing=False,
                          enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir)  # fmt: skip
        trainer.fit(model, data)
        trainer.test(model, data, verbose=False)
    matrix = model.confusion_matrix
    assert matrix is not None
    recall = matrix.diag().float() / matrix.sum(1).clamp_min(1).float()
    worst = int(recall.argmin())
    return {
        "balanced accuracy": float(recall.mean()),
        "worst-class recall": float(recall[worst]),
        "worst class": SHAPE_CLASSES[worst],
        "ring recall": float(recall[SHAPE_CLASSES.index("ring")]),
        "seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--per_class", type=int, default=800)
    parser.add_argument("--rare_fraction", type=float, default=0.05)
    parser.add_argument("--epochs", type=int, default=14)
    args = parser.parse_args()
    torch.set_float32_matmul_precision("high")
    rows = {name: run(name, args) for name in OPTIONS}
    rings = round(args.per_class * args.rare_fraction)
    print(f"\n{args.backbone}, {args.size} px, {args.per_class} training images a class and {rings} rings, "
          f"{args.epochs} epochs; test: 100 images a class")  # fmt: skip
    print("| option | balanced accuracy | worst-class recall (class) | ring recall | time |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {r['balanced accuracy']:.1%} | {r['worst-class recall']:.1%} ({r['worst class']}) | "
              f"{r['ring recall']:.1%} | {r['seconds']:.0f} s |")  # fmt: skip


if __name__ == "__main__":
    main()
