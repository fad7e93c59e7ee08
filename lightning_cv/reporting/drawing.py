"""Drawing report images with PIL: captioned tiles, grids of them, and the fonts and text fitting they share.

PIL rather than matplotlib: no figure is made, so a picture logged every validation epoch costs milliseconds rather
than a few hundred of them, and the user's matplotlib backend is never touched. The Grad-CAM panels of
:mod:`lightning_cv.interpret.drawing`, the prediction gallery and the confusion matrix are all drawn with these.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["MIN_DISPLAY_WIDTH", "captioned", "contact_sheet", "fit_text", "font", "upscale"]

#: pictures narrower than this are upscaled (nearest neighbour, so the model's pixels stay visible)
MIN_DISPLAY_WIDTH = 224
_SHEET_GAP = 4


@functools.lru_cache(maxsize=16)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (cached: loading it costs more than drawing a line)."""
    return ImageFont.load_default(size=size)


def fit_text(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """``text``, shortened with "..." until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def upscale(picture: np.ndarray, min_width: int = MIN_DISPLAY_WIDTH) -> np.ndarray:
    """``(H, W, 3)`` uint8 enlarged by a whole factor to at least ``min_width`` pixels, nearest neighbour.

    Nearest neighbour shows the model's own pixels, not a smoothed guess: a 32 px input stays readable as such.
    """
    height, width = picture.shape[:2]
    scale = max(1, math.ceil(min_width / width))
    if scale == 1:
        return picture
    return np.asarray(Image.fromarray(picture).resize((width * scale, height * scale), Image.Resampling.NEAREST))


def captioned(picture: np.ndarray | Image.Image, lines: Sequence[str], colour: Any = "black") -> Image.Image:
    """``picture`` with ``lines`` of text above it on white, each shortened to the picture's width."""
    image = picture if isinstance(picture, Image.Image) else Image.fromarray(picture)
    font_size = max(12, image.width // 16)
    line_height, pad = round(font_size * 1.3), max(3, font_size // 4)
    canvas = Image.new("RGB", (image.width, image.height + len(lines) * line_height + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    text_font = font(font_size)
    for n, text in enumerate(lines):
        fitted = fit_text(draw, text, text_font, image.width - 2 * pad)
        draw.text((pad, pad + n * line_height), fitted, fill=colour, font=text_font)
    canvas.paste(image, (0, canvas.height - image.height))
    return canvas


def contact_sheet(tiles: Sequence[tuple[str, Sequence[Image.Image]]], panels_per_row: int = 8) -> Image.Image:
    """A grid of tiles, each its panels side by side (at most 224 px wide each) over a one-line name.

    All panels are shown at the size of the first one. Tiles may hold different numbers of panels (a multi-label
    image has one Grad-CAM per predicted label): each tile is as wide as the widest, its unused slots left blank, and
    a row holds at most ``panels_per_row`` panels (one tile at least).
    """
    if not tiles:
        raise ValueError("Expected at least one tile for the contact sheet, but got none.")
    first = tiles[0][1][0]
    shrink = min(1.0, MIN_DISPLAY_WIDTH / first.width)
    size = (max(1, round(first.width * shrink)), max(1, round(first.height * shrink)))
    per_tile = max(len(panels) for _, panels in tiles)
    cols = min(len(tiles), max(1, panels_per_row // per_tile))
    rows = math.ceil(len(tiles) / cols)
    name_font = font(12)
    caption = 16
    tile_width, tile_height = per_tile * size[0], size[1] + caption
    sheet = Image.new(
        "RGB",
        (cols * tile_width + (cols + 1) * _SHEET_GAP, rows * tile_height + (rows + 1) * _SHEET_GAP),
        (235, 235, 235),
    )
    draw = ImageDraw.Draw(sheet)
    for n, (name, panels) in enumerate(tiles):
        row, col = divmod(n, cols)
        x, y = _SHEET_GAP + col * (tile_width + _SHEET_GAP), _SHEET_GAP + row * (tile_height + _SHEET_GAP)
        for k, image in enumerate(panels):
            thumb = image if image.size == size else image.resize(size, Image.Resampling.BILINEAR, reducing_gap=2.0)
            sheet.paste(thumb, (x + k * size[0], y))
        text = fit_text(draw, name, name_font, tile_width - 4)
        draw.text((x + 2, y + size[1] + 1), text, fill=(60, 60, 60), font=name_font)
    return sheet
