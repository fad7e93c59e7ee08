"""Deployment: ONNX export checked against PyTorch, and calibration of the probabilities it ships."""

from lightning_cv.deploy.calibrate import CalibrationReport, calibrate, save_calibrated_checkpoint
from lightning_cv.deploy.onnx import DEFAULT_OPSET, ExportError, ExportReport, check_onnx, export_onnx

__all__ = [
    "DEFAULT_OPSET",
    "CalibrationReport",
    "ExportError",
    "ExportReport",
    "calibrate",
    "check_onnx",
    "export_onnx",
    "save_calibrated_checkpoint",
]
