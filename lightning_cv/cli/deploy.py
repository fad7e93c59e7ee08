"""``lightning-cv export``, ``benchmark`` and ``explain``: a trained checkpoint leaves the lab.

Each command starts from a checkpoint written by ``lightning-cv fit`` (or ``--ckpt_path best`` / ``last``, the newest
run's) and takes its data settings from the checkpoint: the image size, mean, std and crop the model was trained
with, and the dataset it was trained on. ``--data.*`` options (typed: every ``ImageDataModule`` argument) override
them. The options are the keyword arguments of :func:`export`, :func:`benchmark` and :func:`explain`, parsed by the
same parser class as ``fit`` (``--config``, ``--print_config``, the same one-line errors). This module wires; the
work is done in :mod:`lightning_cv.deploy` and :mod:`lightning_cv.interpret`. ``calibrate``
(:mod:`lightning_cv.cli.calibrate`), ``shard`` (:mod:`lightning_cv.cli.shard`) and ``package``
(:mod:`lightning_cv.cli.package`) share this parser and registry.
"""

from __future__ import annotations

import inspect
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from lightning_cv.cli.parsing import ShortErrorParser, secure_parsing
from lightning_cv.data.batch import MULTICLASS, MULTILABEL, decision_thresholds, task_of
from lightning_cv.data.config import OVERRIDE_KEYS, DataConfig

__all__ = ["DEPLOY_COMMANDS", "benchmark", "calibrate", "explain", "export", "package", "run_deploy_command"]


# ---------------------------------------------------------------------------------------------------- the commands
def export(
    ckpt_path: str,
    output: str,
    quantize: Literal["none", "static", "dynamic", "auto"] = "none",
    input_format: Literal["float", "uint8_nchw", "uint8_nhwc"] = "float",
    softmax: bool = False,
    thresholds: float | list[float] | None = None,
    tta: Literal["none", "flip", "flip_crops"] = "none",
    min_confidence: float | None = None,
    opset: int = 17,
    atol: float = 1e-4,
    calibration_images: int = 256,
    calibration_method: Literal["minmax", "entropy", "percentile"] = "minmax",
    eval_images: int = 1000,
    *,
    data: dict[str, Any] | None = None,
) -> int:
    """Export a checkpoint to ONNX (fp32, or INT8 with --quantize), checked against PyTorch.

    A multi-label checkpoint's file outputs sigmoid scores ("scores", one per label) and records ``task`` and the
    per-label ``thresholds`` in its metadata; its check reports mAP and F1 instead of accuracy.

    Args:
        ckpt_path: checkpoint from `lightning-cv fit`, or best / last.
        output: the .onnx file to write.
        quantize: INT8: static (calibrated, CNNs), dynamic (Linear-heavy models), auto (chosen by where weights sit).
        input_format: uint8_*: raw RGB pixels in, normalisation baked into the graph.
        softmax: output probabilities instead of logits (multi-class; multi-label files always output sigmoid scores).
        thresholds: multi-label: decision thresholds for the metadata and the F1 check: one number for every label,
            or a list of one per label (default: the checkpoint's tuned ones).
        tta: bake test-time augmentation into the graph: flip, or flip_crops (flip plus four corner crops).
        min_confidence: the reject threshold recorded for deployers (default: the checkpoint's, from calibrate).
        opset: ONNX opset.
        atol: largest difference to PyTorch accepted.
        calibration_images: training images that calibrate static INT8.
        calibration_method: how activation ranges are calibrated.
        eval_images: test images for the accuracy (multi-label: mAP and F1) check (0: skip).
        data: overrides of the checkpoint's data settings (the --data.* options).
    """
    from lightning_cv.deploy.evaluate import onnx_quality
    from lightning_cv.deploy.onnx import export_onnx, write_metadata
    from lightning_cv.deploy.quantize import quantize_onnx

    target = Path(output)
    if target.suffix != ".onnx":
        raise ValueError(f"Expected `--output` to end in .onnx, but got '{target}'.")
    if target.is_dir():
        raise ValueError(f"`--output` '{target}' is a folder; pass a file name such as {target / 'model.onnx'}.")
    ckpt_path, model, data_hp = _load(ckpt_path)
    task, thresholds_used = _decision(model, thresholds, softmax=softmax)
    if min_confidence is not None:
        model.min_confidence = min_confidence  # checked as the model checks it
    needs_data = quantize in ("static", "auto") or eval_images > 0
    datamodule = _datamodule_or_note(model, data_hp, data or {}, needed=quantize == "static") if needs_data else None
    # without a data module (no check asked for), the --data.* preprocessing options still apply
    mean, std, example, meta = _export_inputs(model, datamodule, {**data_hp, **(data or {})}, ckpt_path)
    with tempfile.TemporaryDirectory() as scratch:
        fp32_path = target if quantize == "none" else Path(scratch) / "fp32.onnx"
        report = export_onnx(
            model, fp32_path, example, softmax=softmax, task=task, thresholds=thresholds_used,
            temperature=model.temperature, tta=tta, min_confidence=model.min_confidence,
            input_format=input_format, mean=mean, std=std, opset=opset, metadata=meta, atol=atol,
        )  # fmt: skip
        if model.temperature != 1.0 or tta != "none":
            print(f"In the graph: temperature {model.temperature:.4f}, test-time augmentation {tta}")
        diffs = ", ".join(f"batch {b}: {d:.1e}" for b, d in report.max_abs_diff.items())
        print(f"ONNX fp32 parity with PyTorch (max abs difference): {diffs}")
        found = _split_loader(datamodule, ("test", "val"), eval_images) if eval_images > 0 else None
        if found:
            title = "Accuracy" if task == MULTICLASS else _QUALITY_TITLE[task]
            print(f"{title} on {len(found[1].dataset)} {found[0]} images:")
        loader = found[1] if found else ()

        def measure(path: Path) -> dict[str, float]:
            return onnx_quality(path, loader, input_format, mean, std, task, thresholds_used)

        if quantize == "none":
            if found:
                print(_quality_line(measure(target)))
            print(f"Wrote {target} ({target.stat().st_size / 1e6:.1f} MB, input {input_format})")
            return 0
        calibration = None
        cal = _split_loader(datamodule, ("train", "val"), calibration_images)
        if cal is not None:
            from lightning_cv.deploy.evaluate import as_onnx_input

            calibration = (as_onnx_input(images, input_format, mean, std) for images, _ in cal[1])
        result = quantize_onnx(
            fp32_path, target, mode=quantize, calibration=calibration, num_calibration_images=calibration_images,
            calibration_method=calibration_method,
        )  # fmt: skip
        print(f"INT8 ({result.mode}: {result.reason}); calibration images: {result.calibration_images}")
        print(
            f"Size: {result.fp32_size_bytes / 1e6:.1f} MB fp32 -> {result.size_bytes / 1e6:.1f} MB INT8 "
            f"({result.compression:.1f}x smaller)"
        )
        if found:
            print(_quality_line(measure(fp32_path), measure(target)))
    write_metadata(target, {**report.metadata, "quantization": result.mode})
    print(f"Wrote {target}")
    return 0


def benchmark(
    ckpt_path: str,
    output_dir: str = "runs/benchmark",
    backends: str = "eager,compile,onnx,onnx_int8",
    quantize: Literal["static", "dynamic", "auto"] = "auto",
    batch_size: int = 32,
    warmup: int = 10,
    repeats: int = 50,
    threads: int | None = None,
    device: Literal["cpu", "cuda", "auto"] = "cpu",
    eval_images: int = 1000,
    calibration_images: int = 256,
    thresholds: float | list[float] | None = None,
    tta: Literal["none", "flip", "flip_crops"] = "none",
    *,
    data: dict[str, Any] | None = None,
) -> int:
    """Latency, throughput, size and accuracy: PyTorch eager, torch.compile, ONNX Runtime fp32/INT8.

    For a multi-label checkpoint, mAP and macro F1 (at the per-label thresholds) take the place of accuracy.

    Args:
        ckpt_path: checkpoint from `lightning-cv fit`, or best / last.
        output_dir: where benchmark.csv/.md (and the exported files) are written.
        backends: comma-separated: eager, compile, onnx, onnx_int8.
        quantize: INT8 mode of the onnx_int8 backend.
        batch_size: batch of the throughput measurement.
        warmup: untimed runs before timing.
        repeats: timed runs at batch 1.
        threads: CPU threads (default: all PyTorch uses).
        device: cpu, cuda or auto.
        eval_images: test images for accuracy (multi-label: mAP and F1) (0: none).
        calibration_images: training images that calibrate static INT8.
        thresholds: multi-label: decision thresholds for F1: one number for every label, or a list of one per
            label (default: the checkpoint's tuned ones).
        tta: measure with test-time augmentation (flip, or flip_crops): every backend averages the same views.
        data: overrides of the checkpoint's data settings (the --data.* options).
    """
    from lightning_cv.deploy.benchmark import BACKENDS, benchmark_backends, print_table, write_results

    chosen = [b.strip() for b in backends.split(",") if b.strip()]
    unknown = sorted(set(chosen) - set(BACKENDS))
    if unknown:
        raise ValueError(f"Unknown backend(s) {', '.join(unknown)} in `--backends`; choose from {', '.join(BACKENDS)}.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("`--device cuda` but no CUDA device is visible; use `--device cpu`.")
    ckpt_path, model, data_hp = _load(ckpt_path)
    task, thresholds_used = _decision(model, thresholds)
    datamodule = _datamodule_or_note(model, data_hp, data or {}, needed=False)
    data_hp = {**data_hp, **(data or {})}  # without a data module, the --data.* preprocessing options still apply
    example = _example(model, datamodule, data_hp)
    from lightning_cv.models.scoring import check_tta

    check_tta(tta, example.shape)  # before anything is exported
    found = _split_loader(datamodule, ("test", "val"), eval_images or None) if eval_images else None
    workdir = Path(output_dir)
    workdir.mkdir(parents=True, exist_ok=True)
    skipped: dict[str, str] = {}
    metadata = _metadata(model, datamodule, data_hp, Path(ckpt_path).name)
    onnx_path, int8_path = _benchmark_exports(
        model, datamodule, example, chosen, workdir, quantize, calibration_images, skipped, metadata,
        task, thresholds_used, tta,
    )  # fmt: skip
    results = benchmark_backends(
        model, example, onnx_path=onnx_path, int8_path=int8_path, eval_batches=found[1] if found else (),
        backends=chosen, batch_size=batch_size, warmup=warmup, repeats=repeats, threads=threads, device=device,
        skipped=skipped, task=task, thresholds=thresholds_used, temperature=model.temperature, tta=tta,
    )  # fmt: skip
    size = "x".join(str(s) for s in example.shape[2:])
    split = f", {_QUALITY_TITLE[task]} on {len(found[1].dataset)} {found[0]} images" if found else ""
    extras = [f"temperature {model.temperature:.3f}"] if model.temperature != 1.0 else []
    extras += [f"TTA {tta}"] if tta != "none" else []
    title = f"{model.hparams['backbone']} at {size} px on {device}{split}" + "".join(f", {e}" for e in extras)
    print_table(results, title)
    paths = write_results(results, workdir, title)
    print(f"Wrote {paths['csv']} and {paths['markdown']}")
    return 0


def explain(
    ckpt_path: str,
    images: str,
    output: str,
    alpha: float = 0.5,
    target_class: int | None = None,
    max_images: int | None = None,
    rollout: bool = True,
) -> int:
    """Grad-CAM overlays (and ViT attention rollout) for a folder of images, plus a contact sheet.

    A multi-label checkpoint gets one overlay per predicted label (``<stem>_gradcam_<label index>.png``), and the
    summary lists each image's predicted labels with their scores.

    Args:
        ckpt_path: checkpoint from `lightning-cv fit`, or best / last.
        images: a folder of images (searched recursively) or one file.
        output: folder for the PNG overlays.
        alpha: heatmap opacity.
        target_class: explain this class (multi-label: this label) for every image, not the predicted one(s).
        max_images: explain at most this many images.
        rollout: ViTs: also write attention rollout maps (`--no_rollout` skips them).
    """
    from lightning_cv.interpret.explain import explain_images

    if not Path(images).exists():
        raise FileNotFoundError(f"`--images` '{images}' does not exist. Pass a folder of images or an image file.")
    ckpt_path, model, data_hp = _load(ckpt_path)
    report = explain_images(
        model,
        [images] if Path(images).is_file() else images,
        output,
        data_config=_trained_data_config(model, data_hp),
        target_class=target_class,
        alpha=alpha,
        rollout=None if rollout else False,
        max_images=max_images,
    )
    print(report.summary())
    return 0


from lightning_cv.cli.calibrate import calibrate  # noqa: E402  (it imports this module's helpers when it runs)
from lightning_cv.cli.package import package  # noqa: E402
from lightning_cv.cli.shard import shard  # noqa: E402

#: each command and whether it takes ``--data.*`` options
DEPLOY_COMMANDS: dict[str, tuple[Callable[..., int], bool]] = {
    "calibrate": (calibrate, True),
    "export": (export, True),
    "benchmark": (benchmark, True),
    "explain": (explain, False),
    "shard": (shard, True),
    "package": (package, True),
}


def run_deploy_command(command: str, args: list[str]) -> int:
    """Run ``lightning-cv <command> <args>`` (calibrate, export, benchmark or explain); returns the exit code."""
    secure_parsing()
    function, with_data = DEPLOY_COMMANDS[command]
    parser = deploy_parser(command)
    cfg = parser.parse_args(args).as_dict()
    cfg.pop("config", None)
    data = cfg.pop("data", None) or {}
    options = {**cfg, "data": {k: v for k, v in data.items() if v is not None}} if with_data else cfg
    return function(**options)


def deploy_parser(command: str) -> ShortErrorParser:
    """The parser of one deploy command: its function's typed options, ``--data.*``, ``--config``."""
    from jsonargparse import ActionConfigFile, ActionYesNo

    function, with_data = DEPLOY_COMMANDS[command]
    doc = inspect.getdoc(function) or ""
    parser = ShortErrorParser(prog=f"lightning-cv {command}", description=doc.splitlines()[0], default_env=False)
    parser.add_argument("--config", action=ActionConfigFile, help="A YAML file of these options.")
    # switches are flags (`--softmax`, `--no_rollout`), as users of command lines expect, not `--softmax true`
    flags = {n: p.default for n, p in inspect.signature(function).parameters.items() if isinstance(p.default, bool)}
    parser.add_function_arguments(function, as_group=False, skip={"data", *flags})
    for name, default in flags.items():
        described = re.search(rf"^\s+{name}: (.*)$", doc, re.MULTILINE)
        parser.add_argument(
            f"--{name}", action=ActionYesNo, default=default, help=described.group(1) if described else None
        )
    if with_data:
        from lightning_cv.data.datamodule import ImageDataModule

        parser.add_class_arguments(ImageDataModule, "data", help="Override the checkpoint's data settings.")
        # unset means "the checkpoint's": only the options the user gives replace what the model was trained with
        parser.set_defaults({f"data.{key}": None for key in _data_keys()})
    return parser


# ---------------------------------------------------------------------------------------------------- wiring
def _load(ckpt_path: str) -> tuple[str, Any, dict[str, Any]]:
    """The checkpoint path (``best``/``last`` resolved), the classifier (EMA weights when the checkpoint has them)
    and the data module's saved settings.

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
    return ckpt_path, model, plain_hparams(meta.get("datamodule_hyper_parameters"))


def _remote(key: str, value: Any) -> bool:
    """Whether a data setting names data elsewhere: a shard URL, or a Hugging Face dataset that is not a folder here."""
    values = value if isinstance(value, (list, tuple)) else [value]
    if key in ("shards", "val_shards", "test_shards"):
        return any("://" in str(v) for v in values if v is not None)
    if key == "hf_dataset":
        return value is not None and not Path(str(value)).is_dir()
    return False


def _data_keys() -> set[str]:
    """The constructor arguments of ImageDataModule: what ``--data.*`` may set."""
    from lightning_cv.data.datamodule import ImageDataModule

    return set(inspect.signature(ImageDataModule.__init__).parameters) - {"self"}


def _datamodule(model: Any, data_hp: dict[str, Any], overrides: dict[str, Any]) -> Any:
    """The checkpoint's data settings with the command line's ``--data.*`` on top, set up for evaluation."""
    from lightning_cv.data.datamodule import ImageDataModule

    known = _data_keys()
    # a checkpoint names the data it was trained on, but never makes this machine download anything: no download,
    # and no shard URL or Hub dataset taken from the file (given on the command line, they are the user's choice)
    recorded = {k: v for k, v in data_hp.items() if not _remote(k, v)}
    dropped = sorted(set(data_hp) - set(recorded))
    if dropped and not any(k in overrides for k in dropped):
        print(f"Note: the checkpoint's {', '.join(dropped)} name remote data, not fetched; pass them with --data.*")
    settings = {k: v for k, v in {**recorded, "download": False, **overrides}.items() if k in known}
    # preprocessing the data settings leave open is the model's, as when it was trained
    trained = _trained_data_config(model, {k: v for k, v in settings.items() if k in OVERRIDE_KEYS})
    settings.update(trained.to_arguments())
    sources = ("data_dir", "dataset", "train_file", "val_file", "test_file", "shards", "hf_dataset")
    has_source = any(settings.get(k) for k in sources)
    if not has_source and data_hp and not dropped and not any(data_hp.get(k) for k in sources):
        # the checkpoint records ImageDataModule settings without a source: it was trained on the embedded default
        settings["dataset"] = "shapes"
        has_source = True
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
    data_task, model_task = getattr(data, "task", MULTICLASS), task_of(model)
    if data_task != model_task:
        raise ValueError(
            f"The data is {data_task}, the checkpoint's model {model_task}. "
            "Point `--data.*` at the dataset the model was trained on."
        )
    return data


def _datamodule_or_note(model: Any, data_hp: dict[str, Any], overrides: dict[str, Any], needed: bool) -> Any:
    """The evaluation data module, or ``None`` with a printed note when there is none (an error when ``needed``)."""
    try:
        return _datamodule(model, data_hp, overrides)
    except (ValueError, OSError) as err:  # no source recorded, or the recorded one is not on this machine
        if needed:
            raise ValueError(f"Static quantization needs calibration images. {err}") from err
        print(f"Note: no {_QUALITY_TITLE[task_of(model)]} check ({err})")
        return None


def _split_loader(data: Any, splits: tuple[str, ...], num_images: int | None) -> tuple[str, Any] | None:
    if data is None:
        return None
    for split in splits:
        try:
            return split, data.eval_dataloader(split, num_images)
        except ValueError:
            continue
    return None


#: what the quality check of each task measures, as printed
_QUALITY_TITLE = {MULTICLASS: "accuracy", MULTILABEL: "mAP and F1"}


def _decision(
    model: Any, thresholds: float | list[float] | None, softmax: bool = False
) -> tuple[str, list[float] | None]:
    """The model's task and, for multi-label, its decision thresholds: ``--thresholds`` when given, else the
    checkpoint's (its tuned ``thresholds``, else 0.5 each). Refuses options that do not fit the task."""
    from lightning_cv.deploy.evaluate import label_thresholds

    task = task_of(model)
    if task != MULTILABEL:
        if thresholds is not None:
            raise ValueError(
                "`--thresholds` is for multi-label models, but this checkpoint's model is multi-class (it predicts "
                "the class with the highest score). Leave `--thresholds` out."
            )
        return task, None
    if softmax:
        raise ValueError(
            "`--softmax` is for multi-class models, but this checkpoint's model is multi-label: its file always "
            "outputs sigmoid scores (one per label). Leave `--softmax` out."
        )
    num_classes = int(model.hparams["num_classes"])
    given = decision_thresholds(model, num_classes) if thresholds is None else thresholds
    return task, label_thresholds(given, num_classes)


def _quality_line(fp32: dict[str, float], int8: dict[str, float] | None = None) -> str:
    """``  fp32: 91.00%`` (multi-class) or ``  fp32: mAP 83.10%, F1 70.00%``, with INT8 and the change when given."""
    from lightning_cv.deploy.evaluate import format_quality

    if "accuracy" in fp32:  # the multi-class line as it always was
        line = f"  fp32: {fp32['accuracy']:.2%}"
        if int8 is None:
            return line
        change = 100 * (int8["accuracy"] - fp32["accuracy"])
        return f"{line}   INT8: {int8['accuracy']:.2%}   change: {change:+.2f} points"
    if int8 is None:
        return f"  fp32: {format_quality(fp32)}"
    keys = ("map", "f1")
    changes = ", ".join(f"{name} {100 * (int8[k] - fp32[k]):+.2f}" for k, name in zip(keys, ("mAP", "F1"), strict=True))
    return f"  fp32: {format_quality(fp32, keys)}   INT8: {format_quality(int8, keys)}   change: {changes} points"


def _trained_data_config(model: Any, data_hp: dict[str, Any]) -> DataConfig:
    """The preprocessing the model was trained with: the backbone's config, overridden by the data settings saved in
    the checkpoint (a model pretrained at 224 px and trained at 32 px is exported and explained at 32 px)."""
    return model.data_config.override(**{k: data_hp.get(k) for k in OVERRIDE_KEYS})


def _config(model: Any, data: Any | None, data_hp: dict[str, Any]) -> DataConfig:
    """The data module's config when there is one (it has applied ``--data.*``), else the trained one."""
    return data.data_config if data is not None else _trained_data_config(model, data_hp)


def _example(model: Any, data: Any | None, data_hp: dict[str, Any]) -> Tensor:
    return torch.zeros(1, *_config(model, data, data_hp).input_size)


def _metadata(model: Any, data: Any | None, data_hp: dict[str, Any], weights: str) -> dict[str, Any]:
    """What an exported file records: the weights it came from, the backbone, the classes and the preprocessing."""
    meta: dict[str, Any] = {"weights": weights, "backbone": model.hparams["backbone"]}
    if model.hparams.get("class_names"):
        meta["class_names"] = list(model.hparams["class_names"])
    config = _config(model, data, data_hp)
    return {**meta, **config.export_metadata(input_size=config.input_size)}


def _export_inputs(
    model: Any, data: Any | None, data_hp: dict[str, Any], ckpt_path: str
) -> tuple[Any, Any, Tensor, dict[str, Any]]:
    """Mean, std, an example batch and the metadata of an export: the data module's settings, else the trained ones."""
    config = _config(model, data, data_hp)
    meta = _metadata(model, data, data_hp, Path(ckpt_path).name)
    return config.mean, config.std, _example(model, data, data_hp), meta


def _benchmark_exports(
    model: Any,
    data: Any | None,
    example: Tensor,
    backends: list[str],
    workdir: Path,
    mode: Literal["static", "dynamic", "auto"],
    calibration_images: int,
    skipped: dict[str, str],
    metadata: dict[str, Any],
    task: str,
    thresholds: list[float] | None,
    tta: str = "none",
) -> tuple[Path | None, Path | None]:
    """The fp32 and INT8 ONNX files the chosen backends run (``None`` where not needed); may drop ``onnx_int8``."""
    from lightning_cv.deploy.onnx import export_onnx
    from lightning_cv.deploy.quantize import choose_quantization, quantize_onnx

    onnx_path = int8_path = None
    if {"onnx", "onnx_int8"} & set(backends):
        onnx_path = workdir / "model.onnx"
        export_onnx(
            model, onnx_path, example, metadata=metadata, task=task, thresholds=thresholds,
            temperature=model.temperature, tta=tta, min_confidence=model.min_confidence,
        )  # fmt: skip
    if "onnx_int8" not in backends or onnx_path is None:
        return onnx_path, None
    cal = _split_loader(data, ("train", "val"), calibration_images)
    calibration = (images.numpy() for images, _ in cal[1]) if cal is not None else None
    if calibration is None and (mode == "static" or (mode == "auto" and choose_quantization(onnx_path)[0] == "static")):
        skipped["onnx_int8"] = "static INT8 needs calibration images: pass --data.*"
        backends.remove("onnx_int8")
        return onnx_path, None
    int8_path = workdir / "model.int8.onnx"
    report = quantize_onnx(
        onnx_path, int8_path, mode=mode, calibration=calibration, num_calibration_images=calibration_images
    )
    print(f"INT8: {report.mode} ({report.reason})")
    return onnx_path, int8_path
