"""Read WebDataset shards written by :func:`~lightning_cv.data.shard_writer.write_shards`, by offset.

:func:`open_shards` resolves a shard pattern (``"shards/train-{000000..000123}.tar"``, a list; local paths,
``http(s)://`` URLs or any URL fsspec reads, such as ``s3://``) against the ``index.json`` beside the shards and
returns a :class:`ShardSplit`: the shards' URLs and, per image, the shard, byte offset, size, label and content hash.
:class:`ShardDataset` reads one image's bytes with one positioned read (``os.pread`` for a file, an HTTP ``Range``
request or an fsspec ranged read for a URL; a batch's requests in flight together), so it is a map-style dataset
like a folder's: the resumable sampler orders it from ``(seed, epoch)``, DDP ranks take disjoint strides, each image
gets its seeded augmentation, and a killed run resumes at the next image.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from lightning_cv.data.datasets import ByteImageDataset
from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError
from lightning_cv.data.shard_writer import INDEX_NAME, SHARD_FORMAT
from lightning_cv.data.shard_writer import MAX_MEMBER_BYTES as WRITTEN_MAX

__all__ = ["ShardDataset", "ShardSplit", "expand_braces", "open_shards", "read_range", "shard_leaks"]

#: attempts (with 0.5 s, 1 s, 2 s between) before a URL that does not answer is an error
RETRIES = 4
#: seconds one HTTP request may take before it counts as failed
TIMEOUT = 20.0
#: the largest image a shard member may be (a bigger size in an index is refused, not read)
MAX_MEMBER_BYTES = WRITTEN_MAX


class ShortShardError(OSError):
    """A shard holds fewer bytes than its index says (an interrupted copy): the images past its end are missing."""


#: the most shards one pattern may name
MAX_SHARDS = 1_000_000


def expand_braces(pattern: str) -> list[str]:
    """``"a-{000..002}.tar"`` -> ``["a-000.tar", "a-001.tar", "a-002.tar"]``; ``{x,y}`` lists too; several.

    Raises:
        ValueError: the pattern names more than :data:`MAX_SHARDS` shards (counted before any is made).
    """
    count = 1
    for body in re.findall(r"\{([^{}]*)\}", pattern):
        numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
        count *= int(numeric.group(2)) - int(numeric.group(1)) + 1 if numeric else len(body.split(","))
        if count > MAX_SHARDS:
            raise ValueError(f"The shard pattern {pattern!r} names more than {MAX_SHARDS:,} shards; check its braces.")
    return _expand(pattern)


def _expand(pattern: str) -> list[str]:
    match = re.search(r"\{([^{}]*)\}", pattern)
    if match is None:
        return [pattern]
    head, tail, body = pattern[: match.start()], pattern[match.end() :], match.group(1)
    numeric = re.fullmatch(r"(\d+)\.\.(\d+)", body)
    if numeric:
        low, high = numeric.group(1), numeric.group(2)
        width = len(low) if low.startswith("0") or len(low) == len(high) else 0
        items = [str(i).zfill(width) for i in range(int(low), int(high) + 1)]
    else:
        items = body.split(",")
    return [expanded for item in items for expanded in _expand(head + item + tail)]


def _is_url(path: str) -> bool:
    """Whether ``path`` is a URL (``http://``, ``s3://``, ``gs://``, ...) rather than a file here."""
    return "://" in path


def _is_http(path: str) -> bool:
    return path.startswith(("http://", "https://"))


def read_range(url: str, offset: int, size: int) -> bytes:
    """``size`` bytes of ``url`` from ``offset``: a file path (``os.pread``), an http(s) URL (a ``Range`` request)
    or any other URL fsspec knows (``s3://``, ``gs://``, ``az://``, ...; its package installed); URLs are retried a
    bounded number of times.

    Raises:
        OSError: the file or URL cannot be read (after the retries, naming it and the last error).
    """
    if not _is_url(url):
        descriptor = os.open(url, os.O_RDONLY)
        try:
            data = os.pread(descriptor, size, offset)  # no shared file position: safe in every worker
        finally:
            os.close(descriptor)
        if len(data) != size:
            raise ShortShardError(f"'{url}' is shorter than its index says ({size} bytes at {offset}): a cut shard")
        return data
    return _fetch(url, (offset, size)) if _is_http(url) else _fetch_fsspec(url, (offset, size))


#: the largest index or sources list read whole
WHOLE_FILE_LIMIT = 1 << 30


def _read_whole(url: str, limit: int = WHOLE_FILE_LIMIT) -> bytes:
    """The whole file or URL (an index, a member table), refused past ``limit`` bytes."""
    if _is_url(url):
        return _fetch(url, None, limit) if _is_http(url) else _fetch_fsspec(url, None, limit)
    if Path(url).stat().st_size > limit:
        raise ValueError(f"'{url}' is larger than its index allows ({limit} bytes): not a file of these shards.")
    return Path(url).read_bytes()


def _fetch(url: str, span: tuple[int, int] | None, limit: int = WHOLE_FILE_LIMIT) -> bytes:
    """GET ``url`` (the ``(offset, size)`` byte range of it, when given), retried with backoff a bounded number of
    times; a 4xx answer is not retried. Never reads more than asked for (``limit`` for a whole file)."""
    headers = {"Range": f"bytes={span[0]}-{span[0] + span[1] - 1}"} if span else {}
    request = urllib.request.Request(url, headers=headers)
    last: Exception | None = None
    for attempt in range(RETRIES):
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
                if span and response.status != 206:
                    raise OSError(
                        f"'{url}' answered a byte-range request with the whole file (HTTP {response.status}): serve "
                        "the shards from a server with range support (nginx, Apache, object stores)"
                    )
                wanted = span[1] if span else limit
                data = bytes(response.read(wanted + 1))
            if len(data) > wanted:
                raise OSError(f"'{url}' sent more than {wanted} bytes: not a file of these shards")
            if span is None or len(data) == span[1]:
                return data
            last = OSError(f"got {len(data)} of {span[1]} bytes")
        except urllib.error.HTTPError as err:
            if 400 <= err.code < 500:  # not found, forbidden: asking again will not help
                raise OSError(f"Cannot read '{url}': HTTP {err.code} {err.reason}.") from err
            last = err
        except (urllib.error.URLError, TimeoutError, ConnectionError) as err:
            last = err
        if attempt + 1 < RETRIES:
            time.sleep(0.5 * 2**attempt)
    raise OSError(f"Cannot read '{url}' after {RETRIES} attempts ({last}). Is the server up and the URL right?")


def _file_system(url: str) -> tuple[Any, str]:
    """fsspec's file system for ``url`` and the path in it, or a one-line error naming the package to install."""
    try:
        import fsspec
    except ImportError as err:
        raise ImportError(
            f"Reading '{url}' needs fsspec and the package of its file system: `pip install fsspec s3fs` for s3://, "
            "gcsfs for gs://, adlfs for az://."
        ) from err
    try:
        return fsspec.core.url_to_fs(url)
    except ImportError as err:  # fsspec knows the protocol, its package is missing
        raise ImportError(f"Reading '{url}' needs the package of its file system: {err}") from err
    except ValueError as err:  # "Protocol not known"
        raise ValueError(f"Cannot read '{url}': {err}. Use a path, an http(s):// URL or an fsspec URL.") from err


def _fetch_fsspec(url: str, span: tuple[int, int] | None, limit: int = WHOLE_FILE_LIMIT) -> bytes:
    """``url`` (its ``(offset, size)`` range, when given) through fsspec, retried like :func:`_fetch`. A missing
    object or a refused permission is not retried."""
    fs, path = _file_system(url)
    last: Exception | None = None
    for attempt in range(RETRIES):
        try:
            if span is not None:
                data = fs.cat_file(path, start=span[0], end=span[0] + span[1])
                if len(data) != span[1]:
                    raise ShortShardError(f"'{url}' is shorter than its index says ({span[1]} bytes at {span[0]})")
                return bytes(data)
            if int(fs.size(path)) > limit:
                raise ValueError(f"'{url}' is larger than its index allows ({limit} bytes): not a shard set's file.")
            return bytes(fs.cat_file(path))
        except (FileNotFoundError, PermissionError, ShortShardError):
            raise
        except (OSError, TimeoutError, ConnectionError) as err:
            last = err
        if attempt + 1 < RETRIES:
            time.sleep(0.5 * 2**attempt)
    raise OSError(f"Cannot read '{url}' after {RETRIES} attempts ({last}). Check the URL and the credentials.")


@dataclass
class ShardSplit:
    """One split of a shard set: the class names, the shard URLs, and the per-image arrays of the index.

    ``member`` holds each image's row in the split's full member table (to find its source path, read lazily).
    """

    class_names: list[str]
    urls: list[str]
    shard: np.ndarray
    offset: np.ndarray
    size: np.ndarray
    #: each image's class index (int64 array), or for multi-label shards its tuple of label indices (a list)
    label: Any
    digest: np.ndarray
    key: np.ndarray
    member: np.ndarray
    #: the file listing each member's source path (``<split>.sources.json``), or ``""``
    sources_url: str = ""
    _sources: list[str] | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.offset)

    @property
    def multilabel(self) -> bool:
        return isinstance(self.label, list)

    @property
    def labels(self) -> list[Any]:
        """Each image's class index, or its tuple of label indices (multi-label)."""
        return list(self.label) if self.multilabel else self.label.tolist()

    def name(self, index: int) -> str:
        """``<shard url>#<key>``: where image ``index`` is."""
        return f"{self.urls[int(self.shard[index])]}#{int(self.key[index]):09d}"

    def class_counts(self) -> list[int]:
        """Images per class (multi-label: images per label)."""
        found = [i for y in self.label for i in y] if self.multilabel else self.label
        return np.bincount(np.asarray(found, dtype=np.int64), minlength=len(self.class_names)).tolist()

    def subset(self, indices: Sequence[int]) -> ShardSplit:
        """These images only (a held-out validation or test part of a training split)."""
        chosen = np.asarray(indices, dtype=np.int64)
        label = [self.label[i] for i in chosen] if self.multilabel else self.label[chosen]
        return ShardSplit(
            self.class_names, self.urls, self.shard[chosen], self.offset[chosen], self.size[chosen], label,
            self.digest[chosen], self.key[chosen], self.member[chosen], self.sources_url,
        )  # fmt: skip

    def sources(self, indices: Sequence[int]) -> list[str]:
        """The files images ``indices`` came from (read from the sources list; its names if there is none)."""
        if self._sources is None:
            try:
                listed = json.loads(_read_whole(self.sources_url)) if self.sources_url else None
            except (OSError, ValueError):
                listed = None
            self._sources = [str(p) for p in listed] if isinstance(listed, list) else []
        if len(self._sources) <= int(self.member.max(initial=-1)):
            return [self.name(i) for i in indices]
        return [self._sources[int(self.member[i])] for i in indices]


def shard_leaks(splits: dict[str, ShardSplit]) -> list[tuple[str, str, str, str]]:
    """Images whose bytes are in two splits (by the index's content hashes): ``(split, name, other split, name)``,
    named by the files they came from."""
    seen: dict[bytes, tuple[str, int]] = {}
    found: list[tuple[str, int, str, int]] = []
    for split, part in splits.items():
        for index, digest in enumerate(part.digest):
            first = seen.setdefault(bytes(digest), (split, index))
            if first[0] != split:
                found.append((first[0], first[1], split, index))
    named = []
    for a, i, b, j in found[:100]:  # named for the report: the first hundred are plenty to act on
        named.append((a, splits[a].sources([i])[0], b, splits[b].sources([j])[0]))
    return named + [(a, splits[a].name(i), b, splits[b].name(j)) for a, i, b, j in found[100:]]


#: bytes per image in a member table: shard (4), offset, size, label, key (8 each), digest (16)
MEMBER_BYTES = 52
_MEMBER_ARRAYS = {"shard": (np.int32, ()), "offset": (np.int64, ()), "size": (np.int64, ()),
                  "label": (np.int64, ()), "key": (np.int64, ()), "digest": (np.uint8, (16,))}  # fmt: skip


def _members(data: bytes, images: int, num_classes: int = 0) -> dict[str, np.ndarray]:
    """The member table, each array checked (dtype, shape, one row per image the index counts) before use; a table
    that declares larger arrays than that is refused before they are allocated.

    Multi-label tables (``num_classes`` given) hold each image's label indices instead of ``label``: ``label_start``
    (``images + 1`` offsets, rising from 0) into ``label_index`` (int32, each in ``[0, num_classes)``, no image with
    a label twice).
    """
    import zipfile

    arrays = dict(_MEMBER_ARRAYS)
    if num_classes:
        del arrays["label"]
        arrays["label_start"] = (np.int64, ())
    tables: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:

            def read(name: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
                with archive.open(f"{name}.npy") as stream:
                    version = np.lib.format.read_magic(stream)
                    npy = np.lib.format
                    header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
                    found_shape, _, found = header(stream)  # the declared shape and dtype, nothing allocated yet
                    if found != np.dtype(dtype) or tuple(found_shape) != shape:
                        raise ValueError(f"{name}: {found} {tuple(found_shape)}, expected {np.dtype(dtype)} {shape}")
                return np.lib.format.read_array(archive.open(f"{name}.npy"), allow_pickle=False)

            for name, (dtype, tail) in arrays.items():
                tables[name] = read(name, dtype, (images + (name == "label_start"), *tail))
            if num_classes:
                start = tables["label_start"]
                if start[0] != 0 or bool((np.diff(start) < 0).any()) or start[-1] > images * num_classes:
                    raise ValueError("label_start: not offsets rising from 0 within the classes")
                index = read("label_index", np.int32, (int(start[-1]),))
                if len(index) and (index.min() < 0 or index.max() >= num_classes):
                    raise ValueError(f"label_index: a label outside the index's {num_classes} classes")
                tables["label_index"] = index
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"The shards' member table does not fit their index ({err}). Write the shards again.") from err
    return tables


def _label_sets(members: dict[str, np.ndarray], keep: np.ndarray) -> list[tuple[int, ...]]:
    """The label-index tuples of the kept images of a multi-label member table (each sorted, without repeats)."""
    start, index = members["label_start"], members["label_index"]
    sets = []
    for row in np.flatnonzero(keep):
        labels = index[start[row] : start[row + 1]].tolist()
        if len(set(labels)) != len(labels):
            raise ValueError("The shards' member table gives an image a label twice. Write the shards again.")
        sets.append(tuple(sorted(labels)))
    return sets


def _parent(url: str) -> str:
    return url.rsplit("/", 1)[0] if "/" in url else "."


def open_shards(pattern: str | Sequence[str], split: str) -> ShardSplit:
    """The shards ``pattern`` names (brace-expanded), checked against the ``index.json`` beside them.

    Raises:
        ValueError: the pattern names no shard, names shards of different folders, shards the index does not list
            for ``split``, or an index that is not a shard index.
        OSError: the index cannot be read (a missing file; a URL that does not answer after the retries).
    """
    urls = [u for p in ([pattern] if isinstance(pattern, str) else pattern) for u in expand_braces(str(p))]
    if not urls:
        raise ValueError(f"The {split} shard pattern {pattern!r} names no shard.")
    folders = {_parent(u) for u in urls}
    if len(folders) != 1:
        raise ValueError(f"Expected the {split} shards in one folder (beside {INDEX_NAME}), got {sorted(folders)}.")
    folder = folders.pop()
    if not _is_url(folder):
        missing = [u for u in urls if not Path(u).is_file()]
        if len(missing) == len(urls):
            raise ValueError(
                f"The {split} shard pattern {pattern!r} matches no file (e.g. '{missing[0]}'). Check the folder and "
                "the numbers in braces; `lightning-cv shard` writes <split>-000000.tar, <split>-000001.tar, ..."
            )
        if missing:
            raise ValueError(f"{len(missing)} of the {split} shards do not exist, e.g. '{missing[0]}'.")
    index_url = f"{folder}/{INDEX_NAME}"
    try:
        index = json.loads(_read_whole(index_url))
    except FileNotFoundError as err:
        raise ValueError(
            f"No {INDEX_NAME} beside the {split} shards ('{index_url}'): shards are read with the index that "
            "`lightning-cv shard` writes."
        ) from err
    except json.JSONDecodeError as err:
        raise ValueError(f"'{index_url}' is not a shard index (not JSON: {err}).") from err
    if not isinstance(index, dict) or index.get("format") != SHARD_FORMAT:
        raise ValueError(f"'{index_url}' is not a shard index written by `lightning-cv shard` ({SHARD_FORMAT}).")
    try:
        entry = index["splits"].get(split) or {}
        shards = [str(s["name"]) for s in entry.get("shards", [])]
        class_names = [str(c) for c in index["class_names"]]
        images = int(entry.get("images", 0))
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise ValueError(f"'{index_url}' is not a shard index: it lacks or garbles {err}.") from err
    by_name = {name: number for number, name in enumerate(shards)}
    unknown = [u for u in urls if u.rsplit("/", 1)[-1] not in by_name]
    if unknown:
        raise ValueError(
            f"{len(unknown)} shard(s) are not {split} shards of '{index_url}', e.g. '{unknown[0]}' (its {split} "
            f"shards: {', '.join(shards[:3]) or 'none'}{' ...' if len(shards) > 3 else ''})."
        )
    members_name = str(entry.get("members", ""))
    if "/" in members_name or "\\" in members_name or members_name in ("", ".", ".."):
        raise ValueError(f"'{index_url}' names its member table '{members_name}': a plain file name is expected.")
    task = index.get("task", "multiclass")
    if task not in ("multiclass", "multilabel"):
        raise ValueError(f"'{index_url}' is not a shard index: its task is {task!r}.")
    labels_per_image = len(class_names) if task == "multilabel" else 0
    limit = (MEMBER_BYTES + 4 * labels_per_image) * images + 65536
    members = _members(_read_whole(f"{folder}/{members_name}", limit=limit), images, labels_per_image)
    sources_name = str(entry.get("sources") or "")
    if "/" in sources_name or "\\" in sources_name or sources_name in (".", ".."):
        sources_name = ""
    chosen = np.asarray([by_name[u.rsplit("/", 1)[-1]] for u in urls])
    keep = np.isin(members["shard"], chosen)
    remap = np.full(len(shards), -1, dtype=np.int64)
    remap[chosen] = np.arange(len(chosen))
    label: Any = _label_sets(members, keep) if labels_per_image else members["label"][keep].astype(np.int64)
    outside = [] if labels_per_image else label[(label < 0) | (label >= len(class_names))]
    if len(outside):
        raise ValueError(
            f"The {split} shards hold label {int(outside[0])}, outside the index's {len(class_names)} classes: the "
            "index and the shards do not belong together. Write them again with `lightning-cv shard`."
        )
    return ShardSplit(
        class_names=class_names,
        urls=urls,
        shard=remap[members["shard"][keep]],
        offset=members["offset"][keep],
        size=members["size"][keep],
        label=label,
        digest=members["digest"][keep],
        key=members["key"][keep],
        member=np.flatnonzero(keep),
        sources_url=f"{folder}/{sources_name}" if sources_name else "",
    )


#: range requests one process keeps in flight for a batch of images from URLs (latency hides behind the others)
CONCURRENT_READS = 64
_POOL: tuple[int, Any] | None = None


def _read_pool() -> Any:
    """This process's thread pool for range requests (made again in a forked worker, whose copy has no threads)."""
    global _POOL
    if _POOL is None or _POOL[0] != os.getpid():
        from concurrent.futures import ThreadPoolExecutor

        _POOL = (os.getpid(), ThreadPoolExecutor(CONCURRENT_READS, thread_name_prefix="shard-read"))
    return _POOL[1]


class ShardDataset(ByteImageDataset):
    """The images of a :class:`ShardSplit`, decoded like files (bad samples skipped); named ``<shard url>#<key>``.

    Images on URLs are fetched a batch at a time (:meth:`prefetch`, called by the DataLoader through
    ``__getitems__``) with up to :data:`CONCURRENT_READS` range requests in flight, so a batch costs about one
    round trip instead of one per image; decoding and augmentation then run in order, as for files.
    """

    def __init__(
        self,
        split: ShardSplit,
        transform: Any = None,
        *,
        min_size: int | None = None,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(len(split), split.name, split.labels, transform, min_size=min_size, max_pixels=max_pixels,
                         num_classes=len(split.class_names) if split.multilabel else None)  # fmt: skip
        self.split = split
        self._fetched: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:  # worker processes start with nothing fetched
        return {**self.__dict__, "_fetched": {}}

    def prefetch(self, indices: Sequence[int]) -> None:
        """Start reading the images ``indices`` that live on URLs, concurrently; :meth:`read_bytes` collects them."""
        self._fetched = {}
        remote = [int(i) for i in dict.fromkeys(indices) if _is_url(self.split.urls[int(self.split.shard[int(i)])])]
        if len(remote) > 1:
            pool = _read_pool()
            self._fetched = {i: pool.submit(self._read, i) for i in remote}

    def read_bytes(self, index: int) -> bytes:
        """The image's bytes, read from its shard by offset. A shard cut short makes its missing images bad samples
        (skipped and counted); a URL that does not answer is an error (``OSError``, after the retries)."""
        fetched = self._fetched.pop(index, None)
        return fetched.result() if fetched is not None else self._read(index)

    def _read(self, index: int) -> bytes:
        s = self.split
        offset, size = int(s.offset[index]), int(s.size[index])
        if offset < 0 or not 0 < size <= MAX_MEMBER_BYTES:  # an index is data too: it never sizes a huge read
            raise BadImageError(self.paths[index], f"the index gives {size} bytes at offset {offset}")
        try:
            return read_range(s.urls[int(s.shard[index])], offset, size)
        except ShortShardError as err:
            raise BadImageError(self.paths[index], str(err)) from err
