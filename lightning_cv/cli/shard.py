"""``lightning-cv shard``: pack class folders, CSV lists or a Hugging Face dataset into WebDataset tar shards.

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
    """Pack class folders, CSV lists or a Hugging Face dataset (--data.*) into WebDataset tar shards with an index,
    ready for --data.shards.

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
    if source not in ("folders", "list", "huggingface"):
        raise ValueError(
            f"`lightning-cv shard` packs image files or a Hugging Face dataset: pass `--data.data_dir` (class "
            f"folders), `--data.train_file` (a CSV list) or `--data.hf_dataset`, not a {source} source."
        )
    found = discover(hp)
    multilabel = found.task == MULTILABEL
    records: dict[str, list[tuple[Any, Any]]]
    if source == "huggingface":  # rows by number, read by the split itself
        records = {split: list(enumerate(part.labels)) for split, part in found.shards.items()}
    else:
        records = {
            split: [(str(p), tuple(y) if multilabel else int(y)) for p, y in rows]  # type: ignore[arg-type]
            for split, rows in found.records.items()
        }
    report = write_shards(
        records,
        found.class_names,
        output,
        shard_size=shard_size,
        workers=workers,
        seed=int(hp.seed),
        image_check=image_check,
        max_pixels=int(hp.max_image_pixels),
        readers=found.shards if source == "huggingface" else None,
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
