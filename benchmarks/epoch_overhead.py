"""What lightning_cv costs per training epoch against a plain PyTorch loop, measured side by side in one process.

Both train the same timm model on the same in-memory data with the same batch size, AdamW and a per-step cosine
schedule. The plain loop is the floor: forward, loss, backward, step. The lightning_cv side is ``ImageClassifier``
under ``lightning.Trainer`` with its per-step logging (train loss on the progress bar) and no validation,
checkpointing or logger. Reported, as medians over alternating repeats: the end-to-end time from model creation to
the end of training (Trainer set-up included), and the time of the last epoch alone.

    python benchmarks/epoch_overhead.py                       # resnet18, 64 px, batch 32, 512 images
    python benchmarks/epoch_overhead.py --backbone test_vit --size 160 --repeats 5
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from lightning.pytorch import Callback, Trainer
from torch.utils.data import DataLoader, TensorDataset

from lightning_cv import ImageClassifier


def make_loader(n: int, size: int, batch_size: int, num_classes: int) -> DataLoader:
    g = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(n, 3, size, size, generator=g), torch.randint(0, num_classes, (n,), generator=g))
    return DataLoader(data, batch_size=batch_size, shuffle=True, generator=g)


def plain_loop(args: argparse.Namespace, loader: DataLoader) -> tuple[float, float]:
    """(end-to-end seconds from model creation to the end of training, seconds of the last epoch)."""
    start = time.perf_counter()
    torch.manual_seed(0)
    model = ImageClassifier(backbone=args.backbone, num_classes=args.num_classes, pretrained=False).model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * len(loader))
    model.train()
    for _ in range(args.epochs):
        epoch_start = time.perf_counter()
        for images, target in loader:
            optimizer.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(images), target)
            loss.backward()
            optimizer.step()
            scheduler.step()
    end = time.perf_counter()
    return end - start, end - epoch_start


def lightning_loop(args: argparse.Namespace, loader: DataLoader) -> tuple[float, float]:
    """The same, through ImageClassifier and lightning.Trainer."""
    marks: dict[str, float] = {}

    class EpochTimer(Callback):
        def on_train_epoch_start(self, trainer: Trainer, pl_module: ImageClassifier) -> None:
            marks["epoch"] = time.perf_counter()

    start = time.perf_counter()
    torch.manual_seed(0)
    model = ImageClassifier(backbone=args.backbone, num_classes=args.num_classes, pretrained=False, lr=1e-3)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=args.epochs,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=args.progress_bar,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[EpochTimer()],
    )
    trainer.fit(model, loader)
    end = time.perf_counter()
    return end - start, end - marks["epoch"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--num-classes", type=int, default=10)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--progress-bar", action="store_true", help="time with Lightning's progress bar on")
    args = parser.parse_args()

    loader = make_loader(args.images, args.size, args.batch_size, args.num_classes)
    plain_loop(args, loader)  # warm-up: allocator, kernels, first-use imports
    lightning_loop(args, loader)
    plain, light = [], []
    for i in range(args.repeats):  # alternate which goes first, so drift in machine speed hits both alike
        pair = [plain_loop, lightning_loop] if i % 2 == 0 else [lightning_loop, plain_loop]
        for fn in pair:
            (plain if fn is plain_loop else light).append(fn(args, loader))
    steps = len(loader)
    print(
        f"backbone={args.backbone} size={args.size} batch={args.batch_size} steps/epoch={steps} "
        f"epochs={args.epochs} threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    for label, index in (("end to end", 0), ("last epoch", 1)):
        p = statistics.median(t[index] for t in plain)
        lt = statistics.median(t[index] for t in light)
        print(f"{label}: plain {p:7.3f} s  lightning_cv {lt:7.3f} s  ratio {lt / p:.3f}")


if __name__ == "__main__":
    main()
