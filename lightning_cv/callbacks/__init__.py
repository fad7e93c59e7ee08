"""Callbacks that work with any LightningModule."""

from lightning_cv.callbacks.ema import EMA
from lightning_cv.callbacks.gallery import PredictionGallery
from lightning_cv.callbacks.gradcam_logger import GradCAMLogger
from lightning_cv.callbacks.onnx_export import ONNXExport
from lightning_cv.callbacks.prediction_writer import PredictionWriter
from lightning_cv.callbacks.warmup import LinearWarmup
from lightning_cv.resume.checkpointing import PeriodicCheckpoint, PreemptionCheckpoint, ResumableCheckpoint

__all__ = [
    "EMA",
    "GradCAMLogger",
    "LinearWarmup",
    "ONNXExport",
    "PeriodicCheckpoint",
    "PredictionGallery",
    "PredictionWriter",
    "PreemptionCheckpoint",
    "ResumableCheckpoint",
]
