"""The parts of ``lightning-cv package``: measure a trained classifier for its card, describe its recipe, and put
the finished folder in place without ever leaving a half-written one.

The command (:mod:`lightning_cv.cli.package`) wires these together with the folder format
(:mod:`lightning_cv.models.model_folder`), the card (:mod:`lightning_cv.deploy.model_card`) and the upload
(:mod:`lightning_cv.deploy.hub`).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from lightning_cv.deploy.model_card import Evaluation

__all__ = ["check_output_folder", "evaluate", "initial_weights", "install_folder", "run_settings", "training_recipe"]

CONFUSION_IMAGE = "confusion_matrix.png"


def check_output_folder(output: str | os.PathLike[str], overwrite: bool) -> Path:
    """``output`` as a path, refused when it is a file, or a folder that is not empty (without ``overwrite``)."""
    target = Path(output)
    if target.is_file():
        raise ValueError(f"`--output` '{target}' is a file; pass a folder for the model (it is created).")
    if target.is_dir() and any(target.iterdir()) and not overwrite:
        raise ValueError(
            f"`--output` '{target}' exists and is not empty. Pass `--overwrite` to replace it (it is replaced only "
            "once the new folder is complete), or choose another folder."
        )
    return target


def scratch_folder(output: Path) -> Path:
    """An empty folder beside ``output`` to build the new one in (same file system: the final move is a rename)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-", dir=output.parent))


def _readable(folder: Path) -> None:
    """Give the folder and its files the permissions the umask allows (mkdtemp and safetensors make them private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(folder, 0o777 & ~umask)
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o666 & ~umask)


def install_folder(scratch: Path, output: Path) -> None:
    """Move the complete ``scratch`` folder to ``output``, replacing what was there only after it is in place."""
    _readable(scratch)
    old = None
    if output.exists():
        old = output.with_name(f".{output.name}.old-{os.getpid()}")
        os.replace(output, old)
    os.replace(scratch, output)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def evaluate(model: Any, datamodule: Any, folder: Path) -> Evaluation | str:
    """Test ``model`` on the data module's test split with a quiet CPU/GPU Trainer; its metrics, per-class rows,
    risk-coverage rows, and the confusion matrix drawn to ``folder/confusion_matrix.png`` (multi-class). Returns
    why not when there is no test split."""
    from lightning.pytorch import Trainer
    from PIL import Image

    from lightning_cv.data.batch import MULTILABEL, task_of
    from lightning_cv.models.metrics import confusion_matrix_image

    if "test" not in datamodule.datasets:
        return (
            "the checkpoint's data has no test split here. Pass `--data.test_file`, a test/ folder in "
            "`--data.data_dir`, or `--data.test_split` to evaluate."
        )
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(
            accelerator="auto", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
            enable_model_summary=False, default_root_dir=scratch,
        )  # fmt: skip
        trainer.test(model, datamodule=datamodule, verbose=False)
    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("test_") and v.ndim == 0}
    image = ""
    if task_of(model) != MULTILABEL and model.confusion_matrix is not None:
        picture = confusion_matrix_image(model.confusion_matrix, model.hparams.get("class_names"))
        Image.fromarray(np.asarray(picture)).save(folder / CONFUSION_IMAGE)
        image = CONFUSION_IMAGE
    return Evaluation(
        split="test",
        images=len(datamodule.datasets["test"]),
        metrics=metrics,
        per_class=list(model.per_class or []),
        risk_coverage=list(model.risk_coverage or []),
        confusion_image=image,
    )


def run_settings(ckpt_path: str) -> dict[str, Any]:
    """The run's ``config.yaml`` (``<run>/config.yaml`` beside ``<run>/checkpoints/``) read as plain data, or ``{}``."""
    import yaml

    config = Path(ckpt_path).resolve().parent.parent / "config.yaml"
    if not config.is_file() or config.stat().st_size > 4 * 2**20:
        return {}
    try:
        loaded = yaml.safe_load(config.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def initial_weights(pretrained: Any, backbone: str) -> str:
    """The card's words for the weights training started from (a local path by its file name only)."""
    if pretrained is True:
        return f"timm's pretrained `{backbone}`"
    if not pretrained:
        return "random (trained from scratch)"
    text = str(pretrained)
    return text if text.startswith("hf-hub:") else Path(text.rstrip("/")).name


def _name(value: Any) -> Any:
    """A setting as the card shows it: a class path spec by its class name, plain values as they are."""
    if isinstance(value, dict) and "class_path" in value:
        return str(value["class_path"]).rsplit(".", 1)[-1]
    return value


def training_recipe(
    hparams: dict[str, Any], data_hp: dict[str, Any], meta: dict[str, Any], run: dict[str, Any]
) -> dict[str, Any]:
    """The recipe the card lists, from the model's and the data module's saved settings, the checkpoint's
    position and the run's config (precision, epochs, callbacks); a setting the run did not record shows ``-``."""
    found = run.get("trainer")
    trainer: dict[str, Any] = found if isinstance(found, dict) else {}
    callbacks = trainer.get("callbacks") or []
    callback_names = sorted({_name(c) for c in callbacks if isinstance(c, dict)}) if isinstance(callbacks, list) else []
    if hparams.get("freeze_backbone"):
        freezing = f"feature extraction (freeze_backbone={hparams['freeze_backbone']})"
    elif hparams.get("freeze_layers"):
        freezing = f"first {hparams['freeze_layers']} layer group(s) frozen"
    else:
        freezing = "full fine-tuning"
    if hparams.get("unfreeze_milestones"):
        freezing += f", gradual unfreezing at epochs {hparams['unfreeze_milestones']}"
    mixing = [f"{k}={data_hp[k]}" for k in ("mixup_alpha", "cutmix_alpha") if data_hp.get(k)]
    return {
        "backbone": hparams.get("backbone"),
        "initial weights": initial_weights(hparams.get("pretrained"), str(hparams.get("backbone"))),
        "freezing": freezing,
        "optimizer": _name(hparams.get("optimizer")),
        "learning rate": hparams.get("lr"),
        "weight decay": hparams.get("weight_decay"),
        "schedule": hparams.get("scheduler"),
        "warmup epochs": hparams.get("warmup_epochs"),
        "loss": hparams.get("loss"),
        "label smoothing": hparams.get("label_smoothing"),
        "image size": data_hp.get("image_size"),
        "batch size": data_hp.get("batch_size"),
        "augmentation": data_hp.get("auto_augment"),
        "random erasing": data_hp.get("random_erasing"),
        "mixing": ", ".join(mixing) if mixing else "none",
        "balanced sampler": data_hp.get("balanced_sampler"),
        "epochs trained": int(meta.get("epoch", -1)) + 1 if "epoch" in meta else None,
        "optimizer steps": meta.get("global_step"),
        "max epochs": trainer.get("max_epochs"),
        "precision": trainer.get("precision") or ("32-true" if run else None),
        "gradient accumulation": trainer.get("accumulate_grad_batches"),
        "gradient clipping": trainer.get("gradient_clip_val"),
        "callbacks": ", ".join(str(n) for n in callback_names) or ("none" if run else None),
        "seed": data_hp.get("seed"),
    }
