"""`lightning-cv fit` from the shell against a plain PyTorch loop, process start to exit, side by side in one run.

Both train the same recipe on the same generated image folder (``train/``, ``val/``, ``test/`` class folders):
resnet18 from random weights, AdamW (lr 1e-3, weight decay 0.05), one-cycle schedule, label smoothing 0.1, batch 64,
no augmentation beyond the random resized crop, validation after every epoch. ``lightning-cv fit`` runs as a user
gets it, every default feature on (file checks and the leakage check, TensorBoard logging, best and last
checkpoints, the prediction gallery, the confusion matrix, the progress bar, the LR monitor). The plain loop is the
40-line script a PyTorch user writes: ``torchvision.datasets.ImageFolder``, a DataLoader, timm's model, nothing else.

Two folders of drawn digits (10 classes): 3,500 + 500 + 500 greyscale 28 px PNGs (MNIST-sized; trained at 32 px,
5 epochs), and 2,000 + 300 + 300 colour 224 px JPEGs (photo-sized files; trained at 64 px, 5 epochs). Reported per
folder: wall time of each (median of ``--repeats`` alternating runs), their ratio, the time from process start to
the first training step, and the final validation accuracy of each. ``--ablate`` also runs ``lightning-cv fit``
with one default feature off at a time and reports what each costs.

    python benchmarks/end_to_end.py                      # both folders, one run each (~5 minutes on 2 cores)
    python benchmarks/end_to_end.py --only small --repeats 3 --ablate
    python benchmarks/end_to_end.py plain --data DIR --size 32 --epochs 5    # the plain loop alone
    python benchmarks/end_to_end.py startup --data DIR   # seconds to the first training step, index cold and warm

``startup`` runs ``lightning-cv fit --trainer.max_steps 1`` on any class-folder tree (``train/`` + ``val/``) twice: the
first run reads every file once for the checks (the file index is cold), the second reads only the index.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent

#: (name, generator settings, image size the model trains at, epochs)
FOLDERS = {
    "small": {"kind": "digits", "counts": (3500, 500, 500), "pixels": 28, "train_size": 32, "epochs": 5},
    "large": {"kind": "photos", "counts": (2000, 300, 300), "pixels": 224, "train_size": 64, "epochs": 5},
}

#: one default feature off at a time (``--ablate``)
ABLATIONS = {
    "file checks + leakage check": ["--data.image_check", "none", "--data.leakage_check", "off"],
    "checkpoints (best + last)": ["--checkpoint.save_top_k", "0", "--checkpoint.save_last", "false"],
    "prediction gallery": ["--gallery_images", "0"],
    "confusion matrix": ["--model.log_confusion_matrix", "false"],
    "TensorBoard logger + LR monitor": ["--trainer.logger", "false"],
    "progress bar": ["--trainer.enable_progress_bar", "false"],
}


# ---------------------------------------------------------------------------------------------------- the data
def make_digits(root: Path, counts: tuple[int, int, int], pixels: int, photo: bool = False) -> None:
    """Digits 0-9 drawn at random sizes, positions and angles on a noisy background (MNIST-like).

    ``photo``: colour digits on a colour background saved as JPEG (quality 90), else greyscale PNG.
    """
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont

    rng = np.random.default_rng(0)
    k = pixels / 28  # sizes and offsets are those of a 28 px image, scaled
    fonts = {size: ImageFont.load_default(size=round(size * k)) for size in range(14, 25)}
    for split, count in zip(("train", "val", "test"), counts, strict=True):
        for i in range(count):
            digit = i % 10
            folder = root / split / str(digit)
            folder.mkdir(parents=True, exist_ok=True)
            canvas = Image.new("L", (pixels * 2, pixels * 2), 0)
            draw = ImageDraw.Draw(canvas)
            draw.text(
                (pixels + k * rng.integers(-4, 5), pixels + k * rng.integers(-4, 5)),
                str(digit),
                fill=int(rng.integers(160, 256)),
                font=fonts[int(rng.integers(14, 25))],
                anchor="mm",
            )
            canvas = canvas.rotate(float(rng.uniform(-20, 20)), resample=Image.Resampling.BILINEAR)
            canvas = canvas.crop((pixels // 2, pixels // 2, pixels // 2 + pixels, pixels // 2 + pixels))
            ink = np.asarray(canvas, dtype=np.float32) / 255
            if photo:
                paper, colour = rng.uniform(0, 120, 3), rng.uniform(140, 255, 3)
                noisy = paper + ink[..., None] * (colour - paper) + rng.normal(0, 12, (pixels, pixels, 3))
                Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(
                    folder / f"{split}_{i:05d}.jpg", quality=90
                )
            else:
                noisy = ink * 255 + rng.normal(0, 12, (pixels, pixels))
                Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8)).save(folder / f"{split}_{i:05d}.png")


def make_folder(root: Path, name: str) -> Path:
    spec = FOLDERS[name]
    folder = root / name
    marker = folder / ".complete"
    if not marker.is_file():
        shutil.rmtree(folder, ignore_errors=True)
        make_digits(folder, spec["counts"], spec["pixels"], photo=spec["kind"] == "photos")  # type: ignore[arg-type]
        marker.write_text("ok")
    return folder


# ---------------------------------------------------------------------------------------------------- plain loop
def plain(args: argparse.Namespace) -> None:
    """The plain PyTorch script: what a user writes without a library (run in its own process)."""
    import timm
    import torch
    import torch.nn.functional as F
    from torch.utils.data import DataLoader
    from torchvision import datasets
    from torchvision import transforms as T

    torch.manual_seed(0)
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # timm's resnet18 config: ImageNet statistics,
    bicubic, crop_pct = T.InterpolationMode.BICUBIC, 0.95  # bicubic resizing, 95% center crop
    train_tf = T.Compose(
        [T.RandomResizedCrop(args.size, interpolation=bicubic), T.ToTensor(), T.Normalize(mean, std)]
    )
    eval_tf = T.Compose(
        [
            T.Resize(math.floor(args.size / crop_pct), interpolation=bicubic),
            T.CenterCrop(args.size),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )
    train = datasets.ImageFolder(os.path.join(args.data, "train"), train_tf)
    val = datasets.ImageFolder(os.path.join(args.data, "val"), eval_tf)
    train_loader = DataLoader(train, batch_size=64, shuffle=True)
    val_loader = DataLoader(val, batch_size=128)
    model = timm.create_model("resnet18", num_classes=len(train.classes))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, 1e-3, total_steps=args.epochs * len(train_loader))
    first_step, accuracy, epoch_ends = None, 0.0, []
    for _ in range(args.epochs):
        model.train()
        for images, labels in train_loader:
            first_step = first_step or time.time()
            loss = F.cross_entropy(model(images), labels, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        correct = 0
        with torch.no_grad():
            for images, labels in val_loader:
                correct += int((model(images).argmax(1) == labels).sum())
        accuracy = correct / len(val)
        epoch_ends.append(time.time())
        print(f"val_acc {accuracy:.4f}", flush=True)
    print(json.dumps({"first_step": first_step, "epoch_ends": epoch_ends, "val_acc": accuracy}))


# ---------------------------------------------------------------------------------------------------- runs
def lightning_cv_command(data: Path, out: Path, size: int, epochs: int, extra: list[str]) -> list[str]:
    exe = shutil.which("lightning-cv", path=str(Path(sys.executable).parent)) or shutil.which("lightning-cv")
    command = [exe] if exe else [sys.executable, "-m", "lightning_cv"]
    return [
        *command,
        "fit",
        "--data.data_dir", str(data),
        "--model.backbone", "resnet18",
        "--model.pretrained", "false",
        "--model.scheduler", "onecycle",
        "--model.label_smoothing", "0.1",
        "--data.image_size", str(size),
        "--data.batch_size", "64",
        "--data.auto_augment", "none",
        "--data.hflip", "0",
        "--trainer.max_epochs", str(epochs),
        "--trainer.default_root_dir", str(out),
        "--trainer.callbacks+=e2e_marks.FirstStepMark",
        *extra,
    ]  # fmt: skip


def final_val_acc(out: Path) -> float | None:
    """The last ``val_acc`` in the run's TensorBoard events (None without a logger)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: list[tuple[int, float]] = []
    for events in out.rglob("events.out.tfevents.*"):
        accumulator = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        accumulator.Reload()
        if "val_acc" in accumulator.Tags()["scalars"]:
            values += [(e.step, e.value) for e in accumulator.Scalars("val_acc")]
    return max(values)[1] if values else None


def timed(command: list[str], env: dict[str, str], cwd: Path) -> tuple[dict[str, Any], str]:
    """Seconds of one process: ``wall`` (start to exit), ``first`` (start to the first training step), ``epoch`` (mean
    epoch from the first step to the last epoch's end, validation included) and ``exit`` (last epoch's end to exit)."""
    mark = cwd / "first_step.txt"
    mark.unlink(missing_ok=True)
    env = {**env, "E2E_FIRST_STEP_FILE": str(mark)}
    start = time.time()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} ... failed ({done.returncode}):\n{done.stderr[-3000:]}")
    if mark.is_file():  # lightning-cv: e2e_marks.FirstStepMark wrote "<event> <time>" lines
        marks = dict(line.split() for line in mark.read_text().splitlines())
        first = float(marks["first_step"])
        ends = [float(v) for k, v in marks.items() if k.startswith("epoch_end_")]
    else:  # the plain loop prints them
        result = json.loads(done.stdout.strip().splitlines()[-1])
        first, ends = result["first_step"], result["epoch_ends"]
    last = max(ends, default=first)
    epoch = (last - first) / len(ends) if ends else float("nan")
    times = {"wall": wall, "first": first - start, "epoch": epoch, "exit": start + wall - last}
    return times, done.stdout


def run_plain(data: Path, size: int, epochs: int, env: dict[str, str], cwd: Path) -> dict[str, Any]:
    command = [sys.executable, str(Path(__file__).resolve()), "plain", "--data", str(data)]
    result, out = timed([*command, "--size", str(size), "--epochs", str(epochs)], env, cwd)
    result["acc"] = json.loads(out.strip().splitlines()[-1])["val_acc"]
    return result


def run_lcv(data: Path, size: int, epochs: int, env: dict[str, str], cwd: Path, extra: list[str]) -> dict[str, Any]:
    out = cwd / "lcv_run"
    shutil.rmtree(out, ignore_errors=True)
    result, _ = timed(lightning_cv_command(data, out, size, epochs, extra), env, cwd)
    result["acc"] = final_val_acc(out)
    return result


def startup(args: argparse.Namespace, env: dict[str, str]) -> None:
    """Seconds from process start to the first training step on ``args.data``, file index cold then warm."""
    data = Path(args.data).resolve()
    count = sum(1 for p in data.rglob("*") if p.is_file())
    print(f"{data}: {count} files")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**env, "LIGHTNING_CV_CACHE": str(work / "index")}  # an index of its own: the first run is cold
        for label in ("index cold (first run)", "index warm"):
            out = work / "run"
            shutil.rmtree(out, ignore_errors=True)
            command = lightning_cv_command(data, out, args.size, 1, ["--trainer.max_steps", "1"])
            times, _ = timed(command, env, work)
            print(f"  {label:<24} first training step after {times['first']:5.1f} s")


def compare(name: str, root: Path, args: argparse.Namespace, env: dict[str, str]) -> None:
    spec = FOLDERS[name]
    data = make_folder(root, name)
    size, epochs = int(spec["train_size"]), int(spec["epochs"])  # type: ignore[call-overload]
    work = root / "work"
    work.mkdir(exist_ok=True)
    # the file index is warm in both measured runs, as for a user's second run (the first run's full read of every
    # file is measured by benchmarks/large_dataset.py)
    run_lcv(data, size, 1, env, work, ["--trainer.limit_train_batches", "1", "--trainer.limit_val_batches", "1"])
    plain_runs, lcv_runs = [], []
    for i in range(args.repeats):
        order = ("plain", "lcv") if i % 2 == 0 else ("lcv", "plain")
        for which in order:
            if which == "plain":
                plain_runs.append(run_plain(data, size, epochs, env, work))
            else:
                lcv_runs.append(run_lcv(data, size, epochs, env, work, []))
    counts = spec["counts"]
    print(
        f"\n{name}: {counts[0]}/{counts[1]}/{counts[2]} images of {spec['pixels']} px, trained at {size} px, "  # type: ignore[index]
        f"{epochs} epochs, {args.repeats} run(s) each, medians"
    )
    print(f"  {'':<20}{'wall s':>8}{'to 1st step s':>15}{'per epoch s':>13}{'end to exit s':>15}{'val acc':>9}")
    medians = {}
    for label, runs in (("plain PyTorch loop", plain_runs), ("lightning-cv fit", lcv_runs)):
        med = {key: statistics.median(r[key] for r in runs) for key in ("wall", "first", "epoch", "exit")}
        medians[label] = med
        accs = [r["acc"] for r in runs if r["acc"] is not None]
        acc = f"{statistics.mean(accs):.4f}" if accs else "n/a"
        print(
            f"  {label:<20}{med['wall']:>8.1f}{med['first']:>15.1f}{med['epoch']:>13.2f}{med['exit']:>15.1f}{acc:>9}"
        )
    plain_m, lcv_m = medians["plain PyTorch loop"], medians["lightning-cv fit"]
    print(
        f"  ratio lightning-cv / plain: {lcv_m['wall'] / plain_m['wall']:.2f}x end to end, "
        f"{lcv_m['epoch'] / plain_m['epoch']:.2f}x per epoch"
    )
    if args.ablate:
        print(f"  one default feature off at a time (lightning-cv fit, median of {args.repeats}; full - without):")
        for label, extra in ABLATIONS.items():
            runs = [run_lcv(data, size, epochs, env, work, extra) for _ in range(args.repeats)]
            wall, epoch = (statistics.median(r[key] for r in runs) for key in ("wall", "epoch"))
            print(
                f"    {label:<34}{wall:>7.1f} s  cost {lcv_m['wall'] - wall:+5.1f} s "
                f"({(lcv_m['wall'] - wall) / lcv_m['wall']:+.1%}), per epoch {lcv_m['epoch'] - epoch:+.2f} s"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("mode", nargs="?", default="compare", choices=["compare", "plain", "startup"])
    parser.add_argument("--only", choices=sorted(FOLDERS), default=None, help="one folder instead of both")
    parser.add_argument("--repeats", type=int, default=1, help="alternating runs of each, median reported")
    parser.add_argument("--ablate", action="store_true", help="also time lightning-cv with each feature off")
    parser.add_argument("--root", default=None, help="where the folders are generated (default: a temporary one)")
    parser.add_argument("--data", help="plain and startup modes: the image folder")
    parser.add_argument("--size", type=int, default=32, help="plain mode: training image size")
    parser.add_argument("--epochs", type=int, default=5, help="plain mode: epochs")
    args = parser.parse_args()
    if args.mode == "plain":
        plain(args)
        return
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    env["LIGHTNING_CV_ALLOW_IMPORTS"] = ",".join(filter(None, ["e2e_marks", env.get("LIGHTNING_CV_ALLOW_IMPORTS")]))
    if args.mode == "startup":
        startup(args, env)
        return
    names = [args.only] if args.only else list(FOLDERS)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.root) if args.root else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for name in names:
            compare(name, root, args, env)


if __name__ == "__main__":
    main()
