"""Training-pipeline throughput of ImageDataModule against torchvision's ImageFolder, side by side in one process.

Both read the same folder with the same transforms and the same DataLoader settings; the figure is images per second
through decode + augment + collate. Generated folders: "pets-size" JPEG photos (500x375) and "phone-size" ones
(3000x2000, where decoding dominates), both through RandomResizedCrop 224, flip, RandAugment(2, 9) and normalisation;
and "MNIST-size" 28x28 greyscale PNGs (where fixed per-image costs dominate) through RandomResizedCrop 32 and
normalisation alone, and with flip and RandAugment(2, 9) too. Also measured: the cost of on-device MixUp/CutMix per
batch next to one resnet18 training step at 224 px.

    python benchmarks/data_pipeline.py                  # about 3 minutes on 2 CPU cores
    python benchmarks/data_pipeline.py --workers 2 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader
from torchvision.datasets import ImageFolder

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.data import BatchMixer, build_train_transform


def make_small(root: Path, count: int, classes: int = 10) -> Path:
    """28x28 greyscale PNGs: a bright blob on noise, like a digit scan."""
    rng = np.random.default_rng(0)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        image = rng.normal(20, 10, (28, 28))
        y, x = rng.integers(6, 22, 2)
        image[y - 4 : y + 4, x - 3 : x + 3] += 200
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8), mode="L").save(folder / f"{i}.png")
    return root


def make_photos(root: Path, count: int, size: tuple[int, int], classes: int = 4) -> Path:
    """Smooth colour fields with noise: JPEG sizes close to real photos, unlike pure noise."""
    rng = np.random.default_rng(0)
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    for i in range(count):
        folder = root / f"class{i % classes}"
        folder.mkdir(parents=True, exist_ok=True)
        phase = rng.uniform(0, 6.28, 3)
        freq = rng.uniform(0.002, 0.02, 3)
        image = np.stack([127 + 100 * np.sin(freq[c] * (xx + yy) + phase[c]) for c in range(3)], axis=-1)
        image += rng.normal(0, 10, image.shape)
        Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    return root


def throughput(loader: DataLoader) -> float:
    start, count = time.perf_counter(), 0
    for images, _ in loader:
        count += images.shape[0]
    return count / (time.perf_counter() - start)


def compare(root: Path, args: argparse.Namespace, size: int = 224, augment: bool = True) -> tuple[float, float]:
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    policy: dict = {"randaugment": {"num_ops": 2, "magnitude": 9}} if augment else {"auto_augment": "none", "hflip": 0}
    tf = build_train_transform(size, mean=mean, std=std, **policy)
    baseline = DataLoader(
        ImageFolder(str(root), transform=tf),
        batch_size=32,
        shuffle=True,
        num_workers=args.workers,
        persistent_workers=args.workers > 0,
    )
    dm = ImageDataModule(
        data_dir=str(root),
        val_split=0.0,
        batch_size=32,
        num_workers=args.workers,
        image_size=size,
        mean=mean,
        std=std,
        **policy,
        leakage_check="off",
        image_check="none",
    )
    dm.setup("fit")
    ours = dm.train_dataloader()
    throughput(baseline)  # warm-up: page cache, worker start-up
    throughput(ours)
    base, mine = [], []
    for i in range(args.repeats):
        pair = [(baseline, base), (ours, mine)] if i % 2 == 0 else [(ours, mine), (baseline, base)]
        for loader, out in pair:
            out.append(throughput(loader))
    return statistics.median(base), statistics.median(mine)


def mixing_cost() -> tuple[float, float]:
    images, labels = torch.randn(32, 3, 224, 224), torch.randint(0, 10, (32,))
    mixer = BatchMixer(10, mixup_alpha=0.2, cutmix_alpha=1.0, seed=0)
    for _ in range(3):
        mixer(images, labels)
    start = time.perf_counter()
    for _ in range(20):
        mixer(images, labels)
    mix = (time.perf_counter() - start) / 20
    model = ImageClassifier(backbone="resnet18", num_classes=10, pretrained=False).model
    opt = torch.optim.AdamW(model.parameters())
    times = []
    for _ in range(3):
        start = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(images), labels).backward()
        opt.step()
        times.append(time.perf_counter() - start)
    return mix, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the workers and the main process share the cores, as in training
    print(f"workers={args.workers} repeats={args.repeats} batch=32")
    with tempfile.TemporaryDirectory() as tmp:
        small = make_small(Path(tmp) / "small", 2048)
        rows = [
            ("MNIST-size 28x28 PNG, crop 32", lambda: compare(small, args, size=32, augment=False)),
            ("MNIST-size, crop 32 + RandAugment", lambda: compare(small, args, size=32)),
        ]
        for label, count, size in (("pets-size 500x375", 256, (500, 375)), ("phone-size 3000x2000", 48, (3000, 2000))):
            root = make_photos(Path(tmp) / label.split()[0], count, size)
            rows.append((f"{label} JPEG, 224 + RandAugment", lambda root=root: compare(root, args)))
        for label, run in rows:
            base, mine = run()
            print(
                f"{label:<40} ImageFolder {base:7.1f} img/s   ImageDataModule {mine:7.1f} img/s   "
                f"ratio {mine / base:.2f}"
            )
    torch.set_num_threads(threads)
    mix, step = mixing_cost()
    print(
        f"mixing a 32x3x224x224 batch: {mix * 1000:.1f} ms; resnet18 training step: {step * 1000:.0f} ms "
        f"({100 * mix / step:.2f}% of a step)"
    )


if __name__ == "__main__":
    main()
