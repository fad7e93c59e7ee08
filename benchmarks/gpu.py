"""GPU benchmark: lightning_cv training against a plain PyTorch loop, and PyTorch inference against ONNX Runtime.

What is measured
    Training throughput (images/s) of each model (default ``resnet50`` and ``vit_small_patch16_224``, 224 px,
    1000 classes, random weights), two ways, side by side in one process:

    * lightning_cv: ``ImageClassifier(channels_last=True, compile=...)`` trained by ``lightning.pytorch.Trainer``
      (``precision="bf16-mixed"``, no logger, checkpointing, progress bar or validation);
    * plain: a hand-written loop over the same timm model: ``torch.autocast(bfloat16)``, channels_last inputs and
      weights, ``nn.Module.compile`` when asked, forward, cross entropy, ``zero_grad``, backward, ``step``.

    Both use AdamW (lr 1e-3, weight decay 0.05 except on norms, biases and the model's ``no_weight_decay()``), a
    cosine schedule stepped every step, label smoothing 0, cudnn.benchmark and the same TF32 settings. Both read the
    same few synthetic batches, made once and kept on the GPU, so the numbers are model + framework with no data
    loading. Only steady-state steps are timed: the clock is read after ``torch.cuda.synchronize()`` at the end of
    the warm-up steps (compilation happens there) and at the end of the last step. With ``--compile`` the pair runs
    eagerly and then once more compiled (the compiled runs go last, so a slow compile cannot starve the rest).

    Inference throughput at a large batch and the median latency of batch-1 calls: PyTorch eager in fp32 (TF32
    tensor cores as set in the header) and in bf16 autocast + channels_last, against ONNX Runtime running the file
    written by ``lightning_cv.deploy.onnx.export_onnx``: on the GPU through the CUDA execution provider (inputs and
    outputs bound on the device) where onnxruntime offers it, otherwise on the CPU with the thread count stated.

    torch.compile is used for training only; inference is eager PyTorch and ONNX Runtime.

How to run (from the repository root; results are printed and written as JSON + Markdown to ``--output``)
    bash benchmarks/gpu.sh --compile --output results/   # one NVIDIA GPU: about 3-4.5 min on an H100
    bash benchmarks/gpu.sh --self-test --output /tmp/b    # the same code paths on the CPU with tiny models (~10 s)
    python benchmarks/gpu.py --help                       # batch sizes, step counts, models, time budget

Every section runs under try/except: a failure (a compile error, a missing provider) becomes a "failed: ..." cell
and the rest still runs; a section that would start with less time left in ``--max-seconds`` than it usually needs
is reported as skipped (a started training pair always finishes). Results are rewritten after every measurement,
so a run that is stopped keeps what it measured. Exit status: 0, or 1 when a section failed, or 2 without a GPU.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

START = time.perf_counter()
DEFAULT_OUTPUT = Path(__file__).resolve().parent / "results"
GPU_MODELS = ("resnet50", "vit_small_patch16_224")
SELF_TEST_MODELS = ("test_resnet", "test_vit")
LR, WEIGHT_DECAY, LABEL_SMOOTHING = 1e-3, 0.05, 0.0
#: seconds a section must still have in the budget to start: a training pair (both paths; a compiled pair includes
#: one cold and one cached compile) or the inference of one model
NEEDS = {"train": 20.0, "train_compiled": 60.0, "inference": 25.0}
NO_CUDA_MESSAGE = (
    "error: no CUDA device found (torch.cuda.is_available() is False). This benchmark measures GPU throughput and "
    "needs one NVIDIA GPU. Run `bash benchmarks/gpu.sh --self-test` to check the script on the CPU with tiny models."
)


def log(message: str) -> None:
    print(f"[{time.perf_counter() - START:6.1f}s] {message}", flush=True)


# ---------------------------------------------------------------------------------------------------- settings
@dataclass
class Settings:
    device: str
    self_test: bool
    models: tuple[str, ...]
    size: int
    num_classes: int
    batch_size: int
    warmup: int
    steps: int
    distinct_batches: int
    precision: Literal["bf16-mixed"]  # the plain loop mirrors exactly this
    compile: bool
    compile_spec: dict[str, Any]
    infer_batch_size: int
    infer_warmup: int
    infer_steps: int
    latency_steps: int
    ort_cpu_batch_size: int
    ort_threads: int
    matmul_precision: str
    max_seconds: float
    output: Path = field(default=DEFAULT_OUTPUT)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--self-test", action="store_true", help="run on the CPU with tiny models (test_resnet, test_vit)")
    p.add_argument("--compile", action="store_true", help="also train both paths with torch.compile")
    p.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. max-autotune (default: default)")
    p.add_argument("--models", nargs="+", default=None, help=f"timm names (default: {' '.join(GPU_MODELS)})")
    p.add_argument("--size", type=int, default=None, help="image size in px (default 224; 64 in the self-test)")
    p.add_argument("--num-classes", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=None, help="training batch (default 256; 4 in the self-test)")
    p.add_argument("--warmup", type=int, default=None, help="untimed training steps (default 10; 1)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps (default 30; 2)")
    p.add_argument("--infer-batch-size", type=int, default=None, help="inference batch (default 256; 4)")
    p.add_argument("--infer-steps", type=int, default=None, help="timed inference calls per measurement (default 20)")
    p.add_argument("--ort-cpu-batch-size", type=int, default=None, help="batch when ORT runs on the CPU (default 32)")
    p.add_argument("--ort-threads", type=int, default=None, help="ORT CPU threads (default: all cores)")
    p.add_argument("--matmul-precision", default="high", choices=["highest", "high", "medium"])
    p.add_argument("--max-seconds", type=float, default=None, help="time budget of the whole run (default 270)")
    p.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="folder for results.json and results.md")
    args = p.parse_args(argv)
    for name in ("size", "num_classes", "batch_size", "warmup", "steps", "infer_batch_size", "infer_steps"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"Expected `--{name.replace('_', '-')}` to be an integer >= 1, but got {value}.")
    return args


def resolve_settings(args: argparse.Namespace) -> Settings:
    """Fill in the defaults of the GPU run, or of the CPU self-test."""
    test = args.self_test

    def pick(value: Any, gpu: Any, cpu: Any) -> Any:
        return value if value is not None else (cpu if test else gpu)

    if args.compile_mode:
        spec: dict[str, Any] = {"mode": args.compile_mode}
    else:
        spec = {"backend": "eager"} if test else {}  # the self-test checks the wiring, not inductor
    return Settings(
        device="cpu" if test else "cuda",
        self_test=test,
        models=tuple(args.models or (SELF_TEST_MODELS if test else GPU_MODELS)),
        size=pick(args.size, 224, 64),
        num_classes=args.num_classes,
        batch_size=pick(args.batch_size, 256, 4),
        warmup=pick(args.warmup, 10, 1),
        steps=pick(args.steps, 30, 2),
        distinct_batches=2 if test else 4,
        precision="bf16-mixed",
        compile=args.compile,
        compile_spec=spec,
        infer_batch_size=pick(args.infer_batch_size, 256, 4),
        infer_warmup=1 if test else 5,
        infer_steps=pick(args.infer_steps, 20, 2),
        latency_steps=3 if test else 30,
        ort_cpu_batch_size=pick(args.ort_cpu_batch_size, 32, 4),
        ort_threads=args.ort_threads or (1 if test else os.cpu_count() or 1),
        matmul_precision=args.matmul_precision,
        max_seconds=pick(args.max_seconds, 270.0, 600.0),
        output=args.output,
    )


def configure_torch(s: Settings) -> None:
    """One set of backend flags for every path: cuDNN autotuning on, TF32 as asked."""
    torch.backends.cudnn.benchmark = True
    torch.set_float32_matmul_precision(s.matmul_precision)
    if s.self_test:
        torch.set_num_threads(1)  # tiny models gain nothing from threads, and a busy machine stalls them badly
    import lightning.pytorch  # noqa: F401  (sets its loggers' levels on import; ours must come after)

    for name in ("lightning.pytorch", "lightning.fabric", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)  # per-run Trainer chatter and the layer-group tables
    for message in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*defined a `validation_step` but have no `val_dataloader`.*",
        ".*isinstance\\(treespec, LeafSpec\\)` is deprecated.*",
        ".*Converting a tensor to a Python boolean might cause the trace.*",  # ONNX export tracing timm's checks
    ):
        warnings.filterwarnings("ignore", message=message)


def environment(s: Settings) -> dict[str, Any]:
    import lightning
    import timm
    import torchmetrics

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "timm": timm.__version__,
        "torchmetrics": torchmetrics.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cpu_count": os.cpu_count(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,
        "float32_matmul_precision": torch.get_float32_matmul_precision(),
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
    }
    for module in ("onnx", "onnxruntime"):
        try:
            env[module] = __import__(module).__version__
        except ImportError:
            env[module] = "not installed"
    if env["onnxruntime"] != "not installed":
        env["onnxruntime_providers"] = __import__("onnxruntime").get_available_providers()
    if s.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env["device"] = f"{props.name} ({props.total_memory / 2**30:.0f} GiB, sm_{props.major}{props.minor})"
    else:
        env["device"] = f"CPU ({platform.processor() or platform.machine()}, {threads(torch.get_num_threads())})"
    return env


# ---------------------------------------------------------------------------------------------------- helpers
class Budget:
    """The run's deadline: a section starts only if the time it usually needs is still left."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - START)

    def skip_reason(self, need: float) -> str | None:
        if self.left() >= need:
            return None
        return f"skipped: {self.left():.0f} s left of --max-seconds {self.seconds:.0f}, this needs ~{need:.0f} s"


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def failure(err: BaseException) -> str:
    """A one-line table cell for an exception; the traceback goes to stderr for the record."""
    print("".join(traceback.format_exception(type(err), err, err.__traceback__)[-12:]), file=sys.stderr, flush=True)
    text = " ".join(str(err).split())
    return f"failed: {type(err).__name__}: {text[:200]}"


def free_memory(reset_dynamo: bool = False) -> None:
    if reset_dynamo:
        torch._dynamo.reset()  # compiled graphs hold their parameters' shapes and memory; the disk cache stays
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory_gib(device: str) -> float | None:
    return torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None


def model_kwargs(name: str, size: int) -> dict[str, Any]:
    """``{"img_size": size}`` for models that need to be told their input size (ViTs), else nothing.

    Probed on the meta device (no memory, no weights), so no architecture names are hard-coded here.
    """
    import timm

    default = timm.get_pretrained_cfg_value(name, "input_size")
    if default is not None and tuple(default[-2:]) == (size, size):
        return {}
    try:
        with torch.device("meta"):
            timm.create_model(name, pretrained=False, num_classes=2, img_size=size)
    except TypeError:
        return {}
    return {"img_size": size}


def make_batches(s: Settings) -> list[tuple[Tensor, Tensor]]:
    """A few distinct (images, target) batches, made once on the device and shared by both training paths."""
    generator = torch.Generator(device=s.device).manual_seed(0)
    shape = (s.batch_size, 3, s.size, s.size)
    return [
        (
            torch.randn(shape, generator=generator, device=s.device),
            torch.randint(0, s.num_classes, (s.batch_size,), generator=generator, device=s.device),
        )
        for _ in range(s.distinct_batches)
    ]


class PremadeBatches:
    """Yields the pre-made batches in turn, ``length`` times: a data source with no loading cost."""

    def __init__(self, batches: list[tuple[Tensor, Tensor]], length: int) -> None:
        self.batches, self.length = batches, length

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        return (self.batches[i % len(self.batches)] for i in range(self.length))


# ---------------------------------------------------------------------------------------------------- training
def throughput(batch_size: int, steps: int, seconds: float) -> dict[str, float]:
    return {"images_per_s": batch_size * steps / seconds, "ms_per_step": 1000.0 * seconds / steps}


def train_lightning(name: str, s: Settings, batches: list[tuple[Tensor, Tensor]], compiled: bool) -> dict[str, Any]:
    """lightning_cv's path: ImageClassifier under lightning.Trainer, timed by a callback at batch boundaries."""
    from lightning.pytorch import Callback, LightningModule, Trainer
    from typing_extensions import override

    from lightning_cv import ImageClassifier

    marks: dict[str, float] = {}

    class StepTimer(Callback):
        @override
        def on_train_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
            sync(pl_module.device)
            marks["start"] = time.perf_counter()

        @override
        def on_train_batch_end(
            self, trainer: Trainer, pl_module: LightningModule, outputs: Any, batch: Any, batch_idx: int
        ) -> None:
            if batch_idx in (s.warmup - 1, s.warmup + s.steps - 1):
                sync(pl_module.device)
                marks["warm" if batch_idx == s.warmup - 1 else "end"] = time.perf_counter()

    torch.manual_seed(0)
    model = ImageClassifier(
        backbone=name,
        num_classes=s.num_classes,
        pretrained=False,
        backbone_kwargs=model_kwargs(name, s.size) or None,
        label_smoothing=LABEL_SMOOTHING,
        optimizer="adamw",
        lr=LR,
        weight_decay=WEIGHT_DECAY,
        scheduler="cosine",
        channels_last=True,
        compile=(s.compile_spec or True) if compiled else False,
    )
    with tempfile.TemporaryDirectory() as root:
        trainer = Trainer(
            accelerator="gpu" if s.device == "cuda" else "cpu",
            devices=1,
            precision=s.precision,
            logger=False,
            enable_checkpointing=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            max_epochs=1,
            max_steps=s.warmup + s.steps,
            num_sanity_val_steps=0,
            limit_val_batches=0,
            benchmark=True,
            callbacks=[StepTimer()],
            default_root_dir=root,
        )
        trainer.fit(model, train_dataloaders=PremadeBatches(batches, s.warmup + s.steps))
    if "end" not in marks:
        raise RuntimeError(f"training stopped after {trainer.global_step} of {s.warmup + s.steps} steps")
    loss = trainer.callback_metrics.get("train_loss_step")
    return {
        **throughput(s.batch_size, s.steps, marks["end"] - marks["warm"]),
        "warmup_s": marks["warm"] - marks["start"],
        "peak_memory_gib": peak_memory_gib(s.device),
        "final_loss": float(loss) if loss is not None else None,
    }


def weight_decay_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """No decay on norms, biases and ``no_weight_decay()`` names: the split ImageClassifier makes (via timm)."""
    skip_fn = getattr(model, "no_weight_decay", None)
    skip = set(skip_fn()) if callable(skip_fn) else set()
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for n, p in model.named_parameters():
        (no_decay if p.ndim <= 1 or n.endswith(".bias") or n in skip else decay).append(p)
    return [{"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay}]


def train_plain(name: str, s: Settings, batches: list[tuple[Tensor, Tensor]], compiled: bool) -> dict[str, Any]:
    """The floor: the same timm model, optimizer, schedule, loss, precision and memory format, no framework."""
    import timm

    torch.manual_seed(0)
    device = torch.device(s.device)
    total = s.warmup + s.steps
    model = timm.create_model(name, pretrained=False, num_classes=s.num_classes, **model_kwargs(name, s.size))
    model.to(device).to(memory_format=torch.channels_last).train()  # type: ignore[call-overload]
    optimizer = torch.optim.AdamW(weight_decay_groups(model, WEIGHT_DECAY), lr=LR)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total)
    if compiled:
        model.compile(**s.compile_spec)  # in place, as ImageClassifier does
    bf16 = s.precision.startswith("bf16")

    def step(images: Tensor, target: Tensor) -> Tensor:
        images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), target, label_smoothing=LABEL_SMOOTHING)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        return loss

    sync(device)
    start = time.perf_counter()
    data = iter(PremadeBatches(batches, total))
    for _ in range(s.warmup):
        step(*next(data))
    sync(device)
    warm = time.perf_counter()
    for images, target in data:
        loss = step(images, target)
    sync(device)
    end = time.perf_counter()
    return {
        **throughput(s.batch_size, s.steps, end - warm),
        "warmup_s": warm - start,
        "peak_memory_gib": peak_memory_gib(s.device),
        "final_loss": float(loss.detach()),
    }


TRAINERS: dict[str, Callable[..., dict[str, Any]]] = {"lightning_cv": train_lightning, "plain": train_plain}


# ---------------------------------------------------------------------------------------------------- inference
def time_batched(call: Callable[[], Any], warmup: int, steps: int, device: str) -> float:
    """Seconds per call over ``steps`` back-to-back calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        call()
    sync(device)
    return (time.perf_counter() - start) / steps


def time_latency(call: Callable[[], Any], warmup: int, steps: int, device: str) -> float:
    """Median seconds of single calls, each waited for."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(steps):
        sync(device)
        start = time.perf_counter()
        call()
        sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def infer_torch(model: nn.Module, s: Settings, bf16_channels_last: bool) -> dict[str, Any]:
    device = s.device
    fmt = torch.channels_last if bf16_channels_last else torch.contiguous_format
    net = model.to(device).to(memory_format=fmt).eval()  # type: ignore[call-overload]
    generator = torch.Generator(device=device).manual_seed(1)
    batch = torch.randn(s.infer_batch_size, 3, s.size, s.size, generator=generator, device=device)
    batch = batch.contiguous(memory_format=fmt)
    single = batch[:1].contiguous(memory_format=fmt)
    with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16, enabled=bf16_channels_last):
        per_call = time_batched(lambda: net(batch), s.infer_warmup, s.infer_steps, device)
        latency = time_latency(lambda: net(single), s.infer_warmup, s.latency_steps, device)
    return {
        "batch_size": s.infer_batch_size,
        "images_per_s": s.infer_batch_size / per_call,
        "latency_bs1_ms": 1000.0 * latency,
    }


def ort_session(path: str, s: Settings) -> tuple[Any, str]:
    """A session on the CUDA execution provider where onnxruntime has one that starts, else on the CPU; and a note."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    available = ort.get_available_providers()
    note = ""
    if s.device == "cuda" and "CUDAExecutionProvider" in available:
        cuda = ("CUDAExecutionProvider", {"device_id": torch.cuda.current_device()})
        session = ort.InferenceSession(path, options, providers=[cuda, "CPUExecutionProvider"])
        if session.get_providers()[0] == "CUDAExecutionProvider":
            tf32 = session.get_provider_options().get("CUDAExecutionProvider", {}).get("use_tf32", "?")
            return session, f"ORT CUDA EP, fp32 (use_tf32={tf32}), I/O bound on the GPU"
        note = "CUDAExecutionProvider is listed but did not start (CUDA/cuDNN libraries?): ORT ran on the CPU. "
    elif s.device == "cuda":
        providers = ", ".join(available)
        note = f"onnxruntime {ort.__version__} here is the CPU build (providers: {providers}): ORT ran on the CPU. "
    options.intra_op_num_threads = s.ort_threads
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    note += f"ORT CPU EP, fp32, {threads(s.ort_threads)}, batch {s.ort_cpu_batch_size}"
    if s.device == "cuda":
        note += "; not comparable with the GPU rows"
    return session, note


def infer_onnxruntime(path: str, s: Settings) -> dict[str, Any]:
    import numpy as np

    session, note = ort_session(path, s)
    on_gpu = session.get_providers()[0] == "CUDAExecutionProvider"
    batch_size = s.infer_batch_size if on_gpu else s.ort_cpu_batch_size
    input_name, output_name = session.get_inputs()[0].name, session.get_outputs()[0].name
    generator = torch.Generator().manual_seed(1)
    batch = torch.randn(batch_size, 3, s.size, s.size, generator=generator)
    if on_gpu:
        device_id = torch.cuda.current_device()
        tensors = [batch.cuda(), batch[:1].cuda()]
        torch.cuda.synchronize()
        bindings = []
        for x in tensors:
            binding = session.io_binding()
            binding.bind_input(input_name, "cuda", device_id, np.float32, tuple(x.shape), x.data_ptr())
            binding.bind_output(output_name, "cuda", device_id)
            bindings.append(binding)
        run_big, run_one = (lambda b=b: session.run_with_iobinding(b) for b in bindings)
    else:
        arrays = [batch.numpy(), batch[:1].numpy()]
        run_big, run_one = (lambda a=a: session.run([output_name], {input_name: a}) for a in arrays)
    device = "cuda" if on_gpu else "cpu"
    warmup = max(1, s.infer_warmup // 2) if not on_gpu else s.infer_warmup
    steps = s.infer_steps if on_gpu else max(2, s.infer_steps // 4)  # keeps a CPU run of a big model short
    per_call = time_batched(run_big, warmup, steps, device)
    latency = time_latency(run_one, warmup, s.latency_steps, device)
    return {
        "batch_size": batch_size,
        "images_per_s": batch_size / per_call,
        "latency_bs1_ms": 1000.0 * latency,
        "runtime": "onnxruntime " + ("CUDA" if on_gpu else "CPU"),
        "note": note,
    }


# ---------------------------------------------------------------------------------------------------- report
class Report:
    """Rows of results, written to results.json and results.md after every row, so a timeout keeps what was done."""

    def __init__(self, s: Settings, env: dict[str, Any]) -> None:
        self.settings, self.env = s, env
        self.rows: list[dict[str, Any]] = []
        self.settings.output.mkdir(parents=True, exist_ok=True)

    def add(self, row: dict[str, Any]) -> dict[str, Any]:
        self.rows.append(row)
        self.write(complete=False)
        return row

    def write(self, complete: bool) -> None:
        settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self.settings).items()}
        payload = {
            "complete": complete,
            "elapsed_s": round(time.perf_counter() - START, 1),
            "environment": self.env,
            "settings": settings,
            "rows": self.rows,
        }
        out = self.settings.output
        (out / "results.json").write_text(json.dumps(payload, indent=2, default=str) + "\n")
        (out / "results.md").write_text(self.markdown(complete) + "\n")

    def header_lines(self) -> list[str]:
        s, e = self.settings, self.env
        ort = e["onnxruntime"]
        if "onnxruntime_providers" in e:
            ort += f" (providers: {', '.join(e['onnxruntime_providers'])})"
        compile_text = f"off, then on ({s.compile_spec or 'torch.compile defaults'})" if s.compile else "off"
        where = "the GPU" if s.device == "cuda" else "the CPU (self-test)"
        tf32 = e["float32_matmul_precision"] != "highest" or e["cudnn_allow_tf32"]
        tf32_note = "; the eager fp32 rows use TF32 tensor cores (see backends)" if tf32 and s.device == "cuda" else ""
        return [
            f"- Device: {e['device']}; CUDA {e['cuda']}, cuDNN {e['cudnn']}, {e['cpu_count']} CPU cores",
            f"- Versions: Python {e['python']}, torch {e['torch']}, lightning {e['lightning']}, timm {e['timm']}, "
            f"torchmetrics {e['torchmetrics']}, onnx {e['onnx']}, onnxruntime {ort}",
            f"- Training: {', '.join(s.models)} at {s.size} px, {s.num_classes} classes, random weights, batch "
            f"{s.batch_size}, {s.precision}, channels_last, AdamW (lr {LR}, wd {WEIGHT_DECAY}) + per-step cosine, "
            f"label smoothing {LABEL_SMOOTHING}; {s.warmup} warm-up + {s.steps} timed steps; compile: {compile_text}",
            f"- Data: {s.distinct_batches} synthetic batches made once and kept on {where}, the same tensors for both "
            "paths: the numbers are model + framework, with no data loading",
            f"- Backends, identical for every path: cudnn.benchmark={e['cudnn_benchmark']}, float32 matmul precision "
            f"'{e['float32_matmul_precision']}', cudnn.allow_tf32={e['cudnn_allow_tf32']}",
            f"- Inference: batch {s.infer_batch_size} ({s.infer_steps} timed calls after {s.infer_warmup} warm-up), "
            f"batch-1 latency = median of {s.latency_steps} calls; ORT on the CPU uses batch {s.ort_cpu_batch_size}"
            + tf32_note,
        ]

    def markdown(self, complete: bool) -> str:
        title = "# lightning_cv GPU benchmark" + (" (self-test on the CPU)" if self.settings.self_test else "")
        lines = [title, "", *self.header_lines(), ""]
        if not complete:
            lines += ["**Incomplete: the run was still going (or was stopped) when this was written.**", ""]
        lines += ["## Training throughput (images/s, higher is better)", "", *self.training_table(), ""]
        lines += ["## Inference", "", *self.inference_table()]
        return "\n".join(lines)

    def training_table(self) -> list[str]:
        lines = [
            "| Model | Compile | Batch | lightning_cv img/s | plain img/s | ratio lightning_cv / plain "
            "| ms/step (L / P) | warm-up s (L / P) | peak GiB (L / P) | final loss (L / P) | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        pairs: dict[tuple[str, bool], dict[str, dict[str, Any]]] = {}
        for row in self.rows:
            if row["section"] == "train":
                pairs.setdefault((row["model"], row["compile"]), {})[row["path"]] = row
        for (model, compiled), pair in pairs.items():
            light, plain = pair.get("lightning_cv", {}), pair.get("plain", {})
            status = "; ".join(f"{p}: {r['status']}" for p, r in pair.items() if r["status"] != "ok") or "ok"
            lines.append(
                "| "
                + " | ".join(
                    [
                        model,
                        "on" if compiled else "off",
                        str(light.get("batch_size") or plain.get("batch_size")),
                        fmt(light.get("images_per_s"), ".1f"),
                        fmt(plain.get("images_per_s"), ".1f"),
                        fmt(light.get("ratio"), ".3f"),
                        f"{fmt(light.get('ms_per_step'), '.1f')} / {fmt(plain.get('ms_per_step'), '.1f')}",
                        f"{fmt(light.get('warmup_s'), '.1f')} / {fmt(plain.get('warmup_s'), '.1f')}",
                        f"{fmt(light.get('peak_memory_gib'), '.1f')} / {fmt(plain.get('peak_memory_gib'), '.1f')}",
                        f"{fmt(light.get('final_loss'), '.4f')} / {fmt(plain.get('final_loss'), '.4f')}",
                        cell(status),
                    ]
                )
                + " |"
            )
        return lines

    def inference_table(self) -> list[str]:
        lines = [
            "| Model | Runtime | Batch | img/s | batch-1 latency ms | vs eager fp32 (img/s) | status / note |",
            "|---|---|---|---|---|---|---|",
        ]
        for row in self.rows:
            if row["section"] != "inference":
                continue
            note = row["status"] if row["status"] != "ok" else (row.get("note") or "ok")
            values = [
                row["model"],
                row["runtime"],
                str(row.get("batch_size", "n/a")),
                fmt(row.get("images_per_s"), ".1f"),
                fmt(row.get("latency_bs1_ms"), ".2f"),
                fmt(row.get("ratio"), ".2f"),
                cell(note),
            ]
            lines.append("| " + " | ".join(values) + " |")
        return lines


def fmt(value: float | None, spec: str) -> str:
    return "n/a" if value is None or not math.isfinite(value) else format(value, spec)


def threads(n: int) -> str:
    return f"{n} thread" + ("" if n == 1 else "s")


def cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


# ---------------------------------------------------------------------------------------------------- sections
def run_training(
    report: Report, s: Settings, budget: Budget, batches: list[tuple[Tensor, Tensor]], name: str, compiled: bool
) -> None:
    """Both paths for one model, then the ratio, written onto both rows. A pair that starts always finishes."""
    skip = budget.skip_reason(NEEDS["train_compiled" if compiled else "train"])
    rows: dict[str, dict[str, Any]] = {}
    for path, trainer in TRAINERS.items():
        row: dict[str, Any] = {
            "section": "train",
            "model": name,
            "path": path,
            "compile": compiled,
            "batch_size": s.batch_size,
            "precision": s.precision,
            "channels_last": True,
            "status": skip or "ok",
        }
        if not skip:
            log(f"train {name} {path} compile={'on' if compiled else 'off'} ...")
            try:
                row.update(trainer(name, s, batches, compiled))
                log(
                    f"  {row['images_per_s']:.1f} img/s, {row['ms_per_step']:.1f} ms/step, "
                    f"warm-up {row['warmup_s']:.1f} s, final loss {fmt(row['final_loss'], '.4f')}"
                )
            except Exception as err:
                row["status"] = failure(err)
                log(f"  {row['status']}")
            finally:
                free_memory(reset_dynamo=compiled)
        rows[path] = report.add(row)
    light, plain = rows["lightning_cv"].get("images_per_s"), rows["plain"].get("images_per_s")
    if light and plain:
        for row in rows.values():
            row["ratio"] = light / plain
        log(f"  ratio lightning_cv / plain = {light / plain:.3f}")
        report.write(complete=False)


def export_model(model: nn.Module, s: Settings, folder: str, name: str) -> tuple[str, dict[str, Any]]:
    from lightning_cv.deploy.onnx import export_onnx

    start = time.perf_counter()
    example = torch.randn(1, 3, s.size, s.size)
    # the parity is reported, not the point here: a bound a little looser than the exporter's 1e-4 keeps an
    # fp32 rounding difference from costing the ONNX Runtime measurement
    result = export_onnx(model, Path(folder) / f"{name}.onnx", example, atol=1e-3)
    info = {"export_s": time.perf_counter() - start, "export_max_abs_diff": max(result.max_abs_diff.values())}
    return result.path, info


def run_inference(report: Report, s: Settings, budget: Budget, name: str) -> None:
    """Eager fp32, eager bf16 + channels_last and ONNX Runtime for one model (one set of random weights)."""
    from lightning_cv import ImageClassifier

    base = {"section": "inference", "model": name, "compile": False}
    specs = [
        ("eager_fp32", "torch eager fp32"),
        ("eager_bf16_channels_last", "torch eager bf16 + channels_last"),
        ("onnxruntime", "onnxruntime"),
    ]
    skip = budget.skip_reason(NEEDS["inference"])
    if skip:
        for path, runtime in specs:
            report.add({**base, "path": path, "runtime": runtime, "status": skip})
        return
    torch.manual_seed(0)
    model = ImageClassifier(
        backbone=name, num_classes=s.num_classes, pretrained=False, backbone_kwargs=model_kwargs(name, s.size) or None
    ).model.eval()
    with tempfile.TemporaryDirectory() as folder:
        onnx_path: str | None = None
        export_info: dict[str, Any] = {}
        export_error = None
        try:
            log(f"export {name} to ONNX ...")
            onnx_path, export_info = export_model(model, s, folder, name)
            log(
                f"  exported in {export_info['export_s']:.1f} s, max |ORT - torch| = "
                f"{export_info['export_max_abs_diff']:.1e}"
            )
        except Exception as err:
            export_error = failure(err)
        fp32_rate = None
        for path, runtime in specs:
            row: dict[str, Any] = {**base, "path": path, "runtime": runtime, "status": "ok"}
            log(f"infer {name} {runtime} ...")
            try:
                if path == "onnxruntime":
                    free_memory()
                    if onnx_path is None:
                        raise RuntimeError(f"no ONNX file ({export_error})")
                    row.update(export_info)
                    row.update(infer_onnxruntime(onnx_path, s))
                else:
                    row.update(infer_torch(model, s, bf16_channels_last=path != "eager_fp32"))
                fp32_rate = row["images_per_s"] if path == "eager_fp32" else fp32_rate
                row["ratio"] = row["images_per_s"] / fp32_rate if fp32_rate else None
                log(
                    f"  {row['images_per_s']:.1f} img/s at batch {row['batch_size']}, "
                    f"batch-1 {row['latency_bs1_ms']:.2f} ms"
                )
            except Exception as err:
                row["status"] = failure(err)
                log(f"  {row['status']}")
            report.add(row)
    del model
    free_memory()


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.self_test and not torch.cuda.is_available():
        print(NO_CUDA_MESSAGE, file=sys.stderr, flush=True)
        return 2
    s = resolve_settings(args)
    configure_torch(s)
    env = environment(s)
    report = Report(s, env)
    budget = Budget(s.max_seconds)
    print(
        "\n".join(["# lightning_cv GPU benchmark" + (" (self-test)" if s.self_test else ""), *report.header_lines()]),
        flush=True,
    )
    log(f"writing results to {s.output.resolve()}; time budget {s.max_seconds:.0f} s")
    batches = make_batches(s)
    for name in s.models:
        run_training(report, s, budget, batches, name, compiled=False)
    for name in s.models:
        run_inference(report, s, budget, name)
    if s.compile:  # last: a cold compile is the slowest and least predictable part
        for name in s.models:
            run_training(report, s, budget, batches, name, compiled=True)
    report.write(complete=True)
    print("\n" + report.markdown(complete=True), flush=True)
    failed = [r for r in report.rows if r["status"].startswith("failed")]
    log(f"done: {len(report.rows)} results, {len(failed)} failed; written to {s.output.resolve()}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
