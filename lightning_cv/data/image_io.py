"""Decode image files into RGB robustly: awkward modes decoded correctly, bad files told apart from good ones.

Written here because PIL, ``ImageFolder`` and timm each leave a trap: no EXIF rotation, RGBA flattened by dropping
alpha instead of compositing, 16-bit greyscale clipped to a few grey levels, ``DecompressionBombError`` not being an
``OSError``, and ``Image.verify()`` passing truncated JPEGs that then fail to decode.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageOps

__all__ = ["IMAGE_EXTENSIONS", "BadImageError", "check_image", "is_image_file", "load_image"]

#: files with these endings are taken as images; anything else in a data folder is ignored
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

#: PIL's own decompression-bomb threshold (about 89 megapixels); larger images are refused unless raised
DEFAULT_MAX_PIXELS = int(Image.MAX_IMAGE_PIXELS or 89_478_485)


class BadImageError(Exception):
    """A file that has an image extension but cannot be decoded safely; ``reason`` says why."""

    def __init__(self, path: str | os.PathLike[str], reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


def is_image_file(path: str | os.PathLike[str]) -> bool:
    name = os.fspath(path)
    return name.lower().endswith(IMAGE_EXTENSIONS) and not os.path.basename(name).startswith(".")


def _open(path: str | os.PathLike[str], max_pixels: int, data: bytes | None = None) -> Image.Image:
    """Open ``path`` lazily (header only), or the file's bytes ``data`` when the caller has read them already."""
    try:
        size = os.path.getsize(path) if data is None else len(data)
    except OSError as err:
        raise BadImageError(path, f"missing or unreadable file ({type(err).__name__}: {err.strerror or err})") from err
    if size == 0:
        raise BadImageError(path, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            source = path if data is None else io.BytesIO(data)
            image = Image.open(source)
    except Image.DecompressionBombError as err:  # not an OSError
        raise BadImageError(path, f"too large to decode safely ({err})") from err
    except (OSError, SyntaxError, ValueError) as err:  # UnidentifiedImageError is an OSError
        text = str(err) if data is None else str(err).replace(repr(source), f"'{path}'")
        raise BadImageError(path, f"not a readable image ({type(err).__name__}: {text})") from err
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise BadImageError(
            path, f"too large to decode safely ({width}x{height} pixels > {max_pixels}; raise `max_image_pixels`)"
        )
    return image


def _to_rgb(image: Image.Image, background: Sequence[int]) -> Image.Image:
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        # 16-bit greyscale: scale to 8 bits instead of clipping everything above 255 to white
        array = np.asarray(image).astype(np.float32)
        high = float(array.max(initial=0))
        if mode.startswith("I;16") or 255 < high <= 65535:
            scale = 257.0  # 16-bit range
        elif high <= 255:
            scale = 1.0  # 32-bit container holding 8-bit values
        else:
            scale = high / 255.0
        grey = np.clip(np.rint(array / scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "F":
        array = np.asarray(image)
        low, high = float(array.min(initial=0.0)), float(array.max(initial=1.0))
        grey = np.rint((array - low) / max(high - low, 1e-12) * 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        canvas = Image.new("RGBA", rgba.size, (*tuple(int(c) for c in background), 255))
        return Image.alpha_composite(canvas, rgba).convert("RGB")
    return image if mode == "RGB" else image.convert("RGB")


def load_image(
    path: str | os.PathLike[str],
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    background: Sequence[int] = (255, 255, 255),
    min_size: int | None = None,
    data: bytes | None = None,
) -> Image.Image:
    """Decode ``path`` to an upright 8-bit RGB image or raise :class:`BadImageError`.

    Args:
        data: the image's bytes, read already (a member of a tar shard); ``path`` then only names it in messages.
        max_pixels: refuse images larger than this (decompression bombs).
        background: colour that transparent pixels are composited onto.
        min_size: the smallest side the caller needs; large JPEGs are then decoded at a reduced scale (DCT scaling,
            2-8x faster) while keeping at least this many pixels on the short side.
    """
    image = _open(path, max_pixels, data)
    try:
        if min_size is not None and image.format == "JPEG":
            width, height = image.size
            scale = min(width, height) / max(min_size, 1)
            if scale >= 2:
                image.draft("RGB", (int(np.ceil(width / scale)), int(np.ceil(height / scale))))
        image.load()  # for a file opened by name, PIL closes it once the pixels are loaded
        upright = ImageOps.exif_transpose(image) or image
        return _to_rgb(upright, background)
    except Exception as err:  # truncated data, broken chunks, decoder errors of any type
        image.close()
        raise BadImageError(path, f"cannot be decoded ({type(err).__name__}: {err})") from err


def check_image(
    path: str | os.PathLike[str],
    *,
    decode: bool = False,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    data: bytes | None = None,
) -> str:
    """Raise :class:`BadImageError` when ``path`` (or its bytes ``data``, read already) is not a usable image;
    else return its format (``"JPEG"``, ``"PNG"``, ...).

    Without ``decode`` only the header is read (cheap: empty files, non-images and decompression bombs); with it the
    whole image is decoded, which also finds truncated files.
    """
    image = _open(path, max_pixels, data)
    found = str(image.format or "")
    image.close()
    if decode:
        load_image(path, max_pixels=max_pixels, data=data).close()
    return found
