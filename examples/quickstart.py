"""Train, test, checkpoint and reload an ImageClassifier offline, on a procedurally generated texture task.

Run with ``make demo`` (sets up .venv first) or ``python examples/quickstart.py``. Writes TensorBoard logs and
checkpoints under ``runs/quickstart/``. No network: the backbone starts from random weights (``pretrained=False``);
with internet, ``pretrained=True`` downloads timm's ImageNet weights instead.
"""

from __future__ import annotations

import argparse
import math

import torch
from lightning.pytorch import Trainer, seed_everything
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ResNetClassifier

CLASSES = ["horizontal", "vertical", "checker", "diagonal"]


def textures(n: int, size: int, seed: int) -> TensorDataset:
    """Stripes, checkerboards and diagonals of random frequency, phase and colour under noise."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % len(CLASSES)
    yy, xx = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    images = torch.empty(n, 3, size, size)
    for i, label in enumerate(labels.tolist()):
        freq = 2 * math.pi * (0.06 + 0.12 * torch.rand(1, generator=g).item())
        phase = 2 * math.pi * torch.rand(1, generator=g).item()
        pattern = {
            0: torch.sin(freq * yy + phase),
            1: torch.sin(freq * xx + phase),
            2: torch.sin(freq * xx + phase) * torch.sin(freq * yy + phase) * 2,
            3: torch.sin(freq * (xx + yy) / math.sqrt(2) + phase),
        }[label]
        fg, bg = torch.rand(3, 1, 1, generator=g), torch.rand(3, 1, 1, generator=g)
        mask = (pattern > 0).float()
        images[i] = mask * fg + (1 - mask) * bg + 0.35 * torch.randn(3, size, size, generator=g)
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    images = (images - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)
    return TensorDataset(images, labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--out", default="runs/quickstart")
    args = parser.parse_args()

    seed_everything(0, workers=True)
    train = DataLoader(textures(640, args.size, seed=1), batch_size=32, shuffle=True)
    val = DataLoader(textures(160, args.size, seed=2), batch_size=64)
    test = DataLoader(textures(160, args.size, seed=3), batch_size=64)

    model = ResNetClassifier(
        backbone="resnet18",
        num_classes=len(CLASSES),
        class_names=CLASSES,
        pretrained=False,
        lr=2e-3,
        warmup_epochs=0.5,
        label_smoothing=0.1,
    )
    print(model.describe_freezing())
    best = ModelCheckpoint(monitor="val_acc", mode="max", filename="best-{epoch}-{val_acc:.3f}", save_last=True)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        default_root_dir=args.out,
        logger=TensorBoardLogger(args.out, name="logs"),
        callbacks=[best, LearningRateMonitor(logging_interval="step")],
        log_every_n_steps=5,
    )
    trainer.fit(model, train, val)
    print(f"best checkpoint: {best.best_model_path} (val_acc {best.best_model_score:.3f})")

    reloaded = ResNetClassifier.load_from_checkpoint(best.best_model_path)
    results = trainer.test(reloaded, test, verbose=False)[0]
    print("test metrics of the reloaded best checkpoint:")
    for name, value in sorted(results.items()):
        print(f"  {name:<16} {value:.4f}")
    batch = next(iter(test))[0][:6]
    out = reloaded.eval().predict_step(batch, 0)
    for name, conf in zip(out["class_names"], out["confidence"].tolist(), strict=True):
        print(f"  predicted {name:<11} p={conf:.2f}")
    print(f"run directory: {trainer.log_dir}")


if __name__ == "__main__":
    main()
