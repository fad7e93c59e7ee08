"""Reading a checkpoint as data: the one place a ``.ckpt`` file from anywhere is opened.

A checkpoint from someone else is hostile until proven otherwise. Two things in it could run code: pickled objects
(refused by ``torch.load(weights_only=True)``), and *class specs* in the saved hyperparameters, dicts such as
``{"class_path": "sympy.Lambda", "init_args": {...}}`` that LightningCLI and jsonargparse would build while restoring
the model (``sympy.Lambda`` evaluates a string; jsonargparse's import denylist does not know it, nor the thousands of
other callables on a machine). A denylist cannot be complete, so the cause is removed instead: lightning_cv never
hands checkpoint hyperparameters to jsonargparse. They are read here as plain values, a class spec anywhere in them
is refused, and the model is built by calling its constructor with those values.

Used by the command line (every subcommand), ``lightning-cv export|benchmark|explain`` and
:meth:`ImageClassifier.load_from_checkpoint <lightning_cv.models.classifier.ImageClassifier.load_from_checkpoint>`.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from lightning_cv.plain_data import class_specs

__all__ = ["RUNS_DIR", "find_checkpoint", "plain_hparams", "read_checkpoint", "refuse_stray_paths"]

#: where the command line writes runs (one folder per run below it), and where ``best`` / ``last`` are looked for
RUNS_DIR = "runs"
#: keys LightningCLI adds to saved hyperparameters to rebuild a model through jsonargparse; never honoured here
_CLI_KEYS = ("_instantiator", "_class_path")


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a lightning_cv checkpoint as data: tensors and plain values only, no class specs in its settings.

    Raises:
        FileNotFoundError: there is no such file.
        ValueError: the file is not a readable checkpoint, holds pickled objects, is not an ImageClassifier
            checkpoint, its hyperparameters name classes to build, or its callback states name files outside
            their folder.
    """
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(
            f"Checkpoint '{path}' does not exist. Pass the .ckpt file written by `lightning-cv fit` (look under "
            "'runs/'), or `--ckpt_path best` / `last` for the newest run's."
        )
    try:
        # memory-mapped where the format allows: checking a large checkpoint reads its settings, not its tensors
        ckpt = torch.load(file, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(file))
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(
            f"'{path}' is not a readable checkpoint ({type(err).__name__}: {reason}). Checkpoints are read with "
            "`torch.load(weights_only=True)`: tensors and plain values only, never pickled objects."
        ) from err
    hparams = ckpt.get("hyper_parameters") if isinstance(ckpt, dict) else None
    if not isinstance(hparams, dict) or "backbone" not in hparams or "state_dict" not in ckpt:
        raise ValueError(
            f"'{path}' is not a lightning_cv checkpoint (it has no ImageClassifier hyperparameters). Pass a checkpoint "
            "written by `lightning-cv fit` or by a Trainer fitting an ImageClassifier."
        )
    # "hparams" and "module_arguments": where Lightning 0.7 kept them; its loader still reads them
    for section in ("hyper_parameters", "datamodule_hyper_parameters", "hparams", "module_arguments"):
        found = class_specs(ckpt.get(section) or {})
        if found:
            raise ValueError(
                f"Refusing checkpoint '{path}': its {section} name classes to build ({', '.join(found)}). A "
                "lightning_cv checkpoint holds plain values only; building classes named in a file can run any "
                "code. If you wrote this checkpoint yourself with your own classes, load it in Python with "
                "`ImageClassifier.load_from_checkpoint(path, trust_checkpoint=True)`."
            )
    refuse_stray_paths(ckpt, path)
    return ckpt


#: paths a ModelCheckpoint keeps in its state; Lightning deletes the files they name when it rotates checkpoints
_PATH_KEYS = ("best_model_path", "last_model_path", "kth_best_model_path")


def refuse_stray_paths(checkpoint: Mapping[str, Any], source: str | os.PathLike[str] = "the checkpoint") -> None:
    """Refuse a checkpoint whose callback states name files outside their own checkpoint folder.

    A resumed ``ModelCheckpoint`` takes over these paths and later deletes the files they name (an older ``last``,
    a best model pushed out of the top k). A path such as ``<dirpath>/../../../home/you/notes.txt`` passes Lightning's
    own "is it in my folder" test, which does not normalise ``..``; a file from elsewhere could thus delete any file
    you can delete. Called by :func:`read_checkpoint` and when a classifier's checkpoint is restored.
    """
    stray = []
    for name, state in (checkpoint.get("callbacks") or {}).items():
        if not isinstance(state, Mapping) or "dirpath" not in state:
            continue
        folder = os.path.normpath(os.path.abspath(str(state.get("dirpath") or "")))
        paths = [state.get(key) for key in _PATH_KEYS] + list((state.get("best_k_models") or {}).keys())
        for value in paths:
            if not value:
                continue
            resolved = os.path.normpath(os.path.abspath(str(value)))
            if not state.get("dirpath") or os.path.dirname(resolved) != folder:
                stray.append(f"{name}: {value!r}")
    if stray:
        raise ValueError(
            f"Refusing {source}: its checkpoint-callback state names files outside its checkpoint folder "
            f"({'; '.join(stray[:5])}). Resuming would let Lightning delete them. Resume from a checkpoint written by "
            "your own run, or start a new run from its weights with `--model.pretrained <checkpoint>`."
        )


def plain_hparams(hparams: Mapping[str, Any] | None, allowed: set[str] | None = None) -> dict[str, Any]:
    """Saved hyperparameters without LightningCLI's rebuild keys, optionally only the ``allowed`` names."""
    return {
        key: value
        for key, value in (hparams or {}).items()
        if key not in _CLI_KEYS and (allowed is None or key in allowed)
    }


def find_checkpoint(kind: str, root: str | os.PathLike[str]) -> str:
    """The newest ``best-*.ckpt`` (``kind="best"``), or the newest state of training (``"last"``) below ``root``.

    The newest state is whichever was written last of ``last.ckpt`` (epoch ends), ``step-*.ckpt`` (periodic
    checkpoints) and ``interrupted.ckpt`` (preemption or a crash).
    """
    patterns = ["best-*.ckpt"] if kind == "best" else ["last*.ckpt", "step-*.ckpt", "interrupted*.ckpt"]
    found = [p for pattern in patterns for p in Path(root).rglob(pattern)] if Path(root).is_dir() else []
    # a node that died mid-write can leave an empty or cut file: take the newest complete one
    found = [p for p in found if zipfile.is_zipfile(p)]
    found.sort(key=lambda p: p.stat().st_mtime)
    if not found:
        raise FileNotFoundError(
            f"No {kind} checkpoint found under '{root}'. Train first (`lightning-cv fit ...`) or pass the checkpoint "
            "file itself to `--ckpt_path`."
        )
    return str(found[-1])
