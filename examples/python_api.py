"""Train, test, checkpoint and reload an ImageClassifier offline, on the embedded shapes dataset.

Run with ``.venv/bin/python examples/python_api.py`` (after ``make install``). Writes TensorBoard logs and
checkpoints under ``runs/python_api/``. No network: the backbone starts from random weights (``pretrained=False``);
with internet, ``pretrained=True`` downloads timm's ImageNet weights and trains much faster.
"""

from __future__ import annotations

import argparse

from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger

from lightning_cv import ImageClassifier, ImageDataModule


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--out", default="runs/python_api")
    args = parser.parse_args()

    seed_everything(0, workers=True)
    data = ImageDataModule(
        dataset="shapes",
        dataset_kwargs={"num_train": 4000, "image_size": 48},
        image_size=48,
        batch_size=32,
        scale=(0.6, 1.0),
        auto_augment="none",
    )
    model = ImageClassifier(
        backbone=args.backbone,
        num_classes=data.num_classes,
        class_names=data.class_names,
        pretrained=False,
        lr=3e-3,
        warmup_epochs=0.5,
        label_smoothing=0.1,
    )
    best = ModelCheckpoint(monitor="val_acc", mode="max", filename="best-{epoch}-{val_acc:.3f}", save_last=True)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        default_root_dir=args.out,
        logger=TensorBoardLogger(args.out, name="logs"),
        callbacks=[best, LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=10,
    )
    trainer.fit(model, data)
    print(f"best checkpoint: {best.best_model_path} (val_acc {best.best_model_score:.3f})")

    reloaded = ImageClassifier.load_from_checkpoint(best.best_model_path)
    results = trainer.test(reloaded, data, verbose=False)[0]
    print("test metrics of the reloaded best checkpoint:")
    for name, value in sorted(results.items()):
        print(f"  {name:<16} {value:.4f}")
    images, labels = next(iter(data.test_dataloader()))
    out = reloaded.eval().predict_step(images[:6], 0)
    for truth, name, conf in zip(labels[:6].tolist(), out["class_names"], out["confidence"].tolist(), strict=True):
        print(f"  true {data.class_names[truth]:<9} predicted {name:<9} p={conf:.2f}")
    print(f"run directory: {trainer.log_dir}")


if __name__ == "__main__":
    main()
