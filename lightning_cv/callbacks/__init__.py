"""Callbacks that work with any LightningModule."""

from lightning_cv.callbacks.gallery import PredictionGallery
from lightning_cv.callbacks.prediction_writer import PredictionWriter

__all__ = ["PredictionGallery", "PredictionWriter"]
