"""INT8 quantization of exported models: the right kind for each model, measured rather than assumed.

* **static** (onnxruntime, QDQ format, per-channel weights, activations calibrated on a few hundred training images):
  the kind that speeds up CNNs. Convolutions become integer convolutions; the ranges of activations are fixed
  ahead of time from the calibration images.
* **dynamic** (onnxruntime): weights are stored in INT8 and activation ranges are measured at run time. It quantizes
  only MatMul/Gemm, so it suits Linear-heavy models such as ViTs; on a CNN it touches the classifier alone and
  gives nothing (on a 2-core AVX-512 CPU it made a ResNet-18 several times slower).
* ``"auto"`` picks static when most weights sit in convolutions, dynamic otherwise.

For PyTorch users, :func:`quantize_dynamic_torch` is the classic
``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``, with the deprecation of
``torch.ao.quantization`` (in favour of torchao) handled.
"""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor, nn

__all__ = ["QuantizationReport", "choose_quantization", "quantize_dynamic_torch", "quantize_onnx"]

QuantMode = Literal["static", "dynamic", "auto"]
CalibrationMethod = Literal["minmax", "entropy", "percentile"]


@dataclass
class QuantizationReport:
    """What was quantized, how, and how the file size changed."""

    path: str
    mode: str
    reason: str
    calibration_images: int
    size_bytes: int
    fp32_size_bytes: int
    quantized_ops: dict[str, int]

    @property
    def compression(self) -> float:
        return self.fp32_size_bytes / max(self.size_bytes, 1)


def _weight_share(model: Any) -> tuple[int, int]:
    """Numbers of weights consumed by Conv nodes and by MatMul/Gemm nodes of an ONNX graph."""
    sizes = {init.name: int(np.prod(init.dims)) for init in model.graph.initializer}
    conv = linear = 0
    for node in model.graph.node:
        count = sum(sizes.get(name, 0) for name in node.input[1:2])
        if node.op_type == "Conv":
            conv += count
        elif node.op_type in ("MatMul", "Gemm"):
            linear += count
    return conv, linear


def choose_quantization(model_path: str | os.PathLike[str]) -> tuple[Literal["static", "dynamic"], str]:
    """``("static" | "dynamic", reason)`` for an fp32 ONNX file, from where its weights sit."""
    import onnx

    conv, linear = _weight_share(onnx.load(str(model_path), load_external_data=False))
    total = max(conv + linear, 1)
    if conv >= linear:
        return "static", f"{conv / total:.0%} of the weights are in convolutions: static INT8 convolutions pay off"
    return "dynamic", f"{linear / total:.0%} of the weights are in MatMul/Gemm (Linear-heavy): dynamic INT8"


def _chain(first: dict[str, np.ndarray], rest: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
    yield first
    yield from rest


class _Reader:
    """onnxruntime's CalibrationDataReader over batches of images (numpy or tensors), up to ``limit`` images."""

    def __init__(self, input_name: str, batches: Iterable[Any], limit: int) -> None:
        self.input_name = input_name
        self.count = 0
        self._iter: Iterator[dict[str, np.ndarray]] = self._feeds(batches, limit)

    def _feeds(self, batches: Iterable[Any], limit: int) -> Iterator[dict[str, np.ndarray]]:
        for batch in batches:
            images = batch[0] if isinstance(batch, (list, tuple)) else batch
            array = images.detach().cpu().numpy() if isinstance(images, Tensor) else np.asarray(images)
            array = array[: limit - self.count]
            if len(array) == 0:
                return
            self.count += len(array)
            yield {self.input_name: array}
            if self.count >= limit:
                return

    def peek(self) -> bool:
        """Whether there is any image at all (read ahead, then handed out first)."""
        first = next(self._iter, None)
        if first is None:
            return False
        self._iter = _chain(first, self._iter)
        return True

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._iter, None)

    def rewind(self) -> None:  # part of onnxruntime's interface; calibration reads the data once
        pass


def _count_ops(path: Path) -> dict[str, int]:
    import onnx

    counts: dict[str, int] = {}
    for node in onnx.load(str(path), load_external_data=False).graph.node:
        if node.op_type in ("QLinearConv", "ConvInteger", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear"):
            counts[node.op_type] = counts.get(node.op_type, 0) + 1
        elif node.op_type == "QuantizeLinear":
            counts["QuantizeLinear"] = counts.get("QuantizeLinear", 0) + 1
    return counts


def quantize_onnx(
    model_path: str | os.PathLike[str],
    output_path: str | os.PathLike[str],
    *,
    mode: QuantMode = "auto",
    calibration: Iterable[Any] | None = None,
    num_calibration_images: int = 256,
    calibration_method: CalibrationMethod = "minmax",
    per_channel: bool = True,
) -> QuantizationReport:
    """Write an INT8 version of the fp32 ONNX file ``model_path`` to ``output_path`` (one self-contained file).

    Args:
        mode: ``"static"`` (needs ``calibration``), ``"dynamic"`` or ``"auto"`` (see :func:`choose_quantization`).
        calibration: batches of model inputs (``(N, C, H, W)`` arrays or tensors, or ``(images, labels)`` pairs),
            preprocessed exactly as the file expects them: a few hundred training images without augmentation.
        num_calibration_images: how many images of ``calibration`` to use.
        calibration_method: ``"minmax"`` (fast, the usual choice for CNNs), ``"entropy"`` or ``"percentile"``
            (clip outliers; slower to calibrate).
        per_channel: one scale per output channel of each weight (much more accurate for depthwise convolutions).

    Raises:
        ValueError: static quantization without calibration data, or a bad argument.
        FileNotFoundError: ``model_path`` does not exist.
    """
    from onnxruntime.quantization import CalibrationMethod as OrtCalibration
    from onnxruntime.quantization import QuantFormat, QuantType, quant_pre_process, quantize_dynamic, quantize_static

    source, target = Path(model_path), Path(output_path)
    if not source.is_file():
        raise FileNotFoundError(f"ONNX model '{source}' does not exist. Export one first (`lightning-cv export`).")
    if mode not in ("static", "dynamic", "auto"):
        raise ValueError(f"Expected `mode` to be 'static', 'dynamic' or 'auto', but got {mode!r}.")
    methods = {"minmax": "MinMax", "entropy": "Entropy", "percentile": "Percentile"}
    if calibration_method not in methods:
        raise ValueError(f"Expected `calibration_method` in {sorted(methods)}, but got {calibration_method!r}.")
    if num_calibration_images < 1:
        raise ValueError(f"Expected `num_calibration_images` >= 1, but got {num_calibration_images}.")
    reason = f"{mode} requested"
    if mode == "auto":
        mode, reason = choose_quantization(source)
    if mode == "static" and calibration is None:
        raise ValueError(
            "Static INT8 quantization needs calibration images (a few hundred training images, no augmentation): "
            "pass `calibration=` batches, or on the command line the data (`--data.data_dir ...` or the "
            "checkpoint's own data); or use `--quantize dynamic`, which needs none."
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        # constant folding, shape inference and BatchNorm fusion first: what onnxruntime's docs prescribe
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=False)
        count = 0
        if mode == "static":
            import onnx

            input_name = onnx.load(str(prepared), load_external_data=False).graph.input[0].name
            reader = _Reader(input_name, calibration or [], num_calibration_images)
            if not reader.peek():
                raise ValueError("The calibration data held no images; pass a few hundred training images.")
            quantize_static(
                str(prepared),
                str(target),
                reader,  # type: ignore[arg-type]
                quant_format=QuantFormat.QDQ,
                per_channel=per_channel,
                activation_type=QuantType.QUInt8,  # u8 activations x s8 weights: the VNNI / AVX-512 fast path
                weight_type=QuantType.QInt8,
                calibrate_method=getattr(OrtCalibration, methods[calibration_method]),
                extra_options={"ActivationSymmetric": False, "WeightSymmetric": True},
            )
            count = reader.count
        else:
            quantize_dynamic(str(prepared), str(target), per_channel=per_channel, weight_type=QuantType.QInt8)
    return QuantizationReport(
        path=str(target),
        mode=mode,
        reason=reason,
        calibration_images=count,
        size_bytes=target.stat().st_size,
        fp32_size_bytes=source.stat().st_size,
        quantized_ops=_count_ops(target),
    )


def quantize_dynamic_torch(model: nn.Module, dtype: torch.dtype = torch.qint8) -> nn.Module:
    """A copy of ``model`` with every ``nn.Linear`` dynamically quantized to INT8, for PyTorch (CPU) inference.

    The seed recipe ``torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)``. PyTorch
    deprecates ``torch.ao.quantization`` in favour of the torchao package; the deprecation warning is silenced
    here because the call still works, and for deployment the ONNX route (:func:`quantize_onnx`) is the one to
    prefer: it is faster, also quantizes convolutions, and its result runs without PyTorch.
    """
    try:
        from torch.ao.quantization import quantize_dynamic
    except ImportError as err:  # removed in a future PyTorch
        raise RuntimeError(
            "This PyTorch no longer ships torch.ao.quantization. Quantize the exported ONNX file instead "
            "(`lightning-cv export --quantize dynamic`), or install torchao."
        ) from err
    net = copy.deepcopy(model).cpu().float().eval()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*torch\.ao\.quantization.*")
        warnings.filterwarnings("ignore", message=r".*quantized tensor creation functions.*")
        return quantize_dynamic(net, {nn.Linear}, dtype=dtype)
