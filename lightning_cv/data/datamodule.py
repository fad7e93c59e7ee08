"""ImageDataModule: from files (or a named dataset) to augmented, mixed batches on the device.

Why this file is ~615 lines: it is the one class users configure, and it holds the Lightning hooks in the order they
run (prepare_data, setup, the loaders, on-device mixing, state for resume). Everything else it uses lives apart:
argument checks (``arguments.py``), which images there are (``discovery.py``), the data config (``config.py``),
transforms, mixing, file and label checks, label counts (``label_counts.py``) and the resumable loader
(``lightning_cv.resume``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence
from typing import Any, Literal

import torch
from lightning.pytorch import LightningDataModule
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from lightning_cv.data.arguments import validate_arguments
from lightning_cv.data.batch import MULTICLASS, MULTILABEL, task_of
from lightning_cv.data.checks import ClassBalance, LabelBalance, class_balance, find_leaks, label_balance
from lightning_cv.data.config import OVERRIDE_KEYS, DataConfig, find_data_config
from lightning_cv.data.datasets import (
    ImageFileDataset,
    SkippingDataLoader,
    TransformSubset,
    collate_readable,
    collate_skipping_bad,
    load_torchvision_dataset,
    resolve_torchvision_name,
)
from lightning_cv.data.discovery import IndexedRecord, data_source, discover
from lightning_cv.data.file_index import FileFacts, scan_files
from lightning_cv.data.image_io import DEFAULT_MAX_PIXELS, BadImageError
from lightning_cv.data.label_counts import as_label_sets, balanced_sample_weights, label_counts
from lightning_cv.data.links import FollowLinks, SkippedPath, skipped_report
from lightning_cv.data.mixing import BatchMixer
from lightning_cv.data.shapes import MultiLabelShapesDataset, ShapesDataset
from lightning_cv.data.sources import (
    find_predict_files,
)
from lightning_cv.data.transforms import build_eval_transform, build_train_transform
from lightning_cv.resume.loader import ResumableDataLoader, ResumableSampler, SeededDataset, item_seed

__all__ = ["ImageDataModule"]

SPLITS = ("train", "val", "test")
#: the data config arguments with their defaults, which apply only when neither the arguments nor the model (its timm
#: pretrained config) say otherwise (the values live in :class:`~lightning_cv.data.config.DataConfig`)
DEFAULT_DATA_CONFIG: dict[str, Any] = DataConfig().to_arguments()
SHAPES_DEFAULTS = {"num_train": 1800, "num_val": 300, "num_test": 300, "image_size": 64}


class ImageDataModule(LightningDataModule):
    """Datasets, augmentation, batch mixing and data checks for image classification.

    Sources, in order of precedence: ``dataset="shapes"`` (the embedded offline set, also the default when nothing
    else is given; ``"shapes_multilabel"`` for its multi-label twin), ``dataset="cifar10"`` or any
    ``torchvision.datasets`` name, ``train_file`` (CSV/text lists of ``path,label``, or of several labels per image),
    or ``data_dir`` (``train/``, ``val/``, ``test/`` folders of class folders, or one folder of class folders split by
    ``val_split``/``test_split``). Input size, mean, std, interpolation and crop default to the model's pretrained
    config when the data module is used with a Trainer and an :class:`~lightning_cv.ImageClassifier`.

    Multi-label data (:attr:`task` ``"multilabel"``) comes from lists with a ``labels`` (or ``tags``) column of
    labels separated by ``label_separator``, or multi-hot tables (one 0/1 column per class); see
    :func:`~lightning_cv.data.sources.read_list_file`. Its batches carry multi-hot float32 targets ``(N, C)``, and the
    model must be built for it (``task="multilabel"``). Random crops can cut a labelled object out of the image, so
    a milder ``scale`` such as ``(0.5, 1.0)`` suits multi-label data better than the default.

    Args:
        data_dir: image folder, or the root of a torchvision dataset.
        dataset: ``"shapes"``, ``"shapes_multilabel"``, a torchvision dataset name (``"cifar10"``, ``"mnist"``,
            ``"torchvision:SVHN"``...), or ``None`` for files.
        train_file: CSV or text list of training images; ``val_file`` and ``test_file`` likewise.
        shards: WebDataset tar shards of the training images written by ``lightning-cv shard``: a brace pattern
            (``"shards/train-{000000..000123}.tar"``) or a list; local paths, ``http(s)://`` URLs or fsspec URLs
            (``s3://``, ``gs://``, ...), read by offset with the ``index.json`` beside them
            (:mod:`lightning_cv.data.shard_reader`); ``val_shards`` and ``test_shards`` likewise (without them,
            ``val_split``/``test_split`` hold images out as for folders).
        hf_dataset: a Hugging Face dataset: a folder written by ``save_to_disk``, a folder of Parquet files, or a Hub
            name; ``hf_split`` (``"train"``), ``hf_val_split`` and ``hf_test_split`` name its splits (without the
            last two, ``val_split``/``test_split`` hold images out), ``hf_image_column`` and ``hf_label_column`` its
            columns (:mod:`lightning_cv.data.hf_source`).
        label_separator: what separates the labels in a ``labels`` cell of a multi-label list (``"cat;dog"``).
        predict_dir: a folder of unlabelled images, one image file, or a list file of image paths, for
            ``Trainer.predict``.
        download: let a torchvision dataset download itself into ``data_dir``.
        dataset_kwargs: passed to the torchvision class, or for the shapes sets: num_train, num_val, num_test,
            image_size.
        val_split: fraction of the training images held out (stratified, seeded) when no validation split exists;
            defaults to 0.1 then. Multi-label images are stratified by their rarest label
            (:func:`~lightning_cv.data.sources.multilabel_split`).
        test_split: fraction held out for testing when no test split exists.
        seed: seeds splits, the balanced sampler and batch mixing (offset by the process rank).
        batch_size: training batch size (``eval_batch_size`` defaults to twice it).
        num_workers: DataLoader workers; ``None`` picks from the CPU count and the accelerator.
        image_size, mean, std, interpolation, crop_pct: override the model's data config; ``image_size`` is one
            side or a ``(height, width)`` pair.
        scale: RandomResizedCrop area range.
        hflip: horizontal flip probability.
        auto_augment: ``"randaugment"``, ``"trivialaugment"``, ``"autoaugment"`` or ``"none"``.
        randaugment: RandAugment arguments, e.g. ``{"num_ops": 2, "magnitude": 9}``.
        random_erasing: RandomErasing probability.
        mixup_alpha, cutmix_alpha: enable MixUp / CutMix (both: one per batch, CutMix with ``switch_prob``).
        mix_prob: probability that a training batch is mixed.
        balanced_sampler: draw training images with probability inversely proportional to their class size. A
            multi-label image is weighted by its rarest label (the largest inverse label frequency among its
            labels), an image without labels by the inverse of the number of such images.
        image_check: ``"header"`` reads every file's header at setup, ``"decode"`` decodes every file (finds
            truncated files too), ``"none"`` trusts the files (fastest for very large sets).
        on_bad_file: ``"skip"`` drops unusable files and lists them in one warning, ``"error"`` refuses to start.
        leakage_check: ``"exact"`` hashes file contents to find images shared between splits, ``"perceptual"`` also
            finds near duplicates, ``"off"`` skips the check.
        on_leakage: ``"warn"`` or ``"error"`` when a shared image is found.
        max_image_pixels: larger images are refused as decompression bombs.
        follow_links: which symbolic links in image folders (and which relative paths in list files) are followed:
            ``"inside"`` those that stay inside the data folder, ``"all"`` any (datasets linked into a central store),
            ``"none"`` no links. Loops and repeats are skipped in every mode, so an image never gets two labels;
            what is skipped is listed in one warning (:mod:`lightning_cv.data.links` has the details).
    """

    def __init__(
        self,
        *,
        data_dir: str | None = None,
        dataset: str | None = None,
        train_file: str | None = None,
        val_file: str | None = None,
        test_file: str | None = None,
        shards: str | list[str] | None = None,
        val_shards: str | list[str] | None = None,
        test_shards: str | list[str] | None = None,
        hf_dataset: str | None = None,
        hf_split: str = "train",
        hf_val_split: str | None = None,
        hf_test_split: str | None = None,
        hf_image_column: str = "image",
        hf_label_column: str = "label",
        label_separator: str = ";",
        predict_dir: str | None = None,
        download: bool = False,
        dataset_kwargs: dict[str, Any] | None = None,
        val_split: float | None = None,
        test_split: float = 0.0,
        seed: int = 42,
        batch_size: int = 32,
        eval_batch_size: int | None = None,
        num_workers: int | None = None,
        pin_memory: bool | None = None,
        image_size: int | tuple[int, int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        interpolation: str | None = None,
        crop_pct: float | None = None,
        scale: tuple[float, float] = (0.08, 1.0),
        hflip: float = 0.5,
        auto_augment: Literal["randaugment", "trivialaugment", "autoaugment", "none"] = "randaugment",
        randaugment: dict[str, int] | None = None,
        random_erasing: float = 0.0,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mix_prob: float = 1.0,
        switch_prob: float = 0.5,
        balanced_sampler: bool = False,
        image_check: Literal["header", "decode", "none"] = "header",
        on_bad_file: Literal["skip", "error"] = "skip",
        leakage_check: Literal["exact", "perceptual", "off"] = "exact",
        on_leakage: Literal["warn", "error"] = "warn",
        max_image_pixels: int = DEFAULT_MAX_PIXELS,
        follow_links: FollowLinks = "inside",
    ) -> None:
        super().__init__()
        if isinstance(image_size, list):
            image_size = tuple(image_size)  # type: ignore[assignment]  # YAML and JSON give lists
        mean = tuple(mean) if mean is not None else None
        std = tuple(std) if std is not None else None
        scale = tuple(scale)  # type: ignore[assignment]
        self.save_hyperparameters()
        validate_arguments(self._hp)
        self._class_names: list[str] | None = None
        self._task = MULTICLASS
        self._evidence = ""  # what made the task what it is, for messages
        self._records: dict[str, list[IndexedRecord]] = {}
        self._tv: dict[str, Any] = {}
        self._shards: dict[str, Any] = {}
        self._tv_indices: dict[str, list[int]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.predict_files: list[str] = []
        self._checked = False
        #: what the setup checks found: ``image_check`` and ``bad_files`` (unusable files skipped),
        #: ``leakage_check`` and ``leaks`` (images in more than one split); a count is ``None`` when not checked
        self.check_results: dict[str, Any] = {}
        self._mixer: BatchMixer | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._train_loader_state: dict[str, int] | None = None
        self._facts: dict[str, FileFacts] | None = None  # what the file checks found, by path
        #: the size, statistics, interpolation and crop the images are made with; set by :meth:`setup`
        self.data_config: DataConfig | None = None

    @property
    def _hp(self) -> Any:
        return self.hparams  # attribute access to the saved arguments, typed loosely for mypy

    # ------------------------------------------------------------------ validation and discovery
    @property
    def class_names(self) -> list[str]:
        """The class names in label order (found on first use, from folder names, lists or the dataset)."""
        self._discover()
        assert self._class_names is not None
        return list(self._class_names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def task(self) -> str:
        """``"multiclass"`` (one class per image) or ``"multilabel"`` (a set of labels per image, possibly empty)."""
        self._discover()
        return self._task

    def _discover(self) -> None:
        if self._class_names is not None:
            return
        found = discover(self._hp)
        self._class_names, self._records = found.class_names, found.records
        self._task, self._evidence = found.task, found.evidence
        self._tv, self._tv_indices = found.torchvision, found.torchvision_indices
        self._shards = found.shards

    # ------------------------------------------------------------------ Lightning hooks
    def prepare_data(self) -> None:
        hp = self._hp
        if data_source(self._hp) == "torchvision" and hp.download:
            name = resolve_torchvision_name(hp.dataset)
            assert name is not None
            for split in ("train", "test"):
                load_torchvision_dataset(name, hp.data_dir, split, download=True, **(hp.dataset_kwargs or {}))
        if data_source(self._hp) in ("folders", "list") and self._checks_wanted():
            # once per node (Lightning calls this on local rank 0 alone): every file is read here and the answers
            # cached, so each process's setup then reads only file sizes and times
            self._discover()
            self._scan_files()

    def _checks_wanted(self) -> bool:
        return self._hp.image_check != "none" or self._hp.leakage_check != "off"

    def _scan_files(self) -> dict[str, FileFacts]:
        if self._facts is not None:  # scanned by prepare_data in this process
            return self._facts
        hp = self._hp
        sources = [hp.data_dir, hp.train_file, hp.val_file, hp.test_file]
        key = "|".join(os.path.abspath(s) if s else "" for s in sources)
        paths = [p for rows in self._records.values() for p, _ in rows]
        self._facts = scan_files(
            paths,
            key=key,
            decode=hp.image_check == "decode",
            max_pixels=hp.max_image_pixels,
            digest=hp.leakage_check != "off" and len(self._records) > 1,
            perceptual=hp.leakage_check == "perceptual",
        )
        return self._facts

    def _resolve_data_config(self) -> DataConfig:
        """The model's config (its timm pretrained one) or the defaults, with this module's arguments on top."""
        hp = self._hp
        model = self.trainer.lightning_module if self.trainer is not None else None
        config = (find_data_config(model) or DataConfig()).override(**{key: hp[key] for key in OVERRIDE_KEYS})
        # the images made here are RGB whatever the model's `in_chans`
        return dataclasses.replace(config.with_supported_interpolation(), in_chans=3)

    def _check_model(self) -> None:
        model = self.trainer.lightning_module if self.trainer is not None else None
        hparams = getattr(model, "hparams", None)
        if hparams is None or ("num_classes" not in hparams and "task" not in hparams):
            return  # a module that states neither is not a classifier we can check
        self._check_task(task_of(model))
        if "num_classes" not in hparams:
            return
        if hparams["num_classes"] != self.num_classes:
            raise ValueError(
                f"The model has {hparams['num_classes']} classes but the data has {self.num_classes} "
                f"({', '.join(self.class_names[:10])}{', ...' if self.num_classes > 10 else ''}). Create the model "
                "with `num_classes=datamodule.num_classes, class_names=datamodule.class_names`."
            )
        names = hparams.get("class_names")
        if names is None and "class_names" in hparams:
            hparams["class_names"] = self.class_names  # predictions and checkpoints then carry the names
        elif names is not None and list(names) != self.class_names:
            raise ValueError(
                f"The model's classes {list(names)[:8]} differ from the data's {self.class_names[:8]} (same count, "
                "another order or other names): label i would mean a different class. Create the model with "
                "`class_names=datamodule.class_names`, or fix the data's class folders/labels."
            )

    def _check_task(self, model_task: str) -> None:
        if model_task == self.task:
            return
        if self.task == MULTILABEL:
            raise ValueError(
                f"The data is multi-label ({self._evidence}) but the model is {model_task}: create it with "
                "`task='multilabel'` (command line: `--model.task multilabel`)."
            )
        raise ValueError(
            f"The data is multiclass ({self._evidence}) but the model is {model_task}: create it with "
            "`task='multiclass'` (command line: `--model.task multiclass`), or give the data several labels per "
            "image (a list with a `labels` column, or a multi-hot table)."
        )

    def setup(self, stage: str | None = None) -> None:
        self._discover()
        if stage != "predict":  # predicting needs no training classes: the model brings its own
            self._check_model()
        self.data_config = cfg = self._resolve_data_config()
        hp = self._hp
        size = cfg.transform_size
        model = self.trainer.lightning_module if self.trainer is not None else None
        if model is not None and isinstance(getattr(model, "example_input_array", None), Tensor):
            model.example_input_array = torch.zeros(1, *cfg.input_size)  # summaries and export see the real size
        train_tf = build_train_transform(
            size,
            mean=cfg.mean,
            std=cfg.std,
            interpolation=cfg.interpolation,
            scale=hp.scale,
            hflip=hp.hflip,
            auto_augment=hp.auto_augment,
            randaugment=hp.randaugment,
            random_erasing=hp.random_erasing,
        )
        eval_tf = build_eval_transform(
            size, mean=cfg.mean, std=cfg.std, interpolation=cfg.interpolation, crop_pct=cfg.crop_pct
        )
        longest = max(cfg.image_size)
        eval_min = math.floor(longest / cfg.crop_pct)
        train_min = math.ceil(longest / math.sqrt(hp.scale[0]))
        source = data_source(self._hp)
        if source in ("folders", "list") and not self._checked:
            self._run_checks()
        if source in ("shards", "huggingface") and not self._checked:
            self._check_shard_leaks()
        self.datasets = {}
        self._eval_setup = (eval_tf, eval_min)
        for split in SPLITS:
            dataset = self._make_dataset(split, train_tf if split == "train" else eval_tf, train_min, eval_min)
            if dataset is not None:
                self.datasets[split] = dataset
        if hp.predict_dir is not None:
            self.predict_files = self._predict_files()
            self.datasets["predict"] = ImageFileDataset(
                self.predict_files, None, eval_tf, min_size=eval_min, max_pixels=hp.max_image_pixels
            )
        rank = self.trainer.global_rank if self.trainer is not None else 0
        self._mixer = BatchMixer(
            self.num_classes,
            mixup_alpha=hp.mixup_alpha,
            cutmix_alpha=hp.cutmix_alpha,
            prob=hp.mix_prob,
            switch_prob=hp.switch_prob,
            seed=hp.seed + rank,  # ranks draw different mixes
        )
        if "train" in self.datasets and stage in (None, "fit"):
            per = "label" if self.task == MULTILABEL else "class"
            rank_zero_info(f"Training images per {per}:\n{self.class_balance()}")

    def _make_dataset(self, split: str, tf: Any, train_min: int, eval_min: int) -> Any:
        hp = self._hp
        source = data_source(self._hp)
        if source in ("shapes", "shapes_multilabel"):
            opts = {**SHAPES_DEFAULTS, **(hp.dataset_kwargs or {})}
            size, count = opts["image_size"], opts[f"num_{split}"]
            if source == "shapes_multilabel":
                return MultiLabelShapesDataset(count, image_size=size, seed=hp.seed, split=split, transform=tf)
            # an imbalanced training split (validation and test stay balanced, to measure every class alike)
            fractions = opts.get("train_class_fractions") if split == "train" else None
            return ShapesDataset(count, size, hp.seed, split, tf, class_fractions=fractions)
        if source in ("shards", "huggingface"):
            if split not in self._shards:
                return None
            from lightning_cv.data.hf_source import HFImageDataset
            from lightning_cv.data.shard_reader import ShardDataset

            kind = ShardDataset if source == "shards" else HFImageDataset
            min_size = train_min if split == "train" else eval_min
            return kind(self._shards[split], tf, min_size=min_size, max_pixels=hp.max_image_pixels)
        if source == "torchvision":
            return TransformSubset(self._tv[split], self._tv_indices[split], tf) if split in self._tv else None
        if split in self._records:
            rows = self._records[split]
            return ImageFileDataset(
                [p for p, _ in rows],
                [y for _, y in rows],  # all ints, or all tuples for a multi-label task
                tf,
                num_classes=self.num_classes if self.task == MULTILABEL else None,
                min_size=train_min if split == "train" else eval_min,
                max_pixels=hp.max_image_pixels,
            )
        return None

    def eval_dataloader(self, split: str, num_images: int | None = None, batch_size: int | None = None) -> DataLoader:
        """``split`` seen the way evaluation sees it (resize and center crop, no augmentation, no shuffling).

        For calibration of static INT8 quantization (``eval_dataloader("train", 256)``) and for measuring
        deployed models. ``num_images`` takes a seeded random subset, spread over the classes. Call
        :meth:`setup` first.
        """
        if not hasattr(self, "_eval_setup"):
            raise RuntimeError("Call `setup()` before `eval_dataloader()`.")
        eval_tf, eval_min = self._eval_setup
        dataset = self._make_dataset(split, eval_tf, eval_min, eval_min)
        if dataset is None:
            raise ValueError(
                f"There is no {split} data. Add a {split}/ folder or `{split}_file`, or hold some training images out "
                f"with `{split}_split`."
            )
        if num_images is not None and num_images < len(dataset):
            order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(self._hp.seed))
            dataset = Subset(dataset, order[:num_images].tolist())
        return DataLoader(
            dataset,
            batch_size=batch_size or self._hp.eval_batch_size or 2 * self._hp.batch_size,
            shuffle=False,
            num_workers=self._num_workers(),
            collate_fn=collate_skipping_bad,
        )

    def _predict_files(self) -> list[str]:
        skipped: list[SkippedPath] = []
        files = find_predict_files(self._hp.predict_dir, follow_links=self._hp.follow_links, skipped=skipped)
        if skipped:
            rank_zero_warn(skipped_report(skipped))
        return files

    def _run_checks(self) -> None:
        hp = self._hp
        facts = self._scan_files() if self._checks_wanted() else {}
        self.check_results = {"image_check": hp.image_check, "bad_files": None, "leakage_check": hp.leakage_check,
                              "leaks": None}  # fmt: skip
        if hp.image_check != "none":
            problems = {path: f.problem(hp.max_image_pixels) for path, f in facts.items()}
            bad = [BadImageError(path, reason) for path, reason in problems.items() if reason is not None]
            self.check_results["bad_files"] = len(bad)
            if bad:
                listing = "\n".join(f"  {err.path}: {err.reason}" for err in bad[:50])
                more = f"\n  ... and {len(bad) - 50} more" if len(bad) > 50 else ""
                if hp.on_bad_file == "error":
                    raise ValueError(
                        f"{len(bad)} file(s) cannot be used as images:\n{listing}{more}\nRemove or repair them, or "
                        "pass `on_bad_file='skip'` to train without them."
                    )
                rank_zero_warn(f"Skipping {len(bad)} file(s) that cannot be used as images:\n{listing}{more}")
                drop = {err.path for err in bad}
                self._records = {s: [r for r in rows if r[0] not in drop] for s, rows in self._records.items()}
                for split, rows in self._records.items():
                    if not rows:
                        raise ValueError(f"No usable image is left in the {split} split after skipping bad files.")
                self._check_training_classes_left()
        if hp.leakage_check != "off" and len(self._records) > 1:
            leaks = find_leaks(
                {s: [p for p, _ in rows] for s, rows in self._records.items()},
                perceptual=hp.leakage_check == "perceptual",
                digests={path: f.digest for path, f in facts.items() if f.digest is not None},
                perceptual_hashes={path: f.phash for path, f in facts.items() if f.phash is not None},
            )
            self.check_results["leaks"] = len(leaks)
            if leaks:
                listing = "\n".join(f"  {leak}" for leak in leaks[:50])
                message = (
                    f"{len(leaks)} image(s) appear in more than one split (train/val/test leakage inflates "
                    f"validation and test scores):\n{listing}"
                )
                if hp.on_leakage == "error":
                    raise ValueError(message + "\nRemove the duplicates, or pass `on_leakage='warn'`.")
                rank_zero_warn(message)
        self._checked = True
        self._facts = None  # the answers are applied; the index is on disk for the next run

    def _check_shard_leaks(self) -> None:
        """The leakage check of shards (the index's content hashes compared across splits, no image read) and of
        Hugging Face datasets (each image's bytes hashed, not decoded)."""
        from lightning_cv.data.hf_source import hf_leaks
        from lightning_cv.data.shard_reader import shard_leaks

        self._checked = True
        # bad samples in shards and datasets are found as they are read (skipped and counted), not at setup
        self.check_results = {"image_check": "none", "bad_files": None, "leakage_check": self._hp.leakage_check,
                              "leaks": None}  # fmt: skip
        if self._hp.leakage_check == "off" or len(self._shards) < 2:
            return
        leaks = shard_leaks(self._shards) if data_source(self._hp) == "shards" else hf_leaks(self._shards)
        self.check_results["leaks"] = len(leaks)
        if not leaks:
            return
        shown = "\n".join(f"  {a}:{x} == {b}:{y}" for a, x, b, y in leaks[:10])
        message = (
            f"{len(leaks)} image(s) appear in more than one split (train/val/test leakage inflates validation and "
            f"test scores):\n{shown}"
        )
        if self._hp.on_leakage == "error":
            raise ValueError(message + "\nRemove the duplicates, or pass `on_leakage='warn'`.")
        rank_zero_warn(message)

    def _check_training_classes_left(self) -> None:
        """After bad files are skipped, every class (label) must keep a training image: its index stays in use."""
        seen: set[int] = set()
        for _, label in self._records.get("train", []):
            seen.update(label if isinstance(label, tuple) else (label,))
        names = self.class_names
        lost = [name for i, name in enumerate(names) if i not in seen]
        if lost:
            raise ValueError(
                f"After skipping the bad files, class(es) {lost[:10]} have no training image left. Repair or replace "
                "those files (they are listed above), or remove the class from the data."
            )

    # ------------------------------------------------------------------ reports
    def _targets(self, split: str) -> list[int]:
        dataset = self.datasets.get(split)
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise ValueError(f"No labelled {split} split; call `setup()` first, or add {split} data.")
        return [int(t) for t in targets]

    def _label_sets(self, split: str) -> list[tuple[int, ...]]:
        """The label indices of each image of ``split``: one for a multi-class image, any number for multi-label."""
        dataset = self.datasets.get(split)
        targets = getattr(dataset, "targets", None)
        if targets is None:
            raise ValueError(f"No labelled {split} split; call `setup()` first, or add {split} data.")
        return as_label_sets(targets)

    def class_balance(self, split: str = "train") -> ClassBalance | LabelBalance:
        """Images per class of ``split`` and the imbalance ratio (largest / smallest class); for multi-label data a
        :class:`~lightning_cv.data.checks.LabelBalance`: images per label, images without one, and the ratio of
        the most to the least frequent label."""
        if self.task == MULTILABEL:
            return label_balance(self._label_sets(split), self.class_names)
        return class_balance(self._targets(split), self.class_names)

    def class_weights(self, split: str = "train") -> Tensor:
        """Inverse-frequency class weights (mean 1), e.g. for ``torch.nn.CrossEntropyLoss(weight=...)``.

        Multiclass data only: multi-label losses weigh each label's positives against its negatives instead
        (:meth:`label_counts` gives what ``BCEWithLogitsLoss(pos_weight=...)`` needs).
        """
        if self.task == MULTILABEL:
            raise ValueError(
                "`class_weights()` is for multiclass data (weights of CrossEntropyLoss), but this data is multi-label. "
                "Weigh each label's positives with `label_counts()`: `positives, images = dm.label_counts()`, then "
                "`BCEWithLogitsLoss(pos_weight=(images - positives) / positives.clamp_min(1))`."
            )
        counts = torch.tensor(list(self.class_balance(split).counts.values()), dtype=torch.float32).clamp_min(1)
        weights = counts.sum() / counts
        return weights / weights.mean()

    def label_counts(self, split: str = "train") -> tuple[Tensor, int]:
        """``(positives, images)``: float32 ``(C,)`` images carrying each label (multiclass: images of each class),
        and the number of images of ``split``.

        For ``BCEWithLogitsLoss(pos_weight=(images - positives) / positives.clamp_min(1))``, which weighs a rare
        label's few positives as much as its many negatives.
        """
        sets = self._label_sets(split)
        return label_counts(sets, self.num_classes), len(sets)

    # ------------------------------------------------------------------ loaders
    def _num_workers(self) -> int:
        if self._hp.num_workers is not None:
            return int(self._hp.num_workers)
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - macOS and Windows
            cpus = os.cpu_count() or 1
        processes = self.trainer.world_size if self.trainer is not None else 1
        per_process = max(1, cpus // max(1, processes))
        on_cpu = self.trainer is None or self.trainer.accelerator.__class__.__name__ == "CPUAccelerator"
        if on_cpu:
            # the model needs the cores too: workers only pay off when there are cores to spare
            return 0 if per_process <= 2 else min(4, per_process // 4)
        return min(8, max(1, per_process - 1))

    def _balanced_weights(self, split: str) -> Tensor:
        return balanced_sample_weights(self._label_sets(split), self.num_classes)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self.datasets:
            raise ValueError(
                f"There is no {split} data. Add a {split}/ folder or `{split}_file`, or hold some training images out "
                f"with `{split}_split`."
            )
        dataset = self.datasets[split]
        workers = self._num_workers()
        pin = self._hp.pin_memory
        if pin is None:
            pin = self.trainer is not None and self.trainer.accelerator.__class__.__name__ == "CUDAAccelerator"
        batch_size = self._hp.batch_size if train else (self._hp.eval_batch_size or 2 * self._hp.batch_size)
        common: dict[str, Any] = dict(
            batch_size=batch_size,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin,
            collate_fn=collate_skipping_bad,
            # worker seeds come from this generator, not from the global one that training draws from
            generator=torch.Generator().manual_seed(self._hp.seed),
        )
        if split == "predict":
            # every file gets a row there, readable or not (PredictionWriter writes the errors): a batch in which
            # no image could be read is left out instead of ending the run
            return SkippingDataLoader(dataset, shuffle=False, **{**common, "collate_fn": collate_readable})
        if not train:
            return DataLoader(dataset, shuffle=False, **common)
        trainer = self.trainer
        rank = trainer.global_rank if trainer is not None else 0
        common["generator"] = torch.Generator().manual_seed(item_seed(self._hp.seed, rank, -2))  # no two ranks alike
        sampler = ResumableSampler(
            len(dataset),  # type: ignore[arg-type]
            num_replicas=trainer.world_size if trainer is not None else 1,
            rank=rank,
            seed=self._hp.seed,
            weights=self._balanced_weights(split) if self._hp.balanced_sampler else None,
        )
        self._train_loader = ResumableDataLoader(SeededDataset(dataset, self._hp.seed), sampler=sampler, **common)
        if self._train_loader_state is not None:
            self._train_loader.load_state_dict(self._train_loader_state)
            self._train_loader_state = None
        return self._train_loader

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", train=True)

    def val_dataloader(self) -> DataLoader | list[Any]:
        return self._loader("val", train=False) if "val" in self.datasets else []

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", train=False)

    def predict_dataloader(self) -> DataLoader:
        if "predict" not in self.datasets:
            raise ValueError("No images to predict: pass `predict_dir` (a folder of images or a list file).")
        return self._loader("predict", train=False)

    # ------------------------------------------------------------------ mixing on the device
    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        trainer = self.trainer
        if trainer is not None and trainer.training and self._train_loader is not None:
            # the position in the epoch that checkpoints record, and where the Trainer ends the epoch
            self._train_loader.mark_batch(trainer.num_training_batches)
        if trainer is None or not trainer.training or self._mixer is None or not self._mixer.enabled:
            return batch
        if not isinstance(batch, (tuple, list)) or len(batch) < 2:  # e.g. the model summary's example input
            return batch
        images, labels = batch[0], batch[1]
        if not isinstance(labels, Tensor) or labels.ndim != (2 if self.task == MULTILABEL else 1):
            return batch  # already soft targets (multiclass), or nothing we know how to mix
        loader = self._train_loader
        if loader is not None:
            # each batch's mix is drawn from (seed, rank, epoch, batch): the same after a resume, and different
            # on every rank
            sampler = loader.resumable_sampler
            self._mixer.reseed([self._hp.seed, sampler.rank, sampler.epoch, loader.batches_taken])
        return self._mixer(images, labels)

    def state_dict(self) -> dict[str, Any]:
        # The position in the epoch (the mixes are a function of seed, rank, epoch and batch). Lightning also saves
        # the loader's own state, but cannot restore it when the loader was created before the checkpoint was loaded
        # (as `trainer.estimated_stepping_batches` in `configure_optimizers` does): this copy covers that case.
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # kept for the next training loader, which Lightning creates after this (also for a second `fit` with
        # this data module); a loader from an earlier run must not take it
        self._train_loader_state = state_dict.get("train_loader")

