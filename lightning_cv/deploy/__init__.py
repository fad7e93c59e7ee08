"""Deployment: ONNX export checked against PyTorch."""

from lightning_cv.deploy.onnx import DEFAULT_OPSET, ExportError, ExportReport, check_onnx, export_onnx

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "check_onnx", "export_onnx"]
