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
from lightning_cv.reporting.drawing import MIN_DISPLAY_WIDTH, captioned, contact_sheet, upscale

__all__ = ["CONTACT_SHEET_LIMIT", "MIN_DISPLAY_WIDTH", "contact_sheet", "panel"]

#: the contact sheet shows at most this many images (the first ones, in file order)
CONTACT_SHEET_LIMIT = 64


def panel(picture: np.ndarray, heatmap: Tensor, alpha: float, lines: Sequence[str]) -> Image.Image:
    """The image upscaled to a viewable width, the heatmap blended on top, and ``lines`` of text above it."""
    # the picture is upscaled before blending, so its pixels stay sharp while the heatmap stays smooth
    return captioned(overlay(upscale(picture), heatmap, alpha=alpha), lines)
