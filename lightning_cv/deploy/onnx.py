"""Export a classifier to ONNX and check the file against PyTorch with onnxruntime.

One implementation behind two doors: the :class:`~lightning_cv.callbacks.ONNXExport` callback and the command line.
Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs no extra package (the dynamo exporter needs
onnxscript), supports a dynamic batch axis for every timm family tested, and writes one self-contained file.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["DEFAULT_OPSET", "ExportError", "ExportReport", "check_onnx", "export_onnx"]

#: opset 17 runs on onnxruntime >= 1.11, TensorRT >= 8.5 and OpenVINO >= 2022.3: broad support, LayerNorm included
DEFAULT_OPSET = 17


class ExportError(RuntimeError):
    """The export failed, or the exported file does not compute what the PyTorch model computes."""


@dataclass
class ExportReport:
    """Where the model went and how closely onnxruntime reproduces PyTorch (max abs difference per batch size)."""

    path: str
    opset: int
    softmax: bool
    max_abs_diff: dict[int, float] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)


class _WithSoftmax(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor) -> Tensor:
        return self.model(images).softmax(dim=-1)


def _failing_op(err: BaseException) -> str:
    """The operator or module named in an exporter error, when the message names one."""
    text = str(err)
    for pattern in (r"operator '?([\w:.]+)'?", r"aten::\w+", r"Exporting the operator '?([\w:.]+)"):
        match = re.search(pattern, text)
        if match:
            return match.group(0)
    return ""


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: Tensor,
    *,
    softmax: bool = False,
    opset: int = DEFAULT_OPSET,
    metadata: Mapping[str, Any] | None = None,
    check: bool = True,
    atol: float = 1e-4,
    check_batch_sizes: Sequence[int] = (1, 7),
) -> ExportReport:
    """Export ``model`` with a dynamic batch axis, store ``metadata`` in the file, and check it with onnxruntime.

    Args:
        model: maps ``(N, C, H, W)`` float images to ``(N, num_classes)`` logits; it is copied, not changed.
        example_input: one batch (any size) of the input the model expects, on any device.
        softmax: put the softmax in the graph, so the file outputs probabilities.
        metadata: extra key/values for the file (class names, input size, mean, std ...); non-strings become JSON.
        check: run the file with onnxruntime on ``check_batch_sizes`` and compare with PyTorch.
        atol: the largest absolute difference allowed by the check (1e-4 suits fp32).

    Raises:
        ExportError: naming the operator that failed to export, or the difference the check found.
    """
    import onnx

    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    net = copy.deepcopy(model).float().cpu().eval()
    if softmax:
        net = _WithSoftmax(net)
    example = example_input[:1].detach().float().cpu()
    output_name = "probabilities" if softmax else "logits"
    try:
        with torch.no_grad():
            torch.onnx.export(
                net,
                (example,),
                str(target),
                input_names=["image"],
                output_names=[output_name],
                dynamic_axes={"image": {0: "batch"}, output_name: {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
    except Exception as err:
        op = _failing_op(err)
        raise ExportError(
            f"ONNX export failed{f' at {op}' if op else ''}: {type(err).__name__}: {str(err)[:500]}. "
            f"Try another `opset` (now {opset}), or a backbone whose layers ONNX supports."
        ) from err
    meta = {"output": output_name, "softmax": str(softmax).lower(), "opset": str(opset)}
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    proto = onnx.load(str(target))
    del proto.metadata_props[:]
    for key, value in meta.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(proto, str(target))
    report = ExportReport(path=str(target), opset=opset, softmax=softmax, metadata=meta)
    if check:
        report.max_abs_diff = check_onnx(net, target, example, batch_sizes=check_batch_sizes, atol=atol)
    return report


def check_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: Tensor,
    *,
    batch_sizes: Sequence[int] = (1, 7),
    atol: float = 1e-4,
) -> dict[int, float]:
    """Max abs difference between PyTorch and onnxruntime outputs for each batch size; raises above ``atol``."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(0)
    net = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device, dtype and mode
    diffs: dict[int, float] = {}
    for size in batch_sizes:
        # real example first, then random images around it: exercises the dynamic batch axis
        noise = torch.randn((size, *example_input.shape[1:]), generator=generator) * example_input.std().clamp_min(1e-3)
        batch = example_input[:1].float().cpu() + noise
        with torch.no_grad():
            expected = net(batch).numpy()
        got = session.run(None, {input_name: batch.numpy()})[0]
        if got.shape != expected.shape:
            raise ExportError(f"onnxruntime returned shape {got.shape} for batch {size}, PyTorch {expected.shape}.")
        diffs[size] = float(abs(got - expected).max())
        if diffs[size] > atol:
            raise ExportError(
                f"The ONNX model differs from PyTorch by {diffs[size]:.2e} (> atol {atol:.0e}) at batch size {size}: "
                f"{path} does not compute what the model computes. Check for train-mode layers or unsupported ops."
            )
    return diffs
