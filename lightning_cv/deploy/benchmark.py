"""Inference speed, size and accuracy of one model across runtimes, measured side by side in one process.

Backends: PyTorch eager, ``torch.compile``, ONNX Runtime fp32 and ONNX Runtime INT8. Each gets warm-up runs, then
``repeats`` timed runs at batch 1 (latency p50/p90) and at a larger batch (throughput), with the thread count
stated. Quality is measured on the same images for every backend, so the cost of INT8 shows next to its speed:
accuracy for a multi-class model, mAP and macro F1 (at the model's per-label thresholds) for a multi-label one
(:func:`lightning_cv.deploy.evaluate.quality`, the definition the export command uses too).
"""

from __future__ import annotations

import contextlib
import copy
import csv
import os
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from lightning_cv.data.batch import MULTICLASS, check_task
from lightning_cv.deploy.evaluate import quality
from lightning_cv.deploy.onnx import with_scores

__all__ = ["BACKENDS", "BenchmarkResult", "benchmark_backends", "format_markdown", "print_table", "write_results"]

BACKENDS = ("eager", "compile", "onnx", "onnx_int8")
_LABELS = {
    "eager": "PyTorch eager",
    "compile": "torch.compile",
    "onnx": "ONNX Runtime fp32",
    "onnx_int8": "ONNX Runtime INT8",
}


@dataclass
class BenchmarkResult:
    """One backend's figures; ``status`` is ``"ok"`` or says why a backend was skipped or failed."""

    backend: str
    status: str = "ok"
    device: str = "cpu"
    threads: int = 0
    latency_p50_ms: float | None = None
    latency_p90_ms: float | None = None
    throughput_batch: int = 0
    throughput_img_s: float | None = None
    size_mb: float | None = None
    accuracy: float | None = None
    #: multi-label: mAP (macro average precision) and macro F1 at the model's thresholds
    mean_ap: float | None = None
    f1: float | None = None
    #: how many images the quality figures (accuracy, or mean_ap and f1) were measured on
    accuracy_images: int = 0
    speedup: float | None = None  # eager p50 latency / this p50 latency
    notes: str = ""

    @property
    def label(self) -> str:
        return _LABELS.get(self.backend, self.backend)


@dataclass
class _Runner:
    name: str
    run: Callable[[np.ndarray], np.ndarray]
    size_bytes: int
    notes: str = ""


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _time_calls(fn: Callable[[], Any], warmup: int, repeats: int, sync: Callable[[], None]) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return times


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values() if isinstance(t, Tensor))


def _torch_runner(model: nn.Module, device: torch.device, compiled: bool, amp: bool) -> _Runner:
    net = copy.deepcopy(model).eval().to(device)
    notes = []
    if device.type == "cuda":
        net = net.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        notes.append("channels_last")
    if amp:
        notes.append("bf16 autocast")
    forward: Callable[[Tensor], Tensor] = net
    config: Any = contextlib.nullcontext()
    if compiled:
        import torch._inductor.config as inductor_config

        # freezing: weights become constants that inductor pre-packs for oneDNN: 21.7 -> 9.0 ms for a ResNet-18 at
        # batch 1 on a 2-core CPU. It must be set while compiling (the first call of each shape); `options=` of
        # torch.compile did not pass it through in torch 2.14.
        forward = torch.compile(net)  # type: ignore[assignment]
        config = inductor_config.patch(freezing=True)
        notes.append("inductor, freezing")

    def run(images: np.ndarray) -> np.ndarray:
        batch = torch.from_numpy(images).to(device, non_blocking=True)
        if device.type == "cuda":
            batch = batch.contiguous(memory_format=torch.channels_last)
        with config, torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            return forward(batch).float().cpu().numpy()

    return _Runner("compile" if compiled else "eager", run, _state_bytes(model), ", ".join(notes))


def _ort_runner(name: str, path: str | os.PathLike[str], threads: int, device: torch.device) -> _Runner:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    providers = ["CPUExecutionProvider"]
    notes = ""
    if device.type == "cuda":
        if "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        else:
            notes = "onnxruntime has no CUDA provider here (CPU build): ran on the CPU"
    session = ort.InferenceSession(str(path), options, providers=providers)
    input_name = session.get_inputs()[0].name

    def run(images: np.ndarray) -> np.ndarray:
        return session.run(None, {input_name: images})[0]

    return _Runner(name, run, Path(path).stat().st_size, notes)


def _quality(
    runner: _Runner, batches: Sequence[tuple[np.ndarray, np.ndarray]], task: str, thresholds: Any
) -> tuple[dict[str, float], int]:
    if not batches:
        return {}, 0
    outputs = np.concatenate([runner.run(images) for images, _ in batches])
    targets = np.concatenate([labels for _, labels in batches])
    return quality(outputs, targets, task, thresholds), len(targets)


def benchmark_backends(
    model: nn.Module,
    example: Tensor,
    *,
    onnx_path: str | os.PathLike[str] | None = None,
    int8_path: str | os.PathLike[str] | None = None,
    eval_batches: Iterable[Any] = (),
    backends: Sequence[str] = BACKENDS,
    batch_size: int = 32,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    skipped: dict[str, str] | None = None,
    log: Callable[[str], None] = print,
    task: str = MULTICLASS,
    thresholds: float | Sequence[float] | Tensor | None = None,
    temperature: float = 1.0,
    tta: str = "none",
) -> list[BenchmarkResult]:
    """Measure each backend on the same inputs; a backend that fails gets a row that says why.

    Args:
        model: the PyTorch model (float input), e.g. an ImageClassifier loaded from its checkpoint.
        example: one input image batch ``(1, C, H, W)`` in the model's input format (size and normalisation).
        onnx_path, int8_path: the fp32 and INT8 ONNX files (rows are skipped without them).
        eval_batches: ``(images, targets)`` batches for the quality figures (the test split), the same for every
            backend: class indices (multi-class), or multi-hot rows ``(N, C)`` (multi-label).
        batch_size: the batch of the throughput measurement.
        warmup, repeats: untimed and timed runs per measurement.
        threads: CPU threads for PyTorch and onnxruntime alike (default: PyTorch's current setting).
        device: ``"cpu"`` or ``"cuda"`` (eager and compile then use bf16 autocast and channels_last).
        skipped: backends left out on purpose, with the reason (shown in the table).
        task: ``"multiclass"`` (accuracy) or ``"multilabel"`` (``mean_ap`` and ``f1``). For multi-label, PyTorch
            runs with the sigmoid the ONNX files end in, so every backend computes the same scores.
        thresholds: multi-label: the per-label decision thresholds F1 is measured at (``None``: 0.5 each).
        temperature: the calibrated model's temperature: PyTorch divides its logits by it, as the exported graph
            does (accuracy is unchanged by it; the work timed is the same).
        tta: ``"flip"`` or ``"flip_crops"``: PyTorch averages those views, as an ONNX file exported with the same
            ``tta`` does in its graph; the latency and throughput then include every view.
    """
    check_task(task)
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise ValueError(f"Unknown backends {sorted(unknown)}; choose from {', '.join(BACKENDS)}.")
    if repeats < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(
            f"Expected repeats >= 1, warmup >= 0, batch_size >= 1, but got {repeats}, {warmup}, {batch_size}."
        )
    dev = torch.device(device)
    threads = threads or torch.get_num_threads()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    sync: Callable[[], None] = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    single = example[:1].detach().cpu().float().numpy()
    rng = np.random.default_rng(0)
    batch = np.ascontiguousarray(
        np.repeat(single, batch_size, axis=0) + rng.normal(0, 0.1, (batch_size, *single.shape[1:])).astype(np.float32)
    )
    labelled = []
    for item in eval_batches:
        images, labels = item[0], item[1]
        labelled.append((images.detach().cpu().float().numpy(), labels.detach().cpu().numpy()))

    def judge(runner: _Runner) -> tuple[dict[str, float], int]:
        return _quality(runner, labelled, task, thresholds)

    scored = with_scores(model, task, temperature=temperature, tta=tta)
    results: list[BenchmarkResult] = []
    try:
        for name in BACKENDS:
            if name not in backends:
                if skipped and name in skipped:
                    results.append(BenchmarkResult(name, status=f"skipped: {skipped[name]}", device=dev.type))
                continue
            results.append(
                _measure(
                    name, scored, dev, single, batch, judge, onnx_path, int8_path, threads, warmup, repeats, sync, log
                )
            )
    finally:
        torch.set_num_threads(previous_threads)
    eager = next((r for r in results if r.backend == "eager" and r.latency_p50_ms), None)
    for result in results:
        if eager is not None and result.latency_p50_ms:
            result.speedup = eager.latency_p50_ms / result.latency_p50_ms  # type: ignore[operator]
    return results


def _measure(
    name: str,
    model: nn.Module,
    dev: torch.device,
    single: np.ndarray,
    batch: np.ndarray,
    judge: Callable[[_Runner], tuple[dict[str, float], int]],
    onnx_path: str | os.PathLike[str] | None,
    int8_path: str | os.PathLike[str] | None,
    threads: int,
    warmup: int,
    repeats: int,
    sync: Callable[[], None],
    log: Callable[[str], None],
) -> BenchmarkResult:
    result = BenchmarkResult(name, device=dev.type, threads=threads, throughput_batch=len(batch))
    path = onnx_path if name == "onnx" else int8_path
    if name in ("onnx", "onnx_int8") and (path is None or not Path(path).is_file()):
        result.status = "skipped: no ONNX file"
        return result
    log(f"benchmark: {result.label} ...")
    try:
        amp = dev.type == "cuda"
        if name in ("eager", "compile"):
            runner = _torch_runner(model, dev, compiled=name == "compile", amp=amp)
        else:
            runner = _ort_runner(name, path, threads, dev)  # type: ignore[arg-type]
        if name == "compile":
            start = time.perf_counter()
            runner.run(single)  # compilation happens here; it is reported, not timed with the runs
            runner.notes = f"{runner.notes}; compiled in {time.perf_counter() - start:.0f} s".lstrip("; ")
        latency = _time_calls(lambda: runner.run(single), warmup, repeats, sync)
        rounds = max(3, repeats // 5)
        through = _time_calls(lambda: runner.run(batch), max(1, warmup // 5), rounds, sync)
        result.latency_p50_ms = statistics.median(latency) * 1000
        result.latency_p90_ms = _percentile(latency, 90) * 1000
        result.throughput_img_s = len(batch) / statistics.median(through)
        result.size_mb = runner.size_bytes / 1e6
        figures, result.accuracy_images = judge(runner)
        result.accuracy, result.mean_ap, result.f1 = (figures.get(k) for k in ("accuracy", "map", "f1"))
        result.notes = runner.notes
    except Exception as err:  # one backend failing (no compiler for torch.compile, say) must not stop the rest
        result.status = f"failed: {type(err).__name__}: {str(err).splitlines()[0][:160] if str(err) else ''}"
    return result


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.2%}"


#: the quality fields, their column titles and cells; a table shows those some row has a value for
_QUALITY: list[tuple[str, str, Callable[[BenchmarkResult], str]]] = [
    ("accuracy", "Accuracy", lambda r: _percent(r.accuracy)),
    ("mean_ap", "mAP", lambda r: _percent(r.mean_ap)),
    ("f1", "F1 (macro)", lambda r: _percent(r.f1)),
]

_COLUMNS: list[tuple[str, Callable[[BenchmarkResult], str]]] = [
    ("Backend", lambda r: r.label),
    ("Latency p50 (ms, batch 1)", lambda r: _num(r.latency_p50_ms, 2)),
    ("p90 (ms)", lambda r: _num(r.latency_p90_ms, 2)),
    (
        "Throughput (img/s)",
        lambda r: _num(r.throughput_img_s, 1) + (f" @{r.throughput_batch}" if r.throughput_img_s else ""),
    ),
    ("Speed-up vs eager", lambda r: f"{r.speedup:.2f}x" if r.speedup else "-"),
    ("Size (MB)", lambda r: _num(r.size_mb, 1)),
    ("Quality", lambda r: ""),  # replaced by the quality columns the results have (see _columns)
    ("Threads", lambda r: str(r.threads) if r.threads else "-"),
    ("Status", lambda r: r.status + (f" ({r.notes})" if r.notes else "")),
]


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _quality_fields(results: Sequence[BenchmarkResult]) -> list[str]:
    """The quality fields some result has a value for; accuracy when none has (no evaluation data)."""
    fields = [name for name, _, _ in _QUALITY if any(getattr(r, name) is not None for r in results)]
    return fields or ["accuracy"]


def _columns(results: Sequence[BenchmarkResult]) -> list[tuple[str, Callable[[BenchmarkResult], str]]]:
    """The table's columns: accuracy for a multi-class model, mAP and F1 for a multi-label one."""
    shown = _quality_fields(results)
    quality = [(title, cell) for name, title, cell in _QUALITY if name in shown]
    columns: list[tuple[str, Callable[[BenchmarkResult], str]]] = []
    for column in _COLUMNS:
        columns.extend(quality if column[0] == "Quality" else [column])
    return columns


def format_markdown(results: Sequence[BenchmarkResult], title: str = "") -> str:
    """The results as a Markdown table (with ``title`` as a heading line when given)."""
    columns = _columns(results)
    lines = [f"{title}\n"] if title else []
    lines.append("| " + " | ".join(name for name, _ in columns) + " |")
    lines.append("|" + "|".join(" --- " for _ in columns) + "|")
    for r in results:
        lines.append("| " + " | ".join(cell(r) for _, cell in columns) + " |")
    return "\n".join(lines) + "\n"


def print_table(results: Sequence[BenchmarkResult], title: str = "") -> None:
    """Print the results as a table: with rich when it is installed, else as Markdown."""
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        print(format_markdown(results, title))
        return
    columns = _columns(results)
    table = Table(title=title or None)
    for name, _ in columns:
        table.add_column(name, justify="left" if name in ("Backend", "Status") else "right")
    for r in results:
        table.add_row(*(cell(r) for _, cell in columns))
    Console(width=200).print(table)


def write_results(
    results: Sequence[BenchmarkResult], output_dir: str | os.PathLike[str], title: str = ""
) -> dict[str, Path]:
    """Write ``benchmark.csv`` and ``benchmark.md`` (the table) to ``output_dir``.

    The CSV has every field but the quality fields no result has (``mean_ap`` and ``f1`` for a multi-class model,
    ``accuracy`` for a multi-label one), so its columns say what was measured.
    """
    folder = Path(output_dir)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {"csv": folder / "benchmark.csv", "markdown": folder / "benchmark.md"}
    unused = {name for name, _, _ in _QUALITY} - set(_quality_fields(results))
    rows = [{k: v for k, v in asdict(r).items() if k not in unused} for r in results]
    with paths["csv"].open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["backend"])
        writer.writeheader()
        writer.writerows(rows)
    paths["markdown"].write_text(format_markdown(results, title))
    return paths
