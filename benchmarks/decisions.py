"""Calibration, test-time augmentation and the reject threshold, measured on one trained model in one run.

A resnet10t is trained from scratch on a small shapes training set with plain cross entropy (no label smoothing, no
mixing, no weight decay, light augmentation) until it fits the training images: the over-confident model temperature
scaling is for (Guo et al. saw over-confidence grow with exactly this: NLL overfitting of unregularised training).
Then, on the balanced test split:

1. NLL, ECE and accuracy before and after the temperature fitted on the validation split (Guo et al., ICML 2017);
2. accuracy and ECE with test-time augmentation none / flip / flip_crops, and the cost as time per image, the
   three measured side by side in alternating rounds on the same images (the ratio is what carries over);
3. risk-coverage: accuracy on the images answered when only the most confident 100/95/90/80% are answered.

    python benchmarks/decisions.py                      # resnet10t, 48 px, 300 images a class, 30 epochs (~7 min)
    python benchmarks/decisions.py --epochs 4 --per_class 60
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
from lightning.pytorch import Trainer, seed_everything

from lightning_cv import ImageClassifier, ImageDataModule
from lightning_cv.deploy.calibrate import calibrate
from lightning_cv.models.scoring import TTA_MODES, calibrated_logits


def _trainer(run_dir: str, epochs: int = 1) -> Trainer:
    return Trainer(accelerator="cpu", max_epochs=epochs, logger=False, enable_checkpointing=False,
                   enable_progress_bar=False, enable_model_summary=False, default_root_dir=run_dir)  # fmt: skip


@torch.inference_mode()
def _seconds_per_image(model: ImageClassifier, batches: list[torch.Tensor], tta: str) -> float:
    start = time.perf_counter()
    for images in batches:
        calibrated_logits(model, images, temperature=model.temperature, tta=tta)
    return (time.perf_counter() - start) / sum(len(b) for b in batches)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet10t")
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--per_class", type=int, default=300)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3, help="alternating timing rounds per TTA mode")
    args = parser.parse_args()
    seed_everything(0)
    torch.set_float32_matmul_precision("high")
    data = ImageDataModule(
        dataset="shapes",
        dataset_kwargs={"num_train": 6 * args.per_class, "num_val": 600, "num_test": 1200, "image_size": args.size},
        image_size=args.size, batch_size=32, num_workers=0, auto_augment="none", scale=(0.9, 1.0),
    )  # fmt: skip
    model = ImageClassifier(backbone=args.backbone, pretrained=False, num_classes=6, lr=3e-3, warmup_epochs=0.5,
                            weight_decay=0.0, log_confusion_matrix=False)  # fmt: skip
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as run_dir:
        _trainer(run_dir, args.epochs).fit(model, data)
        trained = time.perf_counter() - started
        data.setup("test")
        report = calibrate(model, data.eval_dataloader("val"), data.eval_dataloader("test"))
        print(report.summary())
        tta_rows = []
        for mode in TTA_MODES:
            model.tta = mode
            figures = _trainer(run_dir).test(model, data, verbose=False)[0]
            tta_rows.append({"tta": mode, "accuracy": figures["test_acc"], "ece": figures["test_ece"]})
        model.tta = "none"
    batches = [images for images, _ in data.eval_dataloader("test", batch_size=64)]
    model.eval()
    seconds = {mode: float("inf") for mode in TTA_MODES}
    for _ in range(args.rounds):  # alternating, so a slow spell of the machine hits every mode alike
        for mode in TTA_MODES:
            seconds[mode] = min(seconds[mode], _seconds_per_image(model, batches, mode))
    threads = torch.get_num_threads()
    print(f"\n{args.backbone}, {args.size} px, {args.per_class} training images a class, {args.epochs} epochs "
          f"({trained / 60:.1f} min); fitted on 600 validation images, measured on 1200 test images")  # fmt: skip
    print("\n| | NLL | ECE (15 bins) | accuracy |\n|---|---|---|---|")
    for name, figures in (("uncalibrated", report.before), (f"temperature {report.temperature:.2f}", report.after)):
        print(f"| {name} | {figures['nll']:.3f} | {figures['ece']:.3f} | {figures['accuracy']:.2%} |")
    base = tta_rows[0]["accuracy"]
    print(f"\n| TTA (calibrated) | accuracy | change | ECE | time per image, batch 64, {threads} threads | cost |")
    print("|---|---|---|---|---|---|")
    for row in tta_rows:
        mode = row["tta"]
        print(f"| {mode} | {row['accuracy']:.2%} | {100 * (row['accuracy'] - base):+.2f} points | {row['ece']:.3f} | "
              f"{1e3 * seconds[mode]:.2f} ms | {seconds[mode] / seconds['none']:.2f}x |")  # fmt: skip
    print("\n| coverage | answered | min_confidence | accuracy on the answered |\n|---|---|---|---|")
    for row in report.risk_coverage:
        print(f"| {row['coverage']:.0%} | {row['answered']}/{row['of']} | {row['min_confidence']:.3f} | "
              f"{row['accuracy']:.2%} |")  # fmt: skip


if __name__ == "__main__":
    main()
