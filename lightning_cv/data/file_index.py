"""What the setup checks learn about each image file, read once and cached across runs.

The checks of :class:`~lightning_cv.data.ImageDataModule` (is the file an image? is its content also in another
split?) need every file's header and a hash of its content. :func:`scan_files` reads each file once for both, and
keeps the answers in a cache keyed by path, size and modification time, so the next run (and every DDP process
after the first, which scans in ``prepare_data``) reads directory listings and file times only. On a tree of
100,000 small files the first setup took 11.2 s and a cached one 3.3 s (``benchmarks/large_dataset.py``).

The cache lives in ``$LIGHTNING_CV_CACHE`` (default ``~/.cache/lightning_cv``); ``LIGHTNING_CV_CACHE=off`` turns it
off. It is plain JSON, written atomically; a damaged or foreign file is ignored and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_cv.data.image_io import BadImageError, _open

__all__ = ["FileFacts", "cache_dir", "scan_files"]

_VERSION = 3


@dataclass
class FileFacts:
    """One file: its identity (the cache key), why it is unusable (or ``None``), its pixels and content digest.

    ``error`` never holds "too large": the pixel count is kept instead and compared with the caller's limit, so a
    changed ``max_image_pixels`` takes effect without reading the file again.
    """

    size: int
    mtime_ns: int
    ctime_ns: int = 0
    inode: int = 0
    error: str | None = None
    decoded: bool = False  # the error (or its absence) comes from a full decode, not the header alone
    digest: str | None = None
    phash: int | None = None
    pixels: int = 0

    def problem(self, max_pixels: int) -> str | None:
        """Why the file cannot be used with this pixel limit, or ``None``."""
        if self.error is None and self.pixels > max_pixels:
            return f"too large to decode safely ({self.pixels} pixels > {max_pixels}; raise `max_image_pixels`)"
        return self.error


def cache_dir() -> Path | None:
    """The folder of the index caches, or ``None`` when ``LIGHTNING_CV_CACHE=off``."""
    value = os.environ.get("LIGHTNING_CV_CACHE", "")
    if value.lower() in ("off", "0", "false", "none"):
        return None
    return Path(value).expanduser() if value else Path.home() / ".cache" / "lightning_cv"


def _cache_file(key: str) -> Path | None:
    folder = cache_dir()
    if folder is None:
        return None
    return folder / f"index-{hashlib.blake2b(key.encode(), digest_size=10).hexdigest()}.json"


def _load(path: Path | None) -> dict[str, FileFacts]:
    if path is None or not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        if raw.get("version") != _VERSION:
            return {}
        return {name: FileFacts(*row) for name, row in raw["files"].items()}
    except (OSError, ValueError, TypeError, KeyError):  # damaged or foreign: rebuild
        return {}


def _save(path: Path | None, facts: dict[str, FileFacts]) -> None:
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = {name: list(vars(f).values()) for name, f in facts.items()}
        text = json.dumps({"version": _VERSION, "files": rows}, separators=(",", ":"))  # one C-encoder call
        with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as handle:
            handle.write(text)
        os.replace(handle.name, path)  # atomic: readers see the old index or the new one
    except OSError:  # a read-only home folder must not stop training; the next run scans again
        pass


def _examine(path: str, key: tuple[int, int, int, int], decode: bool, max_pixels: int, digest: bool) -> FileFacts:
    """Read the file once: its digest (when wanted), its header, and with ``decode`` all its pixel data."""
    from PIL import Image

    size, mtime, ctime, inode = key
    facts = FileFacts(size=size, mtime_ns=mtime, ctime_ns=ctime, inode=inode, decoded=decode)
    try:
        data: bytes | None = None  # the header alone needs no more than the file's first bytes
        if digest or decode:
            content = Path(path).read_bytes()
            facts.digest = hashlib.blake2b(content, digest_size=16).hexdigest() if digest else None
            data = content
        image = _open(path, max_pixels=1 << 62, data=data)  # the pixel limit is applied later, from the count
    except BadImageError as err:
        facts.error = err.reason
        return facts
    except OSError as err:
        facts.error = f"missing or unreadable file ({type(err).__name__}: {err.strerror or err})"
        return facts
    try:
        facts.pixels = image.width * image.height
        if decode and facts.pixels <= max_pixels:  # never decode a decompression bomb
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image.load()
        elif decode:
            facts.decoded = False  # not decoded: a larger limit later must decode it then
    except Exception as err:  # decoders raise all kinds (TypeError from a fuzzed TIFF): the file is unusable
        facts.error = f"cannot be decoded ({type(err).__name__}: {err})"
    finally:
        image.close()
    return facts


def _needs_reading(
    known: FileFacts, identity: tuple[int, int, int, int], decode: bool, max_pixels: int, digest: bool
) -> bool:
    if (known.size, known.mtime_ns, known.ctime_ns, known.inode) != identity:
        return True
    usable = known.error is None
    return (decode and usable and not known.decoded and known.pixels <= max_pixels) or (
        digest and usable and known.digest is None
    )


def scan_files(
    paths: Sequence[str],
    *,
    key: str,
    decode: bool = False,
    max_pixels: int,
    digest: bool = True,
    perceptual: bool = False,
) -> dict[str, FileFacts]:
    """Facts for every path: from the cache ``key`` when the file's size and time are unchanged, else read once.

    Args:
        paths: the files.
        key: names the cache (e.g. the data folder); one cache per data source.
        decode: decode whole images (finds truncated files) rather than reading headers.
        max_pixels: larger images count as unusable (decompression bombs).
        digest: hash each file's content (for the leakage check); without it only headers are read.
        perceptual: also compute the perceptual hash (one more decode of each new file).
    """
    from lightning_cv.data.checks import perceptual_hash

    cache_path = _cache_file(key)
    cached = _load(cache_path)
    facts: dict[str, FileFacts] = {}
    changed = False
    for path in paths:
        try:
            stat = os.stat(path)
            # ctime and inode too: copies that keep the modification time (cp -p, rsync -t) change those
            identity = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        except OSError:
            identity = (-1, -1, -1, -1)
        known = cached.get(path)
        if known is None or _needs_reading(known, identity, decode, max_pixels, digest):
            known = _examine(path, identity, decode, max_pixels, digest)
            changed = True
        if perceptual and known.problem(max_pixels) is None and known.phash is None:
            try:
                known.phash = perceptual_hash(path)
            except (BadImageError, OSError, ValueError):
                known.phash = None
            changed = True
        facts[path] = known
    if changed or len(facts) != len(cached):
        _save(cache_path, facts)
    return facts
