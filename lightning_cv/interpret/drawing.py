"""Drawing explanations with PIL: one captioned overlay panel per image, and a contact sheet of them.

PIL rather than matplotlib: no figure is made (a folder of a hundred small images takes seconds on a CPU) and the
user's matplotlib backend is never touched; matplotlib gives only the colour map, through
:func:`~lightning_cv.interpret.gradcam.overlay`. The captions, fonts and grid are the shared ones of
:mod:`lightning_cv.reporting.drawing`, which the prediction gallery and the confusion matrix use too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image
from torch import Tensor

from lightning_cv.interpret.gradcam import overlay
from lightning_cv.reporting import drawing as report_drawing
from lightning_cv.reporting.drawing import MIN_DISPLAY_WIDTH, captioned, upscale

__all__ = ["CONTACT_SHEET_LIMIT", "MIN_DISPLAY_WIDTH", "contact_sheet", "panel"]

#: the contact sheet shows at most this many images (the first ones, in file order)
CONTACT_SHEET_LIMIT = 64

#: the contact sheet's background (:func:`lightning_cv.reporting.drawing.contact_sheet`): empty panel slots vanish
_SHEET_BACKGROUND = (235, 235, 235)


def panel(picture: np.ndarray, heatmap: Tensor, alpha: float, lines: Sequence[str]) -> Image.Image:
    """The image upscaled to a viewable width, the heatmap blended on top, and ``lines`` of text above it."""
    # the picture is upscaled before blending, so its pixels stay sharp while the heatmap stays smooth
    return captioned(overlay(upscale(picture), heatmap, alpha=alpha), lines)


def contact_sheet(tiles: Sequence[tuple[str, Sequence[Image.Image]]], panels_per_row: int = 8) -> Image.Image:
    """A grid of tiles, each an image's panels side by side over its name; every panel of every tile is shown.

    Tiles may hold different numbers of panels (a multi-label image has one Grad-CAM per predicted label): every
    tile gets the width of the widest, its unused slots left blank. The grid itself is
    :func:`lightning_cv.reporting.drawing.contact_sheet`, which shows as many panels per tile as the first has.
    """
    if not tiles:
        raise ValueError("Expected at least one tile for the contact sheet, but got none.")
    widest = max(len(panels) for _, panels in tiles)
    if all(len(panels) == widest for _, panels in tiles):
        return report_drawing.contact_sheet(tiles, panels_per_row=panels_per_row)
    blank = Image.new("RGB", tiles[0][1][0].size, _SHEET_BACKGROUND)
    padded = [(name, [*panels, *[blank] * (widest - len(panels))]) for name, panels in tiles]
    return report_drawing.contact_sheet(padded, panels_per_row=panels_per_row)
