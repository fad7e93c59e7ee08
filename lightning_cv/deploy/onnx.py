"""Export a classifier to ONNX and check the file against PyTorch with onnxruntime.

One implementation behind two doors: the :class:`~lightning_cv.callbacks.ONNXExport` callback and the command line.
A multi-label model's file ends in a sigmoid (output ``"scores"``, one independent probability per label) and carries
its per-label decision thresholds in the metadata, so a deployer needs nothing else to turn scores into label sets.
Uses PyTorch's TorchScript-based exporter (``dynamo=False``): it needs no extra package (the dynamo exporter needs
onnxscript), supports a dynamic batch axis for every timm family tested, and writes one self-contained file.
"""

from __future__ import annotations

import copy
import json
import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lightning_cv.data.batch import MULTICLASS, MULTILABEL, check_task
from lightning_cv.deploy.evaluate import label_thresholds

__all__ = [
    "DEFAULT_OPSET",
    "INPUT_FORMATS",
    "ExportError",
    "ExportReport",
    "check_onnx",
    "export_onnx",
    "with_scores",
    "write_metadata",
]

#: what the exported file takes as input: float images normalised as in training, or raw uint8 RGB pixels
#: (N, C, H, W) or (N, H, W, C) with the normalisation baked into the graph
INPUT_FORMATS = ("float", "uint8_nchw", "uint8_nhwc")

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
    task: str = MULTICLASS
    #: multi-label: the per-label thresholds written into the metadata
    thresholds: list[float] | None = None


def with_scores(
    model: nn.Module, task: str = MULTICLASS, softmax: bool = False, temperature: float = 1.0, tta: str = "none"
) -> nn.Module:
    """``model`` with the head an exported file has (:class:`~lightning_cv.models.scoring.ScoreHead`).

    Multi-label: sigmoid scores, always. Multi-class: probabilities with ``softmax``, else logits. The logits are
    divided by ``temperature`` (a calibrated model's); with ``tta`` the views' probabilities are averaged, and
    logits out are the log of that average (their softmax is the average). The benchmark runs PyTorch through the
    same head, so every backend computes (and is timed on) the same thing.

    Raises:
        ValueError: ``softmax`` for a multi-label model (its labels are independent: sigmoid scores, always), a
            temperature that is not > 0, an unknown ``tta``.
    """
    from lightning_cv.models.calibration import check_temperature
    from lightning_cv.models.scoring import ScoreHead

    multilabel = check_task(task) == MULTILABEL
    if multilabel and softmax:
        raise ValueError(
            "`softmax` is for multi-class models, but this one is multi-label: its file always ends in a sigmoid "
            "(one independent score per label). Leave softmax off."
        )
    temperature = check_temperature(temperature)
    if temperature == 1.0 and tta == "none" and not multilabel and not softmax:
        return model  # the plain logits: nothing to add to the graph
    return ScoreHead(model, task, temperature, tta, probabilities=multilabel or softmax)


def _num_outputs(model: nn.Module, example: Tensor) -> int:
    with torch.no_grad():
        return int(model(example).shape[-1])


class _Preprocess(nn.Module):
    """uint8 RGB pixels in, the model's normalised float input inside the graph: deployers feed raw pixels."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float], channels_last: bool) -> None:
        super().__init__()
        self.model = model
        self.channels_last = channels_last
        # folded into one multiply-add: x * scale + shift == (x / 255 - mean) / std
        std_t = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * std_t))
        self.register_buffer("shift", -torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) / std_t)

    def forward(self, pixels: Tensor) -> Tensor:
        images = pixels.permute(0, 3, 1, 2) if self.channels_last else pixels
        scale, shift = self.get_buffer("scale"), self.get_buffer("shift")
        return self.model(images.float() * scale + shift)


def _failing_op(err: BaseException) -> str:
    """The operator or module named in an exporter error, when the message names one."""
    text = str(err)
    for pattern in (r"operator '?([\w:.]+)'?", r"aten::\w+", r"Exporting the operator '?([\w:.]+)"):
        match = re.search(pattern, text)
        if match:
            return match.group(0)
    return ""


def write_metadata(path: str | os.PathLike[str], metadata: Mapping[str, str]) -> None:
    """Replace the ONNX file's metadata with ``metadata``; one self-contained file unless past protobuf's 2 GB."""
    import onnx

    target = Path(path)
    proto = onnx.load(str(target))
    del proto.metadata_props[:]
    for key, value in metadata.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    large = proto.ByteSize() > 2_000_000_000
    onnx.save(proto, str(target), save_as_external_data=large, location=f"{target.name}.data" if large else None)


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    example_input: Tensor,
    *,
    softmax: bool = False,
    task: str = MULTICLASS,
    thresholds: float | Sequence[float] | Tensor | None = None,
    temperature: float = 1.0,
    tta: str = "none",
    min_confidence: float | None = None,
    input_format: str = "float",
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
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
        softmax: put the softmax in the graph, so the file outputs probabilities (multi-class models only).
        task: ``"multiclass"`` or ``"multilabel"``. A multi-label file ends in a sigmoid: its output ``"scores"``
            holds one probability per label, and the metadata records ``task`` and ``thresholds``.
        thresholds: multi-label: the per-label decision thresholds for the metadata (the model's tuned ones,
            ``ImageClassifier.thresholds``); one number for all labels; ``None`` gives 0.5 each.
        temperature: multi-class: the calibrated model's temperature (``ImageClassifier.temperature``): the graph
            divides the logits by it, so its probabilities are the calibrated ones; recorded in the metadata.
        tta: ``"flip"`` or ``"flip_crops"`` bakes test-time augmentation into the graph (the views' probabilities
            averaged, as ``lightning-cv test --tta`` measures); ``"none"``: one view.
        min_confidence: multi-class: the reject threshold for deployers (below it, answer "unknown"); metadata only.
        input_format: ``"float"`` (normalised float images, as the model takes them), or ``"uint8_nchw"`` /
            ``"uint8_nhwc"``: raw RGB pixels, already resized to the model's input size, with the normalisation
            by ``mean`` and ``std`` (in [0, 1] units) baked into the graph.
        metadata: extra key/values for the file (class names, input size, mean, std ...); non-strings become JSON.
        check: run the file with onnxruntime on ``check_batch_sizes`` and compare with PyTorch.
        atol: the largest absolute difference allowed by the check (1e-4 suits fp32).

    Metadata keys written besides ``metadata``: ``output`` (the output's name: ``"logits"``, ``"probabilities"``
    or ``"scores"``), ``softmax``, ``task``, ``opset``, ``input_format``, ``temperature`` (already applied in the
    graph), ``tta`` (the views averaged in the graph), ``min_confidence`` when given (answer "unknown" when the
    highest probability is below it), and for multi-label ``thresholds`` (a JSON list, one per label: a label is
    predicted when its score reaches its threshold).

    Raises:
        ExportError: naming the operator that failed to export, or the difference the check found.
        ValueError: a bad ``input_format``, ``task`` or ``thresholds``, or ``softmax`` for a multi-label model.
    """

    if input_format not in INPUT_FORMATS:
        raise ValueError(f"Expected `input_format` to be one of {INPUT_FORMATS}, but got {input_format!r}.")
    multilabel = check_task(task) == MULTILABEL
    target = Path(path)
    if min_confidence is not None and multilabel:
        raise ValueError("`min_confidence` is for multi-class models; a multi-label file's thresholds decide.")
    from lightning_cv.models.calibration import check_min_confidence
    from lightning_cv.models.scoring import check_tta

    min_confidence = check_min_confidence(min_confidence)
    example = example_input[:1].detach().float().cpu()
    check_tta(tta, example.shape)
    net = with_scores(copy.deepcopy(model).float().cpu().eval(), task, softmax, temperature, tta)
    # validated before anything is written: a wrong length is a mistake in the caller's thresholds
    used = label_thresholds(thresholds, _num_outputs(net, example)) if multilabel else None
    target.parent.mkdir(parents=True, exist_ok=True)
    if input_format != "float":
        if mean is None or std is None or len(mean) != example.shape[1] or len(std) != example.shape[1]:
            raise ValueError(
                f"Baking preprocessing (`input_format={input_format!r}`) needs the training `mean` and `std`, one "
                f"value per channel ({example.shape[1]}), but got mean={mean}, std={std}."
            )
        channels_last = input_format == "uint8_nhwc"
        net = _Preprocess(net, mean, std, channels_last).eval()
        example = torch.randint(0, 256, example.shape, generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
        if channels_last:
            example = example.permute(0, 2, 3, 1).contiguous()
    output_name = "scores" if multilabel else "probabilities" if softmax else "logits"
    try:
        # the TorchScript exporter is chosen on purpose (see the module docstring): its deprecation notice is noise
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)  # shape checks traced as constants
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
    meta = {
        "output": output_name,
        "softmax": str(softmax).lower(),
        "task": task,
        "opset": str(opset),
        "input_format": input_format,
        "temperature": json.dumps(float(temperature)),
        "tta": tta,
    }
    if min_confidence is not None:
        meta["min_confidence"] = json.dumps(min_confidence)
    if used is not None:
        meta["thresholds"] = json.dumps(used)
    for key, value in (metadata or {}).items():
        meta[str(key)] = value if isinstance(value, str) else json.dumps(value)
    write_metadata(target, meta)
    report = ExportReport(path=str(target), opset=opset, softmax=softmax, metadata=meta, task=task, thresholds=used)
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
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # e.g. an operator version onnxruntime does not implement
        raise ExportError(
            f"onnxruntime cannot run {path}: {str(err).strip()[:400]}. The file was written, but a runtime will "
            f"refuse it: export again with another opset (the default {DEFAULT_OPSET} is widely supported)."
        ) from err
    input_name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(0)
    net = copy.deepcopy(model).float().cpu().eval()  # the caller's model keeps its device, dtype and mode
    diffs: dict[int, float] = {}
    for size in batch_sizes:
        if example_input.dtype == torch.uint8:  # raw pixels: random images of the same shape
            batch = torch.randint(0, 256, (size, *example_input.shape[1:]), generator=generator, dtype=torch.uint8)
        else:  # real example plus random images around it: exercises the dynamic batch axis
            std = example_input.float().std().clamp_min(1e-3)
            noise = torch.randn((size, *example_input.shape[1:]), generator=generator) * std
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
