"""Pack a labelled image collection (class folders, CSV lists) into WebDataset tar shards with an index.

The shards are plain WebDataset: each image is a tar member ``<key>.<ext>`` (its original bytes, never re-encoded)
followed by ``<key>.cls`` (the class index as text; for multi-label data ``<key>.json``, ``{"labels": [2, 5]}``), so
``webdataset``, ``wids`` and timm's reader read them as they are. Beside them, ``index.json`` (class names, task,
each shard's image count, size, per-class counts and SHA-256) and ``<split>.members.npz`` (for every image: its
shard, the byte offset and size of its data inside the tar, its label or labels, its key and the first 16 bytes of
the SHA-256 of its bytes; ``<split>.sources.json`` lists the files the images came from). With those, setting up
reads two small files instead of every shard, images are read by offset (random access, so training resumes exactly
and splits across processes as for folders), and the leakage check compares hashes without reading images.

Images are shuffled once (seeded) before they are dealt into shards, so a reader that streams shards in order with a
shuffle buffer does not see one class at a time. Each shard is written to ``<name>.partial`` and renamed when
complete, with its member table in ``.parts/``; an interrupted run started again skips the shards already done.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import re
import tarfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError, check_image

__all__ = ["INDEX_NAME", "SHARD_FORMAT", "ShardReport", "parse_size", "write_shards"]

#: the largest image packed (readers refuse larger members)
MAX_MEMBER_BYTES = 256 * 2**20
#: the index file written beside the shards
INDEX_NAME = "index.json"
#: the ``format`` the index records, checked by the reader
SHARD_FORMAT = "lightning_cv.webdataset/1"
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "KIB": 2**10, "MIB": 2**20,
          "GIB": 2**30}  # fmt: skip


def parse_size(size: str | int) -> int:
    """``"1GB"``, ``"500MB"``, ``"64MiB"`` or a number of bytes, as bytes."""
    if isinstance(size, int) and not isinstance(size, bool):
        value = size
    else:
        match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?I?B?)\s*", str(size).upper())
        if match is None or match.group(2) not in _UNITS:
            raise ValueError(f"Expected a size such as '1GB', '500MB' or '64MiB', but got {size!r}.")
        value = int(float(match.group(1)) * _UNITS[match.group(2)])
    if value < 1024:
        raise ValueError(f"Expected a shard size of at least 1KB, but got {size!r}.")
    return value


@dataclass
class ShardReport:
    """What :func:`write_shards` wrote: shards per split, images, bytes, the files it skipped and why."""

    output: Path
    shards: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    bytes: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    #: shards found complete from an earlier, interrupted run and not written again
    reused: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{s}: {n} images in {len(self.shards[s])} shard(s)" for s, n in self.images.items())
        lines = [f"Wrote {self.output / INDEX_NAME} ({parts}; {self.bytes / 1e6:.1f} MB)"]
        if self.reused:
            lines.append(f"{self.reused} shard(s) were complete from an earlier run and kept.")
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} unusable file(s):")
            lines += [f"  {path}: {reason}" for path, reason in self.skipped[:20]]
            if len(self.skipped) > 20:
                lines.append(f"  ... and {len(self.skipped) - 20} more (all listed in {INDEX_NAME})")
        return "\n".join(lines)


class ImageRows(Protocol):
    """Images that are not files (the rows of a Hugging Face dataset): records name them by row number."""

    def image_bytes(self, index: int) -> bytes | None: ...

    def row_name(self, index: int) -> str: ...


def _size(source: Any, reader: ImageRows | None) -> int:
    if reader is None:
        return os.path.getsize(source)
    return len(reader.image_bytes(int(source)) or b"")


def _plan(rows: Sequence[tuple[Any, Any]], max_bytes: int, reader: ImageRows | None) -> list[list[tuple[Any, Any]]]:
    """Deal ``rows`` into consecutive shards of at most ``max_bytes`` of image data (at least one image each)."""
    shards: list[list[tuple[Any, Any]]] = [[]]
    used = 0
    for row in rows:
        size = _size(row[0], reader) + 1536  # the member headers and padding, roughly
        if shards[-1] and used + size > max_bytes:
            shards.append([])
            used = 0
        shards[-1].append(row)
        used += size
    return [s for s in shards if s]


def _member(name: str, data: bytes) -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o444, "", ""
    return info, io.BytesIO(data)


_SUFFIXES = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "GIF": "gif", "BMP": "bmp", "TIFF": "tif"}


def _read(source: Any, reader: ImageRows | None, check: str, max_pixels: int) -> tuple[str, bytes, str]:
    """The name, bytes and file extension of one image (a file, or row ``source`` of ``reader``)."""
    if reader is None:
        path = str(source)
        if check != "none":
            check_image(path, decode=check == "decode", max_pixels=max_pixels)
        if os.path.getsize(path) > MAX_MEMBER_BYTES:
            raise BadImageError(path, f"larger than {MAX_MEMBER_BYTES >> 20} MB, the most a member may be")
        return path, Path(path).read_bytes(), Path(path).suffix.lower().lstrip(".") or "img"
    name = reader.row_name(int(source))
    data = reader.image_bytes(int(source))
    if not data:
        raise BadImageError(name, f"the row holds no image bytes (or more than {MAX_MEMBER_BYTES >> 20} MB)")
    found = check_image(name, decode=check == "decode", max_pixels=max_pixels, data=data)  # its format names it
    return name, data, _SUFFIXES.get(found, found.lower() or "img")


def _write_shard(task: tuple[Path, str, list[tuple[Any, Any]], int, int, str, int, Any]) -> dict[str, Any]:
    """Write one shard; returns its member table (run in a worker process)."""
    output, name, rows, first_key, max_pixels, check, num_classes, reader = task
    partial = output / f"{name}.partial"
    offsets, sizes, labels, digests, sources, keys = [], [], [], [], [], []
    skipped: list[tuple[str, str]] = []
    whole = hashlib.sha256()
    with tarfile.open(partial, "w", format=tarfile.USTAR_FORMAT) as tar:
        for number, (source, label) in enumerate(rows):
            try:
                path, data, suffix = _read(source, reader, check, max_pixels)
            except (BadImageError, OSError) as err:
                skipped.append((str(getattr(err, "path", source)), getattr(err, "reason", str(err))))
                continue
            key = f"{first_key + number:09d}"
            info, body = _member(f"{key}.{suffix}", data)
            tar.addfile(info, body)
            # the data ends the member: the archive's position now, less the data rounded up to whole blocks
            offsets.append(tar.offset - -(-len(data) // tarfile.BLOCKSIZE) * tarfile.BLOCKSIZE)
            sizes.append(len(data))
            labels.append(label)
            digests.append(hashlib.sha256(data).digest()[:16])
            sources.append(path)
            keys.append(first_key + number)
            if isinstance(label, (tuple, list)):  # multi-label: the label indices, as webdataset decodes .json
                cls, text = _member(f"{key}.json", json.dumps({"labels": [int(i) for i in label]}).encode())
            else:
                cls, text = _member(f"{key}.cls", str(label).encode())
            tar.addfile(cls, text)
    with open(partial, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            whole.update(block)
    flat = [i for y in labels for i in y] if any(isinstance(y, (tuple, list)) for y in labels) else labels
    counts = np.bincount(np.asarray(flat, dtype=np.int64), minlength=num_classes).tolist()
    table = {
        "name": name,
        "images": len(labels),
        "bytes": partial.stat().st_size,
        "sha256": whole.hexdigest(),
        "class_counts": counts,
        "offsets": offsets,
        "sizes": sizes,
        "labels": [list(y) if isinstance(y, (tuple, list)) else y for y in labels],
        "digests": [d.hex() for d in digests],
        "sources": sources,
        "keys": keys,
        "skipped": skipped,
        "planned": [p for p, _ in rows],
    }
    parts = output / ".parts"
    (parts / f"{name}.json.partial").write_text(json.dumps(table))
    os.replace(partial, output / name)  # the shard first: a table in .parts/ always has its shard complete
    os.replace(parts / f"{name}.json.partial", parts / f"{name}.json")
    return table


def _done(output: Path, name: str, rows: list[tuple[Any, Any]]) -> dict[str, Any] | None:
    """The member table of a shard an earlier run completed with the same images, else ``None``."""
    table_path = output / ".parts" / f"{name}.json"
    if not table_path.is_file() or not (output / name).is_file():
        return None
    table = json.loads(table_path.read_text())
    if table.get("planned") != [p for p, _ in rows] or (output / name).stat().st_size != table.get("bytes"):
        return None
    return dict(table)


def write_shards(
    records: dict[str, list[tuple[str, Any]]],
    class_names: Sequence[str],
    output: str | os.PathLike[str],
    *,
    shard_size: str | int = "1GB",
    workers: int = 1,
    seed: int = 0,
    image_check: str = "header",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    log: Callable[[str], None] = print,
    readers: dict[str, ImageRows] | None = None,
) -> ShardReport:
    """Write each split's ``(path, class index)`` records as WebDataset shards ``<split>-NNNNNN.tar`` in ``output``.

    Args:
        records: the images of each split (``"train"``, ``"val"``, ``"test"``); multi-label data gives each path a
            tuple of label indices instead of one class index.
        class_names: the class names in label order.
        output: the folder for the shards and the index (created; shards an earlier, interrupted run finished with
            the same plan are kept, others there are written again; a folder with an index already is refused).
        shard_size: the most image data per shard (``"1GB"``; WebDataset's guidance is 100 MB to a few GB).
        workers: shards written in parallel by this many processes.
        seed: the seed of the one-time shuffle that deals images into shards.
        image_check: ``"header"`` reads each image's header, ``"decode"`` decodes it, ``"none"`` trusts the files;
            unusable files are skipped and listed.
        max_pixels: larger images are refused as decompression bombs.
        readers: for a split whose images are not files (a Hugging Face dataset's rows), what reads them; its
            records then give row numbers instead of paths.
    """
    max_bytes = parse_size(shard_size)
    if image_check not in ("header", "decode", "none"):
        raise ValueError(f"Expected `image_check` 'header', 'decode' or 'none', but got {image_check!r}.")
    if workers < 1:
        raise ValueError(f"Expected `workers` >= 1, but got {workers}.")
    out = Path(output)
    if (out / INDEX_NAME).exists():
        raise ValueError(f"'{out}' already holds shards ({INDEX_NAME}); write to an empty folder or remove them.")
    (out / ".parts").mkdir(parents=True, exist_ok=True)
    report = ShardReport(out)
    tasks, kept = [], []
    first_key = 0
    for split, rows in records.items():
        order = list(rows)
        random.Random(f"{seed}-{split}").shuffle(order)
        reader = (readers or {}).get(split)
        for number, shard_rows in enumerate(_plan(order, max_bytes, reader)):
            name = f"{split}-{number:06d}.tar"
            done = _done(out, name, shard_rows)
            if done is not None:
                kept.append((split, done))
            else:
                task = (out, name, shard_rows, first_key, max_pixels, image_check, len(class_names), reader)
                tasks.append((split, task))
            first_key += len(shard_rows)
    report.reused = len(kept)
    if tasks:
        log(f"Writing {len(tasks)} shard(s) with {workers} process(es) ...")
    if workers > 1 and len(tasks) > 1:
        with ProcessPoolExecutor(workers) as pool:
            written = list(zip([s for s, _ in tasks], pool.map(_write_shard, [t for _, t in tasks]), strict=True))
    else:
        written = [(split, _write_shard(task)) for split, task in tasks]
    tables: dict[str, list[dict[str, Any]]] = {split: [] for split in records}
    for split, table in kept + written:
        tables[split].append(table)
    multilabel = any(isinstance(y, (tuple, list)) for rows in records.values() for _, y in rows)
    index: dict[str, Any] = {"format": SHARD_FORMAT, "task": "multilabel" if multilabel else "multiclass",
                             "class_names": list(class_names),
                             "splits": {}, "skipped": []}  # fmt: skip
    for split, shard_tables in tables.items():
        shard_tables.sort(key=lambda t: t["name"])
        _write_members(out / f"{split}.members.npz", shard_tables, multilabel)
        _write_json(out / f"{split}.sources.json", [s for t in shard_tables for s in t["sources"]])
        counts = np.sum([t["class_counts"] for t in shard_tables], axis=0).tolist() if shard_tables else []
        index["splits"][split] = {
            "images": sum(t["images"] for t in shard_tables),
            "class_counts": counts,
            "members": f"{split}.members.npz",
            "sources": f"{split}.sources.json",
            "shards": [{k: t[k] for k in ("name", "images", "bytes", "sha256", "class_counts")} for t in shard_tables],
        }
        report.shards[split] = [t["name"] for t in shard_tables]
        report.images[split] = index["splits"][split]["images"]
        report.bytes += sum(t["bytes"] for t in shard_tables)
        for table in shard_tables:
            report.skipped += [tuple(s) for s in table["skipped"]]  # type: ignore[misc]
    index["skipped"] = [{"path": p, "reason": r} for p, r in report.skipped]
    scratch = out / f"{INDEX_NAME}.partial"
    scratch.write_text(json.dumps(index, indent=1))
    os.replace(scratch, out / INDEX_NAME)  # last: a folder with an index is complete
    return report


def _write_json(path: Path, value: Any) -> None:
    scratch = path.with_name(f"{path.name}.partial")
    scratch.write_text(json.dumps(value))
    os.replace(scratch, path)


def _write_members(path: Path, tables: list[dict[str, Any]], multilabel: bool = False) -> None:
    """The per-image arrays of one split: shard number, offset, size, label, 16-byte hash and key (52 bytes an
    image: 67 MB for ImageNet-1k's 1.28M, read in well under a second). The source paths go to a separate file,
    read only to name images in a report. Multi-label data has, instead of ``label``, ``label_start`` (offsets, one
    more than images) into ``label_index`` (int32 label indices): 4 bytes a label more."""
    shard = np.asarray([i for i, t in enumerate(tables) for _ in t["offsets"]], dtype=np.int32)
    digests = [bytes.fromhex(d) for t in tables for d in t["digests"]]
    labels = [y for t in tables for y in t["labels"]]
    label_arrays: dict[str, np.ndarray]
    if multilabel:
        sizes = np.asarray([len(y) for y in labels], dtype=np.int64)
        label_arrays = {
            "label_start": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            "label_index": np.asarray([i for y in labels for i in y], dtype=np.int32),
        }
    else:
        label_arrays = {"label": np.asarray(labels, dtype=np.int64)}
    scratch = path.with_name(f"{path.name}.partial.npz")
    np.savez(
        scratch,
        shard=shard.astype(np.int32),
        offset=np.asarray([o for t in tables for o in t["offsets"]], dtype=np.int64),
        size=np.asarray([s for t in tables for s in t["sizes"]], dtype=np.int64),
        digest=np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(-1, 16),
        key=np.asarray([k for t in tables for k in t["keys"]], dtype=np.int64),
        **label_arrays,  # type: ignore[arg-type]  # numpy types every keyword as its allow_pickle
    )
    os.replace(scratch, path)
