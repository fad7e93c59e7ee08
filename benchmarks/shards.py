"""WebDataset shards against the same images as a folder tree: setup time, reading speed, and the time to write.

Makes ``--images`` small JPEGs in class folders (train/ and val/), then, in one run on this machine:

1. the folder source's setup (``ImageDataModule(data_dir=...).setup("fit")``): the first run builds the file index
   (every header read), a second run reuses it;
2. ``lightning-cv shard`` on the tree (``write_shards``, ``--workers`` processes);
3. the shard source's setup (it reads ``index.json`` and the member table only);
4. reading speed: decoded and transformed images per second from each source, the same ``--read`` images in the
   same shuffled order, alternating rounds (the ratio is what carries over to another machine).

    python benchmarks/shards.py                           # 100k images (~6 min, ~1 GB of temporary files)
    python benchmarks/shards.py --images 20000 --read 2000
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_cv import ImageDataModule
from lightning_cv.data.shard_writer import write_shards

CLASSES = ["circle", "cross", "ring", "square", "star", "triangle"]


def make_tree(root: Path, images: int, size: int) -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, size, size, 3), dtype=np.uint8)
    for i in range(images):
        split = "val" if (i // len(CLASSES)) % 10 == 0 else "train"
        folder = root / split / CLASSES[i % len(CLASSES)]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = base[i % 64] // 2 + np.uint8(i % 97)
        pixels[:8, :8] = np.uint8(i % 251), np.uint8(i // 251 % 251), np.uint8(i // 63001)  # every image different
        Image.fromarray(pixels).save(folder / f"{i:07d}.jpg", quality=90)


def setup_seconds(**kwargs: object) -> tuple[float, ImageDataModule]:
    start = time.perf_counter()
    data = ImageDataModule(image_size=32, num_workers=0, auto_augment="none", **kwargs)  # type: ignore[arg-type]
    data.prepare_data()  # as the Trainer calls it: where the folder source builds its file index
    data.setup("fit")
    return time.perf_counter() - start, data


def read_rate(data: ImageDataModule, order: np.ndarray) -> float:
    dataset = data.datasets["train"]
    start = time.perf_counter()
    for i in order:
        dataset[int(i)]
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=48, help="side of each JPEG")
    parser.add_argument("--read", type=int, default=5000, help="images read per source per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="processes writing shards")
    parser.add_argument("--shard_size", default="100MB")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lcv-shards-"))
    try:
        started = time.perf_counter()
        make_tree(scratch / "photos", args.images, args.size)
        made = time.perf_counter() - started
        folder_first, folders = setup_seconds(data_dir=str(scratch / "photos"))
        folder_again, folders = setup_seconds(data_dir=str(scratch / "photos"))
        records = {
            split: [(str(p), CLASSES.index(p.parent.name)) for p in sorted((scratch / "photos" / split).rglob("*.jpg"))]
            for split in ("train", "val")
        }
        started = time.perf_counter()
        report = write_shards(records, CLASSES, scratch / "shards", shard_size=args.shard_size, workers=args.workers,
                              log=lambda _: None)  # fmt: skip
        written = time.perf_counter() - started
        last = len(report.shards["train"]) - 1
        last_val = len(report.shards["val"]) - 1
        shard_setup, shards = setup_seconds(
            shards=f"{scratch}/shards/train-{{000000..{last:06d}}}.tar",
            val_shards=f"{scratch}/shards/val-{{000000..{last_val:06d}}}.tar",
        )
        count = min(args.read, len(shards.datasets["train"]), len(folders.datasets["train"]))
        order = np.random.default_rng(1).permutation(count)
        rates: dict[str, list[float]] = {"folders": [], "shards": []}
        for _ in range(args.rounds):
            rates["folders"].append(read_rate(folders, order))
            rates["shards"].append(read_rate(shards, order))
        best = {k: max(v) for k, v in rates.items()}
        mb = report.bytes / 1e6
        print(f"\n{args.images} JPEGs of {args.size} px ({made:.0f} s to make), {os.cpu_count()} CPUs")
        print("| | seconds |\n| --- | --- |")
        print(f"| folder setup, first run (builds the file index) | {folder_first:.2f} |")
        print(f"| folder setup, again (index reused) | {folder_again:.2f} |")
        print(f"| `lightning-cv shard` ({len(report.shards['train']) + last_val + 1} shards, {mb:.0f} MB, "
              f"{args.workers} processes) | {written:.1f} |")  # fmt: skip
        print(f"| shard setup (index and member table only) | {shard_setup:.2f} |")
        print(f"\nReading {count} training images in a shuffled order, decoded and transformed, one process, best of "
              f"{args.rounds} alternating rounds:")  # fmt: skip
        print(f"| source | images/s |\n| --- | --- |\n| folders | {best['folders']:.0f} |")
        print(f"| shards | {best['shards']:.0f} ({best['shards'] / best['folders']:.2f}x) |")
        print(f"Mean image size {mb * 1e6 / max(1, sum(report.images.values())) / 1e3:.1f} kB")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
