"""Pictures of a run (confusion matrix, prediction gallery, Grad-CAM) sent to whatever logger the run uses.

A low layer: it knows loggers and PIL, never models or callbacks, which import it.
"""

from lightning_cv.reporting.images import log_image

__all__ = ["log_image"]
