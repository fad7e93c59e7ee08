"""The model card of a model folder: ``README.md`` with Hugging Face's YAML metadata and the run's own figures.

Every figure in a card comes from the run (the checkpoint's settings, the run's ``config.yaml``, an evaluation just
made, a benchmark just measured) through :class:`CardFacts`; a part that was not measured says so ("not evaluated")
instead of showing a number. Text from the data (class names, dataset names) is escaped for Markdown and HTML, and
the metadata block is written with ``yaml.safe_dump``.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lightning_cv.reporting.tables import format_table

__all__ = ["METRIC_NAMES", "CardFacts", "Evaluation", "render_model_card"]

#: the metrics a card reports, in order: (logged name without the ``test_`` prefix, name in the card, HF type)
METRIC_NAMES: tuple[tuple[str, str, str], ...] = (
    ("acc", "Top-1 accuracy", "accuracy"),
    ("acc_top5", "Top-5 accuracy", "top_5_accuracy"),
    ("f1", "Macro F1", "f1"),
    ("precision", "Macro precision", "precision"),
    ("recall", "Macro recall", "recall"),
    ("ece", "Expected calibration error (15 bins)", "ece"),
    ("loss", "Loss (the training loss function)", "loss"),
    ("map", "Mean average precision (mAP)", "map"),
    ("f1_micro", "Micro F1", "f1_micro"),
    ("subset_acc", "Subset accuracy (exact match)", "subset_accuracy"),
    ("hamming", "Hamming loss", "hamming_loss"),
)


@dataclass
class Evaluation:
    """The model measured on a split: its metrics (``test_`` names), per-class rows and risk-coverage rows."""

    split: str
    images: int
    metrics: dict[str, float]
    per_class: list[dict[str, Any]] = field(default_factory=list)
    risk_coverage: list[dict[str, Any]] = field(default_factory=list)
    #: the confusion-matrix picture's file name in the folder (multi-class), or ``""``
    confusion_image: str = ""


@dataclass
class CardFacts:
    """What a card says, all read from the run."""

    title: str
    backbone: str
    pretrained: str
    task: str
    class_names: list[str]
    input_size: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str
    crop_pct: float
    weights: str
    recipe: dict[str, Any]
    checkpoint: str
    license: str | None = None
    dataset_name: str | None = None
    #: images per split, from the data module (empty: the data was not available)
    split_sizes: dict[str, int] = field(default_factory=dict)
    #: training images (multi-label: positives) per class
    train_counts: list[int] = field(default_factory=list)
    #: the data module's check results (``image_check``, ``bad_files``, ``leakage_check``, ``leaks``)
    checks: dict[str, Any] = field(default_factory=dict)
    data_note: str = ""
    evaluation: Evaluation | None = None
    not_evaluated: str = "not evaluated"
    temperature: float = 1.0
    min_confidence: float | None = None
    thresholds: list[float] | None = None
    #: benchmark rows (Markdown table) and what was measured on
    deployment: str = ""
    files: dict[str, int] = field(default_factory=dict)
    repo_id: str | None = None


def _text(value: Any) -> str:
    """Data-given text for prose: HTML-escaped, Markdown's active characters neutralised, one line."""
    text = html.escape(str(value), quote=False).replace("\n", " ").replace("\r", " ")
    for char in "\\`*_[]|#":
        text = text.replace(char, "\\" + char)
    return text


def _code(value: Any) -> str:
    """Data-given text inside inline code: backticks and line breaks taken out (code spans show the rest as is)."""
    return str(value).replace("`", "'").replace("\n", " ").replace("\r", " ")


def _value(value: Any) -> str:
    """A setting for the recipe table: numbers in their shortest exact form, ``-`` for unset."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _escaped_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: html.escape(v, quote=False) if isinstance(v, str) else v for k, v in row.items()} for row in rows]


def _metadata(facts: CardFacts) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "library_name": "timm",
        "pipeline_tag": "image-classification",
        "tags": ["image-classification", "timm", "lightning-cv", facts.task],
    }
    if facts.license:
        meta["license"] = facts.license
    if facts.dataset_name:
        meta["datasets"] = [facts.dataset_name]
    evaluation = facts.evaluation
    if evaluation is not None:
        values = [
            {"type": kind, "value": round(float(evaluation.metrics[f"test_{key}"]), 6), "name": name}
            for key, name, kind in METRIC_NAMES
            if f"test_{key}" in evaluation.metrics
        ]
        dataset = facts.dataset_name or "custom"
        meta["model-index"] = [
            {
                "name": facts.title,
                "results": [
                    {
                        "task": {"type": "image-classification", "name": "Image Classification"},
                        "dataset": {"name": dataset, "type": dataset, "split": evaluation.split},
                        "metrics": values,
                    }
                ],
            }
        ]
    return meta


def _usage(facts: CardFacts) -> list[str]:
    source = f"hf-hub:{facts.repo_id}" if facts.repo_id else "local-dir:path/to/this/folder"
    score = "model(x).sigmoid()" if facts.task == "multilabel" else "model(x).softmax(-1)"
    return [
        "```python",
        "import timm",
        "from PIL import Image",
        "",
        f'model = timm.create_model("{source}", pretrained=True).eval()',
        "config = timm.data.resolve_model_data_config(model)  # the preprocessing below",
        "transform = timm.data.create_transform(**config, is_training=False)",
        'x = transform(Image.open("photo.jpg").convert("RGB")).unsqueeze(0)',
        f"scores = {score}",
        'label = model.pretrained_cfg["label_names"][int(scores.argmax())]',
        "```",
        "",
        "To fine-tune it further with lightning-cv: "
        f'`ImageClassifier(backbone="{facts.backbone}", pretrained="{source.replace("local-dir:", "")}")`.',
    ]


def _data_section(facts: CardFacts) -> list[str]:
    lines = ["## Training data", ""]
    if facts.dataset_name:
        lines.append(f"Dataset: {_text(facts.dataset_name)}.")
    if facts.data_note:
        lines.append(_text(facts.data_note))
    if not facts.split_sizes:
        lines += ["", "The data was not available when this card was written: sizes and checks not recorded.", ""]
        return lines
    sizes = ", ".join(f"{split} {count:,}" for split, count in facts.split_sizes.items())
    lines += ["", f"Images per split: {sizes}.", ""]
    if facts.train_counts:
        unit = "images with the label" if facts.task == "multilabel" else "images"
        total = sum(facts.train_counts)
        rows = [
            {"class": name, f"training {unit}": count, "share": count / total if total else 0.0}
            for name, count in zip(facts.class_names, facts.train_counts, strict=False)
        ]
        smallest = min(facts.train_counts)
        ratio = f"{max(facts.train_counts) / smallest:.2f}" if smallest else "inf (a class has no image)"
        lines += ["Class balance (training split):", "", format_table(_escaped_rows(rows), digits=3)]
        lines += [f"Imbalance ratio (largest / smallest): {ratio}.", ""]
    checks = facts.checks
    bad = checks.get("bad_files")
    leaks = checks.get("leaks")
    lines.append(
        "- Unusable files: "
        + (f"{bad} skipped (image check: {checks.get('image_check')})." if bad is not None else "not checked at setup.")
    )
    lines.append(
        "- Train/validation/test leakage: "
        + (
            f"{leaks} image(s) found in more than one split ({checks.get('leakage_check')} check)."
            if leaks is not None
            else "not checked (the check was off, or there is one split)."
        )
    )
    return [*lines, ""]


def _recipe_section(facts: CardFacts) -> list[str]:
    rows = [{"setting": key, "value": _value(value)} for key, value in facts.recipe.items()]
    return ["## Training recipe", "", format_table(_escaped_rows(rows))]


def _evaluation_section(facts: CardFacts) -> list[str]:
    lines = ["## Evaluation", ""]
    evaluation = facts.evaluation
    if evaluation is None:
        return [*lines, f"Not evaluated: {_text(facts.not_evaluated)}", ""]
    lines += [f"On the {evaluation.split} split ({evaluation.images:,} images):", ""]
    rows = [
        {"metric": name, "value": float(evaluation.metrics[f"test_{key}"])}
        for key, name, _ in METRIC_NAMES
        if f"test_{key}" in evaluation.metrics
    ]
    lines.append(format_table(rows))
    if evaluation.per_class:
        lines += ["Per class:", "", format_table(_escaped_rows(evaluation.per_class))]
    if evaluation.confusion_image:
        lines += [f"![Confusion matrix on the {evaluation.split} split]({evaluation.confusion_image})", ""]
    if evaluation.risk_coverage:
        lines += ["Accuracy when answering only the most confident images:", "", format_table(evaluation.risk_coverage)]
    return lines


def _decisions_section(facts: CardFacts) -> list[str]:
    lines = ["## Decisions", ""]
    if facts.task == "multilabel":
        if facts.thresholds:
            rows = [{"label": n, "threshold": t} for n, t in zip(facts.class_names, facts.thresholds, strict=False)]
            lines += ["A label is answered when its sigmoid score reaches its threshold (tuned on validation):", ""]
            lines.append(format_table(_escaped_rows(rows)))
        return lines
    if facts.temperature != 1.0:
        lines.append(
            f"Calibrated: divide the logits by the temperature {facts.temperature:.4f} before the softmax "
            "(fitted on the validation split; `config.json` records it under `lightning_cv.temperature`)."
        )
    else:
        lines.append("Not calibrated (temperature 1): run `lightning-cv calibrate` before packaging to calibrate.")
    if facts.min_confidence is not None:
        lines.append(
            f"Reject threshold: answer \"unknown\" when the highest probability is below {facts.min_confidence:.4f} "
            "(`lightning_cv.min_confidence` in `config.json`)."
        )
    return [*lines, ""]


def _files_section(facts: CardFacts) -> list[str]:
    rows = [{"file": name, "MB": size / 1e6} for name, size in facts.files.items()]
    rows.append({"file": "README.md", "MB": "this card"})
    return ["## Files", "", format_table(rows, digits=2)] if rows else []


def render_model_card(facts: CardFacts) -> str:
    """The card's text: the YAML metadata block, then the sections."""
    import yaml

    head = yaml.safe_dump(_metadata(facts), sort_keys=False, allow_unicode=True)
    names = ", ".join(_text(n) for n in facts.class_names[:50])
    more = f" ... ({len(facts.class_names)} in all)" if len(facts.class_names) > 50 else ""
    kind = "A multi-label image" if facts.task == "multilabel" else "An image"
    lines = [
        "---",
        head.rstrip("\n"),
        "---",
        "",
        f"# {_text(facts.title)}",
        "",
        f"{kind} classifier of {len(facts.class_names)} classes, fine-tuned from timm's `{_code(facts.backbone)}` "
        f"(initial weights: {_text(facts.pretrained)}) with [lightning-cv](https://pypi.org/project/lightning-cv-kit/)."
        f" Weights: {_text(facts.weights)}. Checkpoint: `{_code(facts.checkpoint)}`.",
        "",
        f"Classes: {names}{more}.",
        "",
        "## Use",
        "",
        *_usage(facts),
        "",
        f"Preprocessing (in `config.json`): input {'x'.join(str(v) for v in facts.input_size)}, "
        f"{_text(facts.interpolation)} resize to size / crop_pct then a center crop (crop_pct {facts.crop_pct:g}), "
        f"mean {tuple(round(v, 4) for v in facts.mean)}, std {tuple(round(v, 4) for v in facts.std)}.",
        "",
        *_data_section(facts),
        *_recipe_section(facts),
        *_evaluation_section(facts),
        *_decisions_section(facts),
    ]
    lines += ["## Deployment", "", facts.deployment or "Not benchmarked (`lightning-cv package --benchmark`).", ""]
    lines += [
        "## Limitations",
        "",
        f"- The model only knows these {len(facts.class_names)} classes: any image gets one of them"
        + (" (or \"unknown\" below the reject threshold)." if facts.min_confidence is not None else "."),
        "- Its figures hold for images like the training data"
        + (f" ({_text(facts.dataset_name)})" if facts.dataset_name else "")
        + "; other cameras, lighting or domains can score lower. Measure on your own images before relying on it.",
        "- Test figures come from one test split; small splits give wide error bars.",
        "",
        *_files_section(facts),
    ]
    return "\n".join(lines).rstrip("\n") + "\n"
