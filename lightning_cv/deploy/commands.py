"""``lightning-cv export``, ``benchmark`` and ``explain``: a trained checkpoint leaves the lab.

Each command starts from a checkpoint written by ``lightning-cv fit`` (or ``--ckpt_path best`` / ``last``, the newest
run's) and takes its data settings from the checkpoint: the image size, mean, std and crop the model was trained
with, and the dataset it was trained on. Any ``--data.*`` option overrides them (``--data.data_dir`` for other
images). This module wires the pieces together; the work is done in :mod:`lightning_cv.deploy.onnx`,
:mod:`~lightning_cv.deploy.quantize`, :mod:`~lightning_cv.deploy.benchmark` and :mod:`lightning_cv.interpret`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["COMMANDS", "run_command"]

COMMANDS = ("export", "benchmark", "explain")


# ---------------------------------------------------------------------------------------------------- loading
def _load(ckpt_path: str) -> tuple[Any, dict[str, Any]]:
    """The classifier (EMA weights when the checkpoint has them) and the data module's saved settings.

    The same safe path as ``fit``/``test``: the file is read as data and the model built from plain values
    (:mod:`lightning_cv.models.checkpoint`), so nothing in a shared checkpoint runs.
    """
    from lightning_cv.models.checkpoint import RUNS_DIR, find_checkpoint, plain_hparams, read_checkpoint
    from lightning_cv.models.classifier import ImageClassifier

    if ckpt_path in ("best", "last"):
        ckpt_path = find_checkpoint(ckpt_path, RUNS_DIR)
        print(f"--ckpt_path resolved to {ckpt_path}")
    meta = read_checkpoint(ckpt_path)
    model = ImageClassifier.load_from_checkpoint(ckpt_path, map_location="cpu")
    model.eval()
    return model, plain_hparams(meta.get("datamodule_hyper_parameters"))


def _data_keys() -> set[str]:
    """The constructor arguments of ImageDataModule: what ``--data.*`` may set."""
    import inspect

    from lightning_cv.data.datamodule import ImageDataModule

    return set(inspect.signature(ImageDataModule.__init__).parameters) - {"self"}


def _datamodule(model: Any, data_hp: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The checkpoint's data settings with the command line's ``--data.*`` on top, set up for evaluation."""
    from lightning_cv.data.datamodule import ImageDataModule

    known = _data_keys()
    settings = {k: v for k, v in {**data_hp, **overrides}.items() if k in known}  # not LightningCLI's _class_path
    for key in ("image_size", "mean", "std", "interpolation", "crop_pct"):
        if settings.get(key) is None and model.data_config.get(key if key != "image_size" else "input_size"):
            value = model.data_config[key if key != "image_size" else "input_size"]
            settings[key] = tuple(value[1:]) if key == "image_size" else value
    if isinstance(settings.get("image_size"), (list, tuple)) and len(set(settings["image_size"])) == 1:
        settings["image_size"] = int(settings["image_size"][0])
    has_source = any(settings.get(k) for k in ("data_dir", "dataset", "train_file", "val_file", "test_file"))
    if not has_source:
        raise ValueError(
            "No data to measure on: the checkpoint does not record its dataset. Pass it, e.g. "
            "`--data.data_dir path/to/images` (class folders) or `--data.dataset shapes`."
        )
    settings.pop("predict_dir", None)
    data = ImageDataModule(**settings)
    data.setup("test")
    if data.num_classes != model.hparams["num_classes"]:
        raise ValueError(
            f"The data has {data.num_classes} classes, the checkpoint's model {model.hparams['num_classes']}. "
            "Point `--data.*` at the dataset the model was trained on."
        )
    return data


def _split_loader(data: Any, splits: tuple[str, ...], num_images: int | None) -> tuple[str, Any] | None:
    for split in splits:
        try:
            return split, data.eval_dataloader(split, num_images)
        except ValueError:
            continue
    return None


def _example(model: Any, data: Any | None) -> Tensor:
    if data is not None:
        size = data.data_config["image_size"]
        height, width = size if isinstance(size, tuple) else (size, size)
        return torch.zeros(1, 3, height, width)
    return model.example_input_array


def _metadata(model: Any, data: Any | None, weights: str) -> dict[str, Any]:
    config = data.data_config if data is not None else model.data_config
    meta: dict[str, Any] = {"weights": weights, "backbone": model.hparams["backbone"]}
    if model.hparams.get("class_names"):
        meta["class_names"] = list(model.hparams["class_names"])
    for key in ("mean", "std", "interpolation", "crop_pct"):
        if config.get(key) is not None:
            meta[key] = list(config[key]) if isinstance(config[key], tuple) else config[key]
    return meta


def _as_input(images: Tensor, input_format: str, mean: Any, std: Any) -> np.ndarray:
    """Normalised float images in the layout and type an exported file with ``input_format`` expects."""
    if input_format == "float":
        return images.float().numpy()
    m = torch.tensor(mean).view(1, -1, 1, 1)
    s = torch.tensor(std).view(1, -1, 1, 1)
    pixels = ((images.float() * s + m) * 255.0).round().clamp(0, 255).to(torch.uint8)
    return (pixels.permute(0, 2, 3, 1) if input_format == "uint8_nhwc" else pixels).contiguous().numpy()


def _onnx_accuracy(path: str, loader: Any, input_format: str, mean: Any, std: Any) -> float:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    right = total = 0
    for images, labels in loader:
        logits = session.run(None, {name: _as_input(images, input_format, mean, std)})[0]
        right += int((logits.argmax(axis=1) == labels.numpy()).sum())
        total += len(labels)
    return right / max(total, 1)


# ---------------------------------------------------------------------------------------------------- parsing
class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:
        self.print_usage(sys.stderr)
        raise ValueError(message)


def _parser(command: str) -> argparse.ArgumentParser:
    descriptions = {
        "export": "Export a checkpoint to ONNX (fp32, or INT8 with --quantize), checked against PyTorch.",
        "benchmark": "Latency, throughput, size and accuracy: PyTorch eager, torch.compile, ONNX Runtime fp32/INT8.",
        "explain": "Grad-CAM overlays (and ViT attention rollout) for a folder of images, plus a contact sheet.",
    }
    parser = _Parser(prog=f"lightning-cv {command}", description=descriptions[command])
    parser.add_argument("--ckpt_path", required=True, help="checkpoint from `lightning-cv fit`, or best / last")
    if command == "export":
        parser.add_argument("--output", required=True, help="the .onnx file to write")
        parser.add_argument("--quantize", choices=["none", "static", "dynamic", "auto"], default="none")
        parser.add_argument(
            "--input_format",
            choices=["float", "uint8_nchw", "uint8_nhwc"],
            default="float",
            help="uint8_*: raw RGB pixels in, normalisation baked into the graph",
        )
        parser.add_argument("--softmax", action="store_true", help="output probabilities instead of logits")
        parser.add_argument("--opset", type=int, default=17)
        parser.add_argument("--atol", type=float, default=1e-4, help="largest difference to PyTorch accepted")
        parser.add_argument("--calibration_images", type=int, default=256)
        parser.add_argument("--calibration_method", choices=["minmax", "entropy", "percentile"], default="minmax")
        parser.add_argument(
            "--eval_images", type=int, default=1000, help="test images for the fp32 vs INT8 accuracy check (0: skip)"
        )
    elif command == "benchmark":
        parser.add_argument("--output_dir", default="runs/benchmark", help="where benchmark.csv/.md are written")
        parser.add_argument("--backends", default=",".join(("eager", "compile", "onnx", "onnx_int8")))
        parser.add_argument("--quantize", choices=["static", "dynamic", "auto"], default="auto")
        parser.add_argument("--batch_size", type=int, default=32, help="batch of the throughput measurement")
        parser.add_argument("--warmup", type=int, default=10)
        parser.add_argument("--repeats", type=int, default=50)
        parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: all PyTorch uses)")
        parser.add_argument("--device", choices=["cpu", "cuda", "auto"], default="cpu")
        parser.add_argument("--eval_images", type=int, default=1000, help="test images for accuracy (0: none)")
        parser.add_argument("--calibration_images", type=int, default=256)
    else:
        parser.add_argument("--images", required=True, help="a folder of images (searched recursively) or one file")
        parser.add_argument("--output", required=True, help="folder for the PNG overlays")
        parser.add_argument("--alpha", type=float, default=0.5, help="heatmap opacity")
        parser.add_argument("--target_class", type=int, default=None, help="explain this class, not the predicted")
        parser.add_argument("--max_images", type=int, default=None)
        parser.add_argument("--no_rollout", action="store_true", help="ViT: skip the attention rollout")
    return parser


def _split_data_args(args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """``--data.key value`` / ``--data.key=value`` pairs, parsed as YAML values (as LightningCLI does)."""
    import yaml

    rest: list[str] = []
    data: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if arg.startswith("--data."):
            key, eq, value = arg[len("--data.") :].partition("=")
            if not eq:
                if i + 1 >= len(args):
                    raise ValueError(f"`{arg}` needs a value.")
                value, i = args[i + 1], i + 1
            try:
                data[key] = yaml.safe_load(value) if value != "" else None
            except yaml.YAMLError as err:
                problem = getattr(err, "problem", None) or "not a value"
                raise ValueError(
                    f"`--data.{key}` got {value!r}, which is not a valid value ({problem}). Write lists in full, "
                    "e.g. `--data.mean '[0.5, 0.5, 0.5]'`."
                ) from err
        else:
            rest.append(arg)
        i += 1
    return rest, data


def _check_data_keys(data: dict[str, Any]) -> None:
    unknown = sorted(set(data) - _data_keys())
    if unknown:
        raise ValueError(f"Unknown data option(s) {', '.join('--data.' + k for k in unknown)}; see ImageDataModule.")


# ---------------------------------------------------------------------------------------------------- commands
def _export(ns: argparse.Namespace, data_args: dict[str, Any]) -> int:
    from lightning_cv.deploy.onnx import export_onnx, write_metadata
    from lightning_cv.deploy.quantize import quantize_onnx

    output = Path(ns.output)
    if output.suffix != ".onnx":
        raise ValueError(f"Expected `--output` to end in .onnx, but got '{output}'.")
    if output.is_dir():
        raise ValueError(f"`--output` '{output}' is a folder; pass a file name such as {output / 'model.onnx'}.")
    model, data_hp = _load(ns.ckpt_path)
    needs_data = ns.quantize in ("static", "auto") or ns.eval_images > 0
    data = None
    if needs_data:
        try:
            data = _datamodule(model, data_hp, data_args)
        except ValueError as err:
            if ns.quantize == "static":
                raise ValueError(f"Static quantization needs calibration images. {err}") from err
            print(f"Note: no accuracy check ({err})")
    config = data.data_config if data is not None else model.data_config
    mean, std = config["mean"], config["std"]
    meta = _metadata(model, data, Path(ns.ckpt_path).name)
    example = _example(model, data)
    meta["input_size"] = list(example.shape[1:])
    fp32_path = output if ns.quantize == "none" else Path(tempfile.mkdtemp()) / "fp32.onnx"
    report = export_onnx(
        model,
        fp32_path,
        example,
        softmax=ns.softmax,
        input_format=ns.input_format,
        mean=mean,
        std=std,
        opset=ns.opset,
        metadata=meta,
        atol=ns.atol,
    )
    diffs = ", ".join(f"batch {b}: {d:.1e}" for b, d in report.max_abs_diff.items())
    print(f"ONNX fp32 parity with PyTorch (max abs difference): {diffs}")
    loader = None
    if data is not None and ns.eval_images > 0:
        found = _split_loader(data, ("test", "val"), ns.eval_images)
        loader = found[1] if found else None
        if found:
            print(f"Accuracy on {len(found[1].dataset)} {found[0]} images:")
    if ns.quantize == "none":
        if loader is not None:
            print(f"  fp32: {_onnx_accuracy(str(output), loader, ns.input_format, mean, std):.2%}")
        print(f"Wrote {output} ({output.stat().st_size / 1e6:.1f} MB, input {ns.input_format})")
        return 0
    calibration = None
    if data is not None:
        found = _split_loader(data, ("train", "val"), ns.calibration_images)
        if found is not None:
            calibration = (_as_input(images, ns.input_format, mean, std) for images, _ in found[1])
    result = quantize_onnx(
        fp32_path,
        output,
        mode=ns.quantize,
        calibration=calibration,
        num_calibration_images=ns.calibration_images,
        calibration_method=ns.calibration_method,
    )
    print(f"INT8 ({result.mode}: {result.reason}); calibration images: {result.calibration_images}")
    print(
        f"Size: {result.fp32_size_bytes / 1e6:.1f} MB fp32 -> {result.size_bytes / 1e6:.1f} MB INT8 "
        f"({result.compression:.1f}x smaller)"
    )
    if loader is not None:
        fp32_acc = _onnx_accuracy(str(fp32_path), loader, ns.input_format, mean, std)
        int8_acc = _onnx_accuracy(str(output), loader, ns.input_format, mean, std)
        print(f"  fp32: {fp32_acc:.2%}   INT8: {int8_acc:.2%}   change: {100 * (int8_acc - fp32_acc):+.2f} points")
    write_metadata(output, {**report.metadata, "quantization": result.mode})
    print(f"Wrote {output}")
    return 0


def _benchmark(ns: argparse.Namespace, data_args: dict[str, Any]) -> int:
    from lightning_cv.deploy.benchmark import BACKENDS, benchmark_backends, print_table, write_results
    from lightning_cv.deploy.onnx import export_onnx
    from lightning_cv.deploy.quantize import quantize_onnx

    backends = [b.strip() for b in ns.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(BACKENDS))
    if unknown:
        raise ValueError(f"Unknown backend(s) {', '.join(unknown)} in `--backends`; choose from {', '.join(BACKENDS)}.")
    device = ns.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` but no CUDA device is visible; use `--device cpu`.")
    model, data_hp = _load(ns.ckpt_path)
    data = None
    try:
        data = _datamodule(model, data_hp, data_args)
    except ValueError as err:
        print(f"Note: accuracy not measured ({err})")
    example = _example(model, data)
    found = (
        _split_loader(data, ("test", "val"), ns.eval_images or None) if data is not None and ns.eval_images else None
    )
    workdir = Path(ns.output_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    onnx_path = int8_path = None
    skipped: dict[str, str] = {}
    if {"onnx", "onnx_int8"} & set(backends):
        onnx_path = workdir / "model.onnx"
        export_onnx(model, onnx_path, example, metadata=_metadata(model, data, Path(ns.ckpt_path).name))
    if "onnx_int8" in backends:
        mode = ns.quantize
        calibration = None
        cal = _split_loader(data, ("train", "val"), ns.calibration_images) if data is not None else None
        if cal is not None:
            calibration = (images.numpy() for images, _ in cal[1])
        elif mode in ("static", "auto"):
            from lightning_cv.deploy.quantize import choose_quantization

            if mode == "static" or choose_quantization(onnx_path or "")[0] == "static":
                skipped["onnx_int8"] = "static INT8 needs calibration images: pass --data.*"
                backends.remove("onnx_int8")
        if "onnx_int8" in backends:
            int8_path = workdir / "model.int8.onnx"
            assert onnx_path is not None  # exported above whenever an ONNX backend is asked for
            report = quantize_onnx(
                onnx_path,
                int8_path,
                mode=mode,
                calibration=calibration,
                num_calibration_images=ns.calibration_images,
            )
            print(f"INT8: {report.mode} ({report.reason})")
    results = benchmark_backends(
        model,
        example,
        onnx_path=onnx_path,
        int8_path=int8_path,
        eval_batches=found[1] if found else (),
        backends=backends,
        batch_size=ns.batch_size,
        warmup=ns.warmup,
        repeats=ns.repeats,
        threads=ns.threads,
        device=device,
        skipped=skipped,
    )
    size = "x".join(str(s) for s in example.shape[2:])
    split = f", accuracy on {len(found[1].dataset)} {found[0]} images" if found else ""
    title = f"{model.hparams['backbone']} at {size} px on {device}{split}"
    print_table(results, title)
    paths = write_results(results, workdir, title)
    print(f"Wrote {paths['csv']} and {paths['markdown']}")
    return 0


def _explain(ns: argparse.Namespace, data_args: dict[str, Any]) -> int:
    from lightning_cv.interpret.explain import explain_images

    if data_args:
        raise ValueError("`lightning-cv explain` takes no --data.* options: the checkpoint sets the preprocessing.")
    if not Path(ns.images).exists():
        raise FileNotFoundError(f"`--images` '{ns.images}' does not exist. Pass a folder of images or an image file.")
    model, data_hp = _load(ns.ckpt_path)
    config = dict(model.data_config)
    for key in ("mean", "std", "interpolation", "crop_pct"):
        if data_hp.get(key) is not None:
            config[key] = data_hp[key]
    if data_hp.get("image_size") is not None:
        size = data_hp["image_size"]
        config["input_size"] = (3, *size) if isinstance(size, (list, tuple)) else (3, size, size)
    images = [ns.images] if Path(ns.images).is_file() else ns.images
    report = explain_images(
        model,
        images,
        ns.output,
        data_config=config,
        target_class=ns.target_class,
        alpha=ns.alpha,
        rollout=False if ns.no_rollout else None,
        max_images=ns.max_images,
    )
    print(report.summary())
    return 0


def run_command(command: str, args: list[str]) -> int:
    """Run ``lightning-cv <command> <args>`` (export, benchmark or explain); returns the exit code."""
    rest, data_args = _split_data_args(args)
    ns = _parser(command).parse_args(rest)
    _check_data_keys(data_args)
    return {"export": _export, "benchmark": _benchmark, "explain": _explain}[command](ns, data_args)
