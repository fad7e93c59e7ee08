"""Explain a folder of images: Grad-CAM overlays (and ViT attention rollout) as PNG files plus a contact sheet.

This is the batch, on-disk counterpart of :class:`~lightning_cv.interpret.GradCAM`: it decodes every image with
:func:`~lightning_cv.data.image_io.load_image` (bad files are skipped and listed, never fatal), preprocesses it
exactly as evaluation does (:func:`~lightning_cv.data.transforms.build_eval_transform` with the model's data config),
and writes what the model saw with the heatmap on top. Rendering is done with PIL (matplotlib gives only the colour
map, and no figure is made), so a folder of a hundred small images takes seconds on a CPU and the user's matplotlib
backend is never touched.

A multi-label model (``hparams["task"] == "multilabel"``) gets one Grad-CAM per predicted label (every label whose
sigmoid score reaches its threshold; the top-scoring label when none does), each in its own file named by the
label's index.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from lightning_cv.data.batch import MULTICLASS, MULTILABEL, decision_thresholds, predicted_sets, task_of
from lightning_cv.data.config import DataConfig, to_display
from lightning_cv.data.image_io import IMAGE_EXTENSIONS, BadImageError, load_image
from lightning_cv.data.transforms import build_eval_transform
from lightning_cv.interpret import drawing
from lightning_cv.interpret.attention import attention_blocks, attention_rollout
from lightning_cv.interpret.drawing import CONTACT_SHEET_LIMIT
from lightning_cv.interpret.files import collect_files, output_stems, overlay_name
from lightning_cv.interpret.gradcam import GradCAM, class_probabilities

__all__ = ["ExplainReport", "ExplainedImage", "LabelScore", "SkippedFile", "explain_images"]

#: the summary lists the labels of at most this many multi-label images
_SUMMARY_IMAGES = 20


@dataclass(frozen=True)
class LabelScore:
    """A label (class) by index and name, with the model's score for it (softmax or sigmoid probability)."""

    index: int
    name: str
    score: float

    def __str__(self) -> str:
        return f"{self.name} {100 * self.score:.1f}%"


@dataclass(frozen=True)
class ExplainedImage:
    """One explained image: where it came from, what was written, and what the model predicted.

    For a multi-label model, ``predicted_*`` describe the top-scoring label, ``predicted_labels`` the predicted set
    (possibly empty), and ``gradcams`` hold one file per label of ``explained_labels``; ``gradcam`` and ``target_*``
    are the first of them.
    """

    source: Path
    gradcam: Path
    rollout: Path | None
    predicted_index: int
    predicted_class: str
    probability: float
    #: the class the heatmaps explain: the predicted one unless ``target_class`` was given
    target_index: int
    target_class: str
    target_probability: float
    #: ``"multiclass"`` or ``"multilabel"``
    task: str = MULTICLASS
    #: the prediction: the top class (multi-class), or every label whose score reaches its threshold, best first
    predicted_labels: tuple[LabelScore, ...] = ()
    #: the labels the Grad-CAM files explain, in the order of ``gradcams``
    explained_labels: tuple[LabelScore, ...] = ()
    #: one Grad-CAM file per explained label
    gradcams: tuple[Path, ...] = ()

    @property
    def overlays(self) -> list[Path]:
        """The PNG files written for this image."""
        cams = list(self.gradcams) or [self.gradcam]
        return cams if self.rollout is None else [*cams, self.rollout]

    def describe(self) -> str:
        """One line: the file and its predicted labels with their scores (multi-label) or class and probability."""
        if self.task != MULTILABEL:
            return f"{self.source}: {self.predicted_class} {100 * self.probability:.1f}%"
        if not self.predicted_labels:
            top = f"{self.predicted_class} {100 * self.probability:.1f}%"
            return f"{self.source}: no label reaches its threshold (top: {top})"
        return f"{self.source}: {', '.join(map(str, self.predicted_labels))}"


@dataclass(frozen=True)
class SkippedFile:
    """A file that could not be explained, and why (empty, not an image, truncated, too large ...)."""

    path: Path
    reason: str


@dataclass
class ExplainReport:
    """What :func:`explain_images` did: one entry per explained image, the skipped files, the contact sheet."""

    output_dir: Path
    images: list[ExplainedImage] = field(default_factory=list)
    skipped: list[SkippedFile] = field(default_factory=list)
    contact_sheet: Path | None = None
    #: files not looked at because ``max_images`` images had been explained already
    not_processed: int = 0

    def summary(self) -> str:
        """A few lines for a person: counts, where the files are, and the skipped files with their reasons."""
        lines = [f"Explained {len(self.images)} image(s) into '{self.output_dir}'."]
        multilabel = [item for item in self.images if item.task == MULTILABEL]
        if multilabel:  # a set of labels per image is worth reading; one class per image is in the overlays
            lines.append("Predicted labels:")
            lines += [f"  {item.describe()}" for item in multilabel[:_SUMMARY_IMAGES]]
            if len(multilabel) > _SUMMARY_IMAGES:
                lines.append(f"  ... and {len(multilabel) - _SUMMARY_IMAGES} more (see `report.images`).")
        if self.contact_sheet is not None:
            lines.append(f"Contact sheet: '{self.contact_sheet}'.")
        if self.not_processed:
            lines.append(f"{self.not_processed} more file(s) not processed (`max_images`).")
        if self.skipped:
            lines.append(f"Skipped {len(self.skipped)} file(s):")
            lines += [f"  {s.path}: {s.reason}" for s in self.skipped]
        return "\n".join(lines)


def explain_images(
    model: nn.Module,
    images: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    output_dir: str | os.PathLike[str],
    *,
    data_config: Mapping[str, Any] | None = None,
    class_names: Sequence[str] | None = None,
    target_class: int | None = None,
    target_layer: str | None = None,
    alpha: float = 0.5,
    rollout: bool | None = None,
    contact_sheet: bool = True,
    max_images: int | None = None,
    batch_size: int = 16,
    device: str | torch.device | None = None,
) -> ExplainReport:
    """Write a Grad-CAM overlay (and, for a ViT, an attention rollout) for every image in a folder or list.

    Use it to look at where a trained classifier looks on *your* images, e.g. a folder of its mistakes or of new
    data before deployment, without writing a dataloader: each image is preprocessed as in evaluation (resize, center
    crop, normalise with the model's data config), so the overlay shows exactly the pixels the model saw, with the
    heatmap of the predicted class (or ``target_class``) on top and "<predicted class> (97.3%)" above it. Files that
    cannot be decoded are skipped and listed in the report, so one bad file never stops a long run.

    A multi-label model (``hparams["task"] == "multilabel"``) gets one Grad-CAM per predicted label: every label
    whose sigmoid score reaches its threshold (the model's ``thresholds``, else 0.5), or the top-scoring label when
    none does (captioned "top label, none predicted"). Each overlay is captioned with its label's name and score.

    Files written into ``output_dir`` (created if needed; existing files with the same names are overwritten):
    ``<stem>_gradcam.png`` per image (multi-label: ``<stem>_gradcam_<label index>.png`` per explained label; the
    index, never the class name, goes into the path), ``<stem>_rollout.png`` per image for a Vision Transformer,
    and ``contact_sheet.png``, a grid of the first 64 images (every panel of an image in its tile). Two sources with
    the same stem get the sub-folder (then the extension) added, e.g. ``cats__001_gradcam.png``. Overlays are at
    least 224 px wide (small inputs are upscaled). The model comes back unchanged: train/eval mode of every module,
    ``requires_grad``, hooks and device.

    Args:
        model: an :class:`~lightning_cv.ImageClassifier` or any module mapping ``(N, 3, H, W)`` to logits.
        images: a folder (searched recursively, sorted, files under ``output_dir`` excluded), one image file, or a
            list of files. In a folder only files with an image extension are considered.
        output_dir: where the PNG files go.
        data_config: a :class:`~lightning_cv.data.DataConfig` (``ImageDataModule.data_config`` after setup, or
            ``model.data_config.override(image_size=...)``), or a dict in timm's form: ``input_size``
            (``(3, H, W)``) or ``image_size`` (``H`` or ``(H, W)``), ``mean``, ``std``, and optionally
            ``interpolation`` and ``crop_pct``. ``None`` takes the model's ``data_config`` (ImageClassifier).
        class_names: names of the classes in label order; ``None`` takes ``model.hparams["class_names"]``, else
            "class 3".
        target_class: explain this class index for every image; ``None`` explains each image's predicted class
            (multi-label: each predicted label).
        target_layer: the Grad-CAM layer by module name, e.g. ``"model.layer3"``; ``None`` finds the last stage.
        alpha: heatmap opacity in [0, 1].
        rollout: also write attention rollout; ``None`` does it when the model is a timm Vision Transformer.
        contact_sheet: also write ``contact_sheet.png``.
        max_images: stop after explaining this many images.
        batch_size: images per forward pass.
        device: run on this device (the model is moved there and back); ``None`` runs where the model is.

    Returns:
        An :class:`ExplainReport`; ``report.summary()`` prints well.

    Raises:
        FileNotFoundError: ``images`` does not exist, or holds no image that can be read.

    Example:
        >>> model = ImageClassifier.load_from_checkpoint("best.ckpt")             # doctest: +SKIP
        >>> report = explain_images(model, "data/mistakes", "explained/")         # doctest: +SKIP
        >>> print(report.summary())                                               # doctest: +SKIP
    """
    _check_arguments(alpha=alpha, target_class=target_class, max_images=max_images, batch_size=batch_size)
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"Expected `output_dir` to be a folder, but '{out}' is a file. Choose another path.")
    config = _resolve_data_config(model, data_config)
    names = _resolve_class_names(model, class_names)
    do_rollout = _resolve_rollout(model, rollout)
    _require_captum()
    cam = GradCAM(model, target_layer)  # checks target_layer before any image is read
    files, root = collect_files(images, exclude=out)
    jobs = list(zip(files, output_stems(files, root), strict=True))  # a list, not a dict: a file may come twice
    transform = build_eval_transform(
        config.transform_size,
        mean=config.mean,
        std=config.std,
        interpolation=config.interpolation,
        crop_pct=config.crop_pct,
    )
    min_size = math.floor(max(config.image_size) / config.crop_pct)  # lets large JPEGs decode at a reduced scale

    report = ExplainReport(output_dir=out)
    tiles: list[tuple[str, list[Image.Image]]] = []
    with _on_device(model, device):
        for start in range(0, len(jobs), batch_size):
            room = batch_size if max_images is None else min(batch_size, max_images - len(report.images))
            if room == 0:
                report.not_processed += len(jobs) - start
                break
            loaded = _load(jobs[start : start + batch_size], transform, min_size, room, report)
            if not loaded:
                continue
            batch = torch.stack([tensor for _, _, tensor in loaded])
            results = _explain_batch(model, cam, batch, do_rollout, target_class, names, config, alpha)
            out.mkdir(parents=True, exist_ok=True)  # only now: a wrong argument found above leaves no empty folder
            for (path, stem, _), (panels, entry) in zip(loaded, results, strict=True):
                written: dict[str, list[Path]] = {"gradcam": [], "rollout": []}
                for kind, label, picture in panels:
                    target = out / overlay_name(stem, kind, label)
                    picture.save(target, compress_level=3)  # zlib level 3: ~3x faster than the default 6, ~15% larger
                    written[kind].append(target)
                cams, rollout_path = written["gradcam"], next(iter(written["rollout"]), None)
                report.images.append(
                    ExplainedImage(source=path, gradcam=cams[0], rollout=rollout_path, gradcams=tuple(cams), **entry)
                )
                if contact_sheet and len(tiles) < CONTACT_SHEET_LIMIT:
                    tiles.append((stem, [picture for _, _, picture in panels]))
    if not report.images:
        raise FileNotFoundError(_nothing_readable(images, report.skipped))
    if contact_sheet:
        report.contact_sheet = out / "contact_sheet.png"
        drawing.contact_sheet(tiles).save(report.contact_sheet, compress_level=3)
    return report


def _load(
    jobs: Sequence[tuple[Path, str]], transform: Any, min_size: int, room: int, report: ExplainReport
) -> list[tuple[Path, str, Tensor]]:
    """Decode and preprocess ``jobs`` until ``room`` images are loaded.

    Bad files are added to ``report.skipped``; the files left once ``room`` is reached are counted in
    ``report.not_processed``.
    """
    loaded: list[tuple[Path, str, Tensor]] = []
    for n, (path, stem) in enumerate(jobs):
        if len(loaded) == room:
            report.not_processed += len(jobs) - n
            break
        try:
            loaded.append((path, stem, transform(load_image(path, min_size=min_size))))
        except BadImageError as err:
            report.skipped.append(SkippedFile(path, err.reason))
    return loaded


# ---------------------------------------------------------------------------------------------------- arguments
def _check_arguments(*, alpha: float, target_class: int | None, max_images: int | None, batch_size: int) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
        raise ValueError(f"Expected `alpha` to be a number in [0, 1], but got {alpha!r}.")
    if target_class is not None and (isinstance(target_class, bool) or not isinstance(target_class, int)):
        raise TypeError(f"Expected `target_class` to be a class index (int) or None, but got {target_class!r}.")
    if target_class is not None and target_class < 0:
        raise ValueError(f"Expected `target_class` >= 0, but got {target_class}.")
    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int) or max_images < 1):
        raise ValueError(f"Expected `max_images` to be an integer >= 1 or None, but got {max_images!r}.")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"Expected `batch_size` to be an integer >= 1, but got {batch_size!r}.")


def _resolve_data_config(model: nn.Module, data_config: Mapping[str, Any] | None) -> DataConfig:
    """The argument's config, else the model's, checked for what explaining RGB images needs."""
    given = data_config if data_config is not None else getattr(model, "data_config", None)
    if not isinstance(given, Mapping):  # a DataConfig is one too
        raise ValueError(
            f"Cannot tell how to preprocess the images: {type(model).__name__} has no `data_config`. Pass "
            "`data_config={'input_size': (3, 224, 224), 'mean': ..., 'std': ...}`; for a timm model "
            "`timm.data.resolve_model_data_config(model)` gives it."
        )
    config = DataConfig.from_timm(given)
    if config.in_chans != 3:
        raise ValueError(
            f"Images are explained as RGB, but the model takes {config.in_chans} channels "
            f"(`input_size={config.input_size}`)."
        )
    if len(config.mean) != 3 or len(config.std) != 3:
        raise ValueError(
            "Expected 3 values for `mean` and 3 positive values for `std`, "
            f"but got {given['mean']!r} and {given['std']!r}."
        )
    if not config.crop_pct <= 1:
        raise ValueError(f"Expected `crop_pct` in (0, 1], but got {config.crop_pct}.")
    return config.with_supported_interpolation()  # timm also says "random", "lanczos" ...: as the data module does


def _resolve_class_names(model: nn.Module, class_names: Sequence[str] | None) -> list[str] | None:
    if class_names is None:
        hparams = getattr(model, "hparams", None)
        class_names = hparams.get("class_names") if isinstance(hparams, Mapping) else None
    if class_names is None:
        return None
    if isinstance(class_names, str):
        raise TypeError(f"Expected `class_names` to be a list of names, but got the string {class_names!r}.")
    return [str(name) for name in class_names]


def _resolve_rollout(model: nn.Module, rollout: bool | None) -> bool:
    try:
        attention_blocks(model)
        is_vit = True
    except ValueError:
        is_vit = False
    if rollout and not is_vit:
        raise ValueError(
            f"`rollout=True` needs a timm Vision Transformer, but {type(getattr(model, 'model', model)).__name__} "
            "has no attention blocks. Pass `rollout=None` (rollout for ViTs only) or `rollout=False`."
        )
    return is_vit if rollout is None else rollout


def _require_captum() -> None:
    try:
        import captum  # noqa: F401
    except ImportError as err:
        raise ImportError(
            "Grad-CAM needs captum: `pip install captum` (or `pip install 'lightning-cv-kit[interpret]'`)."
        ) from err


# ---------------------------------------------------------------------------------------------------- model
@contextlib.contextmanager
def _on_device(model: nn.Module, device: str | torch.device | None) -> Iterator[None]:
    """Run on ``device`` (moving the model there and back afterwards), or where the model is for ``None``."""
    if device is None:
        yield
        return
    target = torch.empty(0, device=device).device  # "cuda" -> "cuda:0", so the comparison below is exact
    current = {t.device for t in (*model.parameters(), *model.buffers())}
    if current <= {target}:
        yield
        return
    if len(current) > 1:
        raise ValueError(
            f"The model is spread over several devices ({', '.join(sorted(map(str, current)))}); pass `device=None` "
            "to run it where it is."
        )
    (source,) = current
    model.to(target)
    try:
        yield
    finally:
        model.to(source)


#: one written picture: its kind ("gradcam" or "rollout"), the label it explains (multi-label) and the panel
_Panel = tuple[str, int | None, Image.Image]


def _explain_batch(
    model: nn.Module,
    cam: GradCAM,
    batch: Tensor,
    do_rollout: bool,
    target_class: int | None,
    names: list[str] | None,
    config: DataConfig,
    alpha: float,
) -> list[tuple[list[_Panel], dict[str, Any]]]:
    """The panels (Grad-CAM, then rollout if asked for) and the prediction fields of each image."""
    probs = class_probabilities(model, batch)
    num_classes = probs.shape[1]
    if names is not None and len(names) != num_classes:
        raise ValueError(f"Expected one class name per class ({num_classes}), but got {len(names)} `class_names`.")
    if target_class is not None and target_class >= num_classes:
        raise ValueError(f"Expected `target_class` < {num_classes} (the model's classes), but got {target_class}.")

    def label(index: int) -> str:
        return names[index] if names is not None else f"class {index}"

    rollouts: Tensor | None = None
    if do_rollout:
        param = next(model.parameters(), None)
        rollouts = attention_rollout(model, batch if param is None else batch.to(param.device, param.dtype))
    pictures = to_display(batch, config)
    if task_of(model) == MULTILABEL:
        thresholds = decision_thresholds(model, num_classes)
        return _explain_labels(cam, batch, probs, thresholds, target_class, label, pictures, rollouts, alpha)

    confidence, predicted = probs.max(dim=1)
    targets = predicted if target_class is None else torch.full_like(predicted, target_class)
    heatmaps = cam.generate_cam(batch, target_class=targets)
    results = []
    for i, picture in enumerate(pictures):
        pred, target = int(predicted[i]), int(targets[i])
        headline = f"{label(pred)} ({100 * float(confidence[i]):.1f}%)"
        method = "Grad-CAM"
        if target != pred:
            method = f"Grad-CAM for {label(target)} ({100 * float(probs[i, target]):.1f}%)"
        panels: list[_Panel] = [("gradcam", None, drawing.panel(picture, heatmaps[i], alpha, (headline, method)))]
        if rollouts is not None:
            panels.append(
                ("rollout", None, drawing.panel(picture, rollouts[i], alpha, (headline, "attention rollout")))
            )
        entry = {
            "predicted_index": pred,
            "predicted_class": label(pred),
            "probability": float(confidence[i]),
            "target_index": target,
            "target_class": label(target),
            "target_probability": float(probs[i, target]),
            "predicted_labels": (LabelScore(pred, label(pred), float(confidence[i])),),
            "explained_labels": (LabelScore(target, label(target), float(probs[i, target])),),
        }
        results.append((panels, entry))
    return results


def _explain_labels(
    cam: GradCAM,
    batch: Tensor,
    probs: Tensor,
    thresholds: Tensor,
    target_class: int | None,
    label: Callable[[int], str],
    pictures: np.ndarray,
    rollouts: Tensor | None,
    alpha: float,
) -> list[tuple[list[_Panel], dict[str, Any]]]:
    """Multi-label: one Grad-CAM per predicted label (best score first; the top label when none is predicted),
    or for ``target_class`` alone, captioned with the label's name and score."""
    chosen = predicted_sets(probs, thresholds)
    ranked = probs.argsort(dim=1, descending=True).tolist()
    predicted = [[c for c in order if chosen[i, c]] for i, order in enumerate(ranked)]  # best score first
    if target_class is not None:
        explained = [[target_class] for _ in predicted]
    else:
        explained = [labels or order[:1] for labels, order in zip(predicted, ranked, strict=True)]
    pairs = [(i, c) for i, labels in enumerate(explained) for c in labels]
    heatmaps: list[Tensor] = []
    for start in range(0, len(pairs), len(batch)):  # at most a batch of images through Grad-CAM at a time
        rows, labels = zip(*pairs[start : start + len(batch)], strict=True)
        heatmaps.extend(cam.generate_cam(batch[list(rows)], target_class=torch.tensor(labels)))
    cams = iter(heatmaps)
    results = []
    for i, picture in enumerate(pictures):
        scored = [LabelScore(c, label(c), float(probs[i, c])) for c in range(probs.shape[1])]
        panels: list[_Panel] = []
        for c in explained[i]:
            cut = f"threshold {100 * float(thresholds[c]):.3g}%"
            state = f"predicted ({cut})" if chosen[i, c] else f"not predicted ({cut})"
            if target_class is None and not predicted[i]:
                state = "top label, none predicted"
            lines = (f"{scored[c].name} ({100 * scored[c].score:.1f}%)", state)
            panels.append(("gradcam", c, drawing.panel(picture, next(cams), alpha, lines)))
        if rollouts is not None:
            headline = ", ".join(scored[c].name for c in predicted[i]) or "no label predicted"
            panels.append(
                ("rollout", None, drawing.panel(picture, rollouts[i], alpha, (headline, "attention rollout")))
            )
        first, top = scored[explained[i][0]], scored[ranked[i][0]]
        entry = {
            "predicted_index": top.index,
            "predicted_class": top.name,
            "probability": top.score,
            "target_index": first.index,
            "target_class": first.name,
            "target_probability": first.score,
            "task": MULTILABEL,
            "predicted_labels": tuple(scored[c] for c in predicted[i]),
            "explained_labels": tuple(scored[c] for c in explained[i]),
        }
        results.append((panels, entry))
    return results


def _nothing_readable(images: Any, skipped: Sequence[SkippedFile]) -> str:
    where = f"'{images}'" if isinstance(images, (str, os.PathLike)) else f"the {len(skipped)} file(s) given"
    listing = "\n".join(f"  {s.path}: {s.reason}" for s in skipped[:10])
    more = f"\n  ... and {len(skipped) - 10} more" if len(skipped) > 10 else ""
    return (
        f"No readable image in {where}; {len(skipped)} file(s) skipped:\n{listing}{more}\n"
        f"Supported extensions: {', '.join(IMAGE_EXTENSIONS)}."
    )
