"""``lightning-cv shard``: pack class folders or CSV lists into WebDataset tar shards with an index.

Wiring only: the data settings are the ``--data.*`` options of ``fit`` (the same discovery of classes and splits),
the work is :func:`lightning_cv.data.shard_writer.write_shards`.
"""

from __future__ import annotations

from typing import Any, Literal

__all__ = ["shard"]


def shard(
    output: str,
    shard_size: str = "1GB",
    workers: int = 1,
    image_check: Literal["header", "decode", "none"] = "header",
    *,
    data: dict[str, Any] | None = None,
) -> int:
    """Pack class folders or CSV lists (--data.*) into WebDataset tar shards with an index, ready for --data.shards.

    Writes <split>-000000.tar, ... (each image's bytes as <key>.<ext> and its class as <key>.cls, or for multi-label
    lists its label indices as <key>.json), index.json and <split>.members.npz into --output. Images are shuffled
    once (seeded by --data.seed) before they are dealt into shards. Unusable files are skipped and listed. An
    interrupted run started again keeps the shards it finished.

    Args:
        output: the folder for the shards and the index.
        shard_size: the most image data per shard, e.g. 1GB, 500MB.
        workers: shards written in parallel by this many processes.
        image_check: header reads each image's header, decode decodes it, none trusts the files.
        data: the data to pack (the --data.* options: data_dir, train_file, val_split, ...).
    """
    from lightning_cv.data.batch import MULTILABEL
    from lightning_cv.data.datamodule import ImageDataModule
    from lightning_cv.data.discovery import data_source, discover
    from lightning_cv.data.shard_writer import write_shards

    settings = dict(data or {})
    data_module = ImageDataModule(**settings)
    hp: Any = data_module.hparams
    source = data_source(hp)
    if source not in ("folders", "list"):
        raise ValueError(
            f"`lightning-cv shard` packs image files: pass `--data.data_dir` (class folders) or `--data.train_file` "
            f"(a CSV list), not a {source} source."
        )
    found = discover(hp)
    multilabel = found.task == MULTILABEL
    report = write_shards(
        {
            split: [(str(p), tuple(y) if multilabel else int(y)) for p, y in rows]  # type: ignore[arg-type]
            for split, rows in found.records.items()
        },
        found.class_names,
        output,
        shard_size=shard_size,
        workers=workers,
        seed=int(hp.seed),
        image_check=image_check,
        max_pixels=int(hp.max_image_pixels),
    )
    print(report.summary())
    options = {"train": "--data.shards", "val": "--data.val_shards", "test": "--data.test_shards"}
    given = [
        f"{options[split]} '{output}/{split}-{{000000..{len(names) - 1:06d}}}.tar'"
        for split, names in report.shards.items()
        if names and split in options
    ]
    if given:
        print(f"Train from them: lightning-cv fit {' '.join(given)} ...")
    return 0
