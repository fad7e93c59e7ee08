"""Drawing explanations with PIL: one captioned overlay panel per image, and a contact sheet of them.

PIL rather than matplotlib: no figure is made (a folder of a hundred small images takes seconds on a CPU) and the
user's matplotlib backend is never touched; matplotlib gives only the colour map, through
:func:`~lightning_cv.interpret.gradcam.overlay`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from lightning_cv.interpret.gradcam import overlay

__all__ = ["CONTACT_SHEET_LIMIT", "MIN_DISPLAY_WIDTH", "contact_sheet", "panel"]

#: overlays narrower than this are upscaled (nearest neighbour, so the model's pixels stay visible)
MIN_DISPLAY_WIDTH = 224
#: the contact sheet shows at most this many images (the first ones, in file order)
CONTACT_SHEET_LIMIT = 64
_SHEET_PANELS_PER_ROW = 8
_SHEET_GAP = 4


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: float) -> str:
    """``text``, shortened with "..." until it fits ``width`` pixels."""
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "...", font=font) > width:
        text = text[:-1]
    return text + "..."


def panel(picture: np.ndarray, heatmap: Tensor, alpha: float, lines: Sequence[str]) -> Image.Image:
    """The image upscaled to a viewable width, the heatmap blended on top, and ``lines`` of text above it."""
    height, width = picture.shape[:2]
    scale = max(1, math.ceil(MIN_DISPLAY_WIDTH / width))
    if scale > 1:  # nearest neighbour: the model's own pixels, not a smoothed guess; the heatmap stays smooth
        picture = np.asarray(Image.fromarray(picture).resize((width * scale, height * scale), Image.Resampling.NEAREST))
    blended = Image.fromarray(overlay(picture, heatmap, alpha=alpha))
    font_size = max(12, blended.width // 16)
    line_height, pad = round(font_size * 1.3), max(3, font_size // 4)
    canvas = Image.new("RGB", (blended.width, blended.height + len(lines) * line_height + 2 * pad), "white")
    draw = ImageDraw.Draw(canvas)
    font = _font(font_size)
    for n, text in enumerate(lines):
        fitted = _fit(draw, text, font, blended.width - 2 * pad)
        draw.text((pad, pad + n * line_height), fitted, fill="black", font=font)
    canvas.paste(blended, (0, canvas.height - blended.height))
    return canvas


def contact_sheet(tiles: Sequence[tuple[str, Sequence[Image.Image]]]) -> Image.Image:
    """One captioned tile per image (its panels side by side, each at most 224 px wide), 8 panels per row at most."""
    panel = tiles[0][1][0]
    shrink = min(1.0, MIN_DISPLAY_WIDTH / panel.width)
    size = (max(1, round(panel.width * shrink)), max(1, round(panel.height * shrink)))
    per_tile = len(tiles[0][1])
    cols = min(len(tiles), max(1, _SHEET_PANELS_PER_ROW // per_tile))
    rows = math.ceil(len(tiles) / cols)
    font = _font(12)
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
        draw.text((x + 2, y + size[1] + 1), _fit(draw, name, font, tile_width - 4), fill=(60, 60, 60), font=font)
    return sheet
