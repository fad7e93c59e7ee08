"""Callbacks that work with any LightningModule."""

from lightning_cv.callbacks.checkpointing import PeriodicCheckpoint, PreemptionCheckpoint
from lightning_cv.callbacks.ema import EMA
from lightning_cv.callbacks.gallery import PredictionGallery
from lightning_cv.callbacks.gradcam import GradCAMLogger
from lightning_cv.callbacks.onnx_export import ONNXExport
from lightning_cv.callbacks.prediction_writer import PredictionWriter
from lightning_cv.callbacks.warmup import LinearWarmup

__all__ = [
    "EMA",
    "GradCAMLogger",
    "LinearWarmup",
    "ONNXExport",
    "PeriodicCheckpoint",
    "PredictionGallery",
    "PredictionWriter",
    "PreemptionCheckpoint",
]
