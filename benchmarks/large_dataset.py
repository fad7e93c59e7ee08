"""Setup time and peak memory of ImageDataModule on a generated folder tree of many small images.

    .venv/bin/python benchmarks/large_dataset.py --images 100000            # generate (once) and measure
    .venv/bin/python benchmarks/large_dataset.py --images 100000 --root /tmp/lcv_100k --repeats 2

The tree is ``<root>/train/<class>/<n>.png`` plus a ``val`` split (10%), 100 classes, 8x8 PNG files. The first
setup reads every file once (header check and content hash for the leakage check, in one pass) and writes the
index cache; later setups read only directory listings and file sizes/times. Each measurement runs in a fresh
process, so the memory figure is that setup's own peak (resident set size, and Python allocations by tracemalloc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def generate(root: Path, images: int, classes: int = 100) -> None:
    from PIL import Image

    marker = root / ".complete"
    if marker.is_file() and marker.read_text() == str(images):
        return
    start = time.perf_counter()
    val = images // 10
    for split, count in (("train", images - val), ("val", val)):
        for c in range(classes):
            (root / split / f"class{c:03d}").mkdir(parents=True, exist_ok=True)
        for i in range(count):
            # distinct content per file, so the leakage check finds no duplicates
            value = (i * 7919 + (0 if split == "train" else 1 << 20)) % (1 << 24)
            colour = (value & 255, (value >> 8) & 255, (value >> 16) & 255)
            image = Image.new("RGB", (8, 8), colour)
            image.putpixel((i % 8, (i // 8) % 8), (255 - colour[0], i % 251, split == "val"))
            image.save(root / split / f"class{i % classes:03d}" / f"{i:07d}.png")
    marker.write_text(str(images))
    print(f"generated {images} files in {time.perf_counter() - start:.0f} s under {root}")


def measure(root: Path, cache_dir: Path) -> dict[str, float]:
    """One setup in this process: seconds and peak memory."""
    import resource
    import tracemalloc

    os.environ["LIGHTNING_CV_CACHE"] = str(cache_dir)
    from lightning_cv.data import ImageDataModule

    tracemalloc.start()
    start = time.perf_counter()
    data = ImageDataModule(data_dir=str(root), image_size=8, mean=(0.5,) * 3, std=(0.5,) * 3, auto_augment="none")
    data.prepare_data()
    data.setup("fit")
    seconds = time.perf_counter() - start
    _, python_peak = tracemalloc.get_traced_memory()
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "seconds": seconds,
        "python_peak_mb": python_peak / 1e6,
        "peak_rss_mb": rss_kb / 1e3,
        "train": len(data.datasets["train"]),
        "val": len(data.datasets["val"]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--root", default=None, help="where the tree is generated (default: /tmp/lcv_<images>)")
    parser.add_argument("--repeats", type=int, default=1, help="cached setups to time after the first")
    parser.add_argument("--measure", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--cache", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = Path(args.root or f"/tmp/lcv_{args.images}")
    if args.measure:
        print(json.dumps(measure(root, Path(args.cache))))
        return
    generate(root, args.images)
    cache = root.parent / f"{root.name}_index_cache"
    if cache.exists():
        for file in cache.iterdir():
            file.unlink()
    runs = []
    for label in ["first setup (reads every file once)"] + ["cached setup"] * args.repeats:
        command = [sys.executable, __file__, "--measure", "--root", str(root), "--cache", str(cache)]
        out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
        if out.returncode:
            sys.exit(out.stderr[-3000:])
        result = json.loads(out.stdout.strip().splitlines()[-1])
        runs.append((label, result))
        print(
            f"{label:<38} {result['seconds']:7.1f} s   peak RSS {result['peak_rss_mb']:7.0f} MB   "
            f"Python peak {result['python_peak_mb']:6.0f} MB   ({result['train']} train, {result['val']} val)",
            flush=True,
        )


if __name__ == "__main__":
    main()
