"""``lightning-cv package``: a checkpoint as a model folder that plain timm loads, with a model card, optionally
pushed to the Hugging Face Hub.

Wiring only: the folder format is :mod:`lightning_cv.models.model_folder`, the card
:mod:`lightning_cv.deploy.model_card`, the measurements :mod:`lightning_cv.deploy.package`, the upload
:mod:`lightning_cv.deploy.hub`. Like ``export`` and ``benchmark``, the data settings come from the checkpoint, with
``--data.*`` on top (:mod:`lightning_cv.cli.deploy`).
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["package"]


def package(
    ckpt_path: str,
    output: str,
    evaluate: bool = True,
    onnx: bool = False,
    int8: bool = False,
    benchmark: bool = False,
    push_to_hub: str | None = None,
    private: bool = True,
    dataset_name: str | None = None,
    license: str | None = None,
    overwrite: bool = False,
    *,
    data: dict[str, Any] | None = None,
) -> int:
    """Write a model folder (model.safetensors, config.json, README.md model card) that timm loads; optionally push it.

    timm loads the folder as `timm.create_model("local-dir:<output>", pretrained=True)` (after a push,
    "hf-hub:<org/name>"), and `ImageClassifier(backbone=..., pretrained="<output>")` fine-tunes from it. The weights
    are the EMA average when the run had EMA. The card's figures come from the run: the settings saved in the
    checkpoint and the run's config.yaml, the test split evaluated now (--evaluate), a benchmark measured now
    (--benchmark); what was not measured says so.

    Args:
        ckpt_path: checkpoint from `lightning-cv fit` (or calibrate), or best / last.
        output: the folder to write (created; an existing, non-empty one only with --overwrite).
        evaluate: test the model on the checkpoint's test split for the card (accuracy, F1, ECE, per-class table,
            confusion matrix); without it, or without a test split, the card says "not evaluated".
        onnx: also write model.onnx (checked against PyTorch).
        int8: also write model_int8.onnx (INT8, quantized as `export --quantize auto` does).
        benchmark: measure latency and throughput on this machine for the card (PyTorch, and the ONNX files).
        push_to_hub: upload the folder to this Hub repository (org/name) once it is written (needs a token).
        private: create the Hub repository private (--no_private: public).
        dataset_name: the dataset's name for the card's metadata and text.
        license: the card's license (default: the pretrained backbone's, when timm records one).
        overwrite: replace a non-empty --output folder (only once the new one is complete).
        data: overrides of the checkpoint's data settings (the --data.* options).
    """
    from lightning_cv.cli.deploy import _config, _datamodule_or_note, _load
    from lightning_cv.deploy import package as parts
    from lightning_cv.deploy.hub import check_repo_id, hub_token, push_folder
    from lightning_cv.deploy.model_card import CardFacts, render_model_card

    target = parts.check_output_folder(output, overwrite)
    if push_to_hub is not None:  # before any work: a wrong id or a missing token is said at once
        check_repo_id(push_to_hub)
        hub_token()
    ckpt_path, model, data_hp = _load(ckpt_path)
    from lightning_cv import __version__
    from lightning_cv.data.batch import MULTILABEL, task_of
    from lightning_cv.models.checkpoint import read_checkpoint
    from lightning_cv.models.model_folder import save_model_folder
    from lightning_cv.resume.keys import EMA_KEY

    meta = read_checkpoint(ckpt_path)
    hp = model.hparams
    task = task_of(model)
    datamodule = _datamodule_or_note(model, data_hp, data or {}, needed=False)
    config = _config(model, datamodule, {**data_hp, **(data or {})})
    names = list(hp.get("class_names") or [str(i) for i in range(int(hp["num_classes"]))])
    thresholds = [float(t) for t in model.decision.values.tolist()] if task == MULTILABEL else None
    extra: dict[str, Any] = {"task": task, "lightning_cv_version": __version__}
    if task == MULTILABEL:
        extra["thresholds"] = thresholds
    else:
        extra["temperature"] = float(model.temperature)
        extra["min_confidence"] = model.min_confidence
    scratch = parts.scratch_folder(target)
    try:
        save_model_folder(model.model, scratch, data_config=config, label_names=names, extra=extra)
        facts = CardFacts(
            title=push_to_hub or target.name,
            backbone=str(hp["backbone"]),
            pretrained=parts.initial_weights(hp.get("pretrained"), str(hp["backbone"])),
            task=task,
            class_names=names,
            input_size=tuple(config.input_size),
            mean=tuple(config.mean),
            std=tuple(config.std),
            interpolation=str(config.interpolation),
            crop_pct=float(config.crop_pct),
            weights="the EMA average of the weights" if meta.get(EMA_KEY) else "the trained weights (no EMA)",
            recipe=parts.training_recipe(dict(hp), data_hp, meta, parts.run_settings(ckpt_path)),
            data_note=_data_source(data_hp, data or {}),
            checkpoint=Path(ckpt_path).name,
            license=license or _backbone_license(model),
            dataset_name=dataset_name,
            repo_id=push_to_hub,
            thresholds=thresholds,
            temperature=float(model.temperature) if task != MULTILABEL else 1.0,
            min_confidence=model.min_confidence if task != MULTILABEL else None,
        )
        if datamodule is not None:
            facts.split_sizes = {split: len(ds) for split, ds in datamodule.datasets.items()}
            if "train" in datamodule.datasets:
                facts.train_counts = [int(c) for c in datamodule.label_counts("train")[0].tolist()]
            facts.checks = dict(datamodule.check_results)
        if not evaluate:
            facts.not_evaluated = "packaged with `--no_evaluate`."
        elif datamodule is None:
            facts.not_evaluated = "the checkpoint's data is not available here (pass it with `--data.*`)."
        else:
            found = parts.evaluate(model, datamodule, scratch)
            if isinstance(found, str):
                facts.not_evaluated = found
                print(f"Note: not evaluated: {found}")
            else:
                facts.evaluation = found
        _exports(ckpt_path, scratch, onnx, int8, data)
        if benchmark:
            facts.deployment = _benchmark(ckpt_path, scratch, data)
        facts.files = {p.name: p.stat().st_size for p in sorted(scratch.iterdir()) if p.is_file()}
        card = render_model_card(facts)
        (scratch / "README.md").write_text(card, encoding="utf-8")
        parts.install_folder(scratch, target)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)  # nothing half-written is left, and --output is untouched
        raise
    print(f"Wrote {target}: {', '.join(sorted(p.name for p in target.iterdir()))}")
    print(f'Load it with timm: timm.create_model("local-dir:{target}", pretrained=True)')
    if push_to_hub is not None:
        message = f"lightning-cv package: {Path(ckpt_path).name} ({hp['backbone']}, {len(names)} classes)"
        url = push_folder(target, push_to_hub, private=private, commit_message=message)
        print(f"Pushed to {push_to_hub} ({'private' if private else 'public'}): {url}")
    return 0


def _data_source(data_hp: dict[str, Any], overrides: dict[str, Any]) -> str:
    """Where the training images came from, by names only (never a local path in full)."""
    settings = {**data_hp, **overrides}
    if settings.get("dataset"):
        return f"Source: the `{settings['dataset']}` dataset."
    for key, words in (("shards", "WebDataset shards"), ("hf_dataset", "the Hugging Face dataset"),
                       ("train_file", "the image list"), ("data_dir", "the class folders")):  # fmt: skip
        value = settings.get(key)
        if value:
            text = str(value[0] if isinstance(value, list) else value)
            name = text if key == "hf_dataset" and not Path(text).is_dir() else Path(text.rstrip("/")).name
            return f"Source: {words} '{name}'."
    if data_hp and not any(settings.get(k) for k in ("dataset", "shards", "hf_dataset", "train_file", "data_dir")):
        return "Source: lightning-cv's embedded `shapes` dataset (synthetic shapes, made offline)."
    return ""


def _backbone_license(model: Any) -> str | None:
    """The license timm records for the pretrained weights the model started from (``None`` otherwise)."""
    if model.hparams.get("pretrained") is not True:
        return None
    value = getattr(model.model, "pretrained_cfg", {}).get("license")
    return str(value) if value else None


def _exports(ckpt_path: str, folder: Path, onnx: bool, int8: bool, data: dict[str, Any] | None) -> None:
    from lightning_cv.cli.deploy import export

    if onnx:
        export(ckpt_path, str(folder / "model.onnx"), eval_images=0, data=data)
    if int8:
        export(ckpt_path, str(folder / "model_int8.onnx"), quantize="auto", eval_images=0, data=data)


def _benchmark(ckpt_path: str, folder: Path, data: dict[str, Any] | None) -> str:
    """Latency and throughput measured now (PyTorch eager, and ONNX Runtime fp32/INT8 when exported), as Markdown."""
    from lightning_cv.cli.deploy import benchmark

    backends = ["eager"] + [b for b, f in (("onnx", "model.onnx"), ("onnx_int8", "model_int8.onnx"))
                            if (folder / f).is_file()]  # fmt: skip
    with tempfile.TemporaryDirectory() as scratch:
        benchmark(ckpt_path, output_dir=scratch, backends=",".join(backends), eval_images=0, repeats=20, data=data)
        table = (Path(scratch) / "benchmark.md").read_text(encoding="utf-8")
    return f"Measured on the machine that packaged the model, `lightning-cv benchmark` settings:\n\n{table}"
