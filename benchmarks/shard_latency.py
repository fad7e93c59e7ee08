"""Reading shards over HTTP from a server with a round-trip latency: one range request at a time against a batch's
requests in flight together (what ``ShardDataset`` does through the DataLoader), and local files for reference.

Makes ``--images`` small JPEGs, packs them with ``write_shards``, serves the shards from a real HTTP server on
127.0.0.1 that waits ``--latency`` seconds before each answer (a distant object store), and reads the same shuffled
images, decoded and transformed, in one process:

    python benchmarks/shard_latency.py                  # 2,000 images, 20 ms, batches of 64 (~1 min)
    python benchmarks/shard_latency.py --latency 0.05 --batch 128
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' HTTP server

from benchmarks.shards import CLASSES, make_tree
from lightning_cv import ImageDataModule
from lightning_cv.data import shard_reader
from lightning_cv.data.shard_writer import write_shards
from tests.range_server import serve


def rate(dataset: object, order: np.ndarray, batch: int) -> float:
    """Images per second; ``batch`` 1 reads each image on its own, more reads a batch as the DataLoader does."""
    start = time.perf_counter()
    for first in range(0, len(order), batch):
        indices = [int(i) for i in order[first : first + batch]]
        items = dataset.__getitems__(indices) if batch > 1 else [dataset[indices[0]]]  # type: ignore[attr-defined,index]
        assert all(item is not None for item in items)
    return len(order) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--size", type=int, default=48, help="side of each JPEG")
    parser.add_argument("--latency", type=float, default=0.02, help="seconds the server waits before each answer")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="lcv-latency-"))
    try:
        make_tree(scratch / "photos", args.images, args.size)
        files = sorted((scratch / "photos").rglob("*.jpg"))
        records = {"train": [(str(p), CLASSES.index(p.parent.name)) for p in files]}
        report = write_shards(records, CLASSES, scratch / "shards", shard_size="20MB", log=lambda _: None)
        last = len(report.shards["train"]) - 1
        order = np.random.default_rng(1).permutation(len(records["train"]))
        with serve(scratch / "shards", latency=args.latency) as (url, stats):
            rates = {}
            for name, root, batch in (("local files", str(scratch / "shards"), args.batch),
                                      ("HTTP, one request at a time", url, 1),
                                      (f"HTTP, batches of {args.batch}", url, args.batch)):  # fmt: skip
                data = ImageDataModule(shards=f"{root}/train-{{000000..{last:06d}}}.tar", image_size=32,
                                       num_workers=0, val_split=0.0, auto_augment="none")  # fmt: skip
                data.setup("fit")
                rates[name] = rate(data.datasets["train"], order, batch)
        print(f"\n{len(order)} JPEGs of {args.size} px, server latency {args.latency * 1e3:.0f} ms, one process, "
              f"up to {shard_reader.CONCURRENT_READS} requests in flight (most seen: {stats.most_in_flight})")
        print("| reading | images/s |\n| --- | --- |")
        slow = rates["HTTP, one request at a time"]
        for name, value in rates.items():
            print(f"| {name} | {value:.0f} ({value / slow:.1f}x the one-at-a-time rate) |")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
