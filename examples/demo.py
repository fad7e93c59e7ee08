"""The `make demo` job: fit, test and predict with the command line on the embedded shapes dataset, offline.

Runs the same three commands a user would type (in-process, through ``LightningCVCLI``):

    lightning-cv fit --config configs/quickstart.yaml --trainer.callbacks+=lightning_cv.callbacks.ONNXExport
    lightning-cv test --config configs/quickstart.yaml --ckpt_path best
    lightning-cv predict --ckpt_path best --data.predict_dir runs/demo_photos --prediction.output_dir runs/demo

and prints where everything is.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

from lightning_cv.cli import LightningCVCLI
from lightning_cv.data import ShapesDataset

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs" / "quickstart.yaml")


def write_photos(folder: Path, count: int = 8) -> Path:
    """A few unseen shapes as PNG files, and one broken file to show how it is reported."""
    folder.mkdir(parents=True, exist_ok=True)
    shapes = ShapesDataset(count, image_size=96, seed=123, split="predict")
    for i in range(count):
        image, label, _ = shapes.render(i)
        image.save(folder / f"{i:02d}_{shapes.classes[label]}.png")
    (folder / "broken.jpg").write_bytes(b"not an image")
    return folder


def main() -> None:
    start = time.perf_counter()
    quiet = ["--trainer.enable_model_summary=false"]
    fit = LightningCVCLI(
        args=["fit", "--config", CONFIG, "--trainer.callbacks+=lightning_cv.callbacks.ONNXExport", *quiet]
    )
    export = next(c for c in fit.trainer.callbacks if type(c).__name__ == "ONNXExport")
    best = fit.trainer.checkpoint_callback.best_model_path
    test = LightningCVCLI(args=["test", "--config", CONFIG, f"--ckpt_path={best}", *quiet])
    accuracy = test.trainer.callback_metrics["test_acc"].item()
    photos = write_photos(Path("runs") / "demo_photos")
    out = Path("runs") / "demo"
    LightningCVCLI(
        args=[
            "predict",
            f"--ckpt_path={best}",
            f"--data.predict_dir={photos}",
            f"--prediction.output_dir={out}",
            "--trainer.enable_progress_bar=false",
            *quiet,
        ]
    )
    with (out / "predictions.csv").open(newline="") as stream:
        rows = list(csv.DictReader(stream))  # the writer quotes text cells: read it as CSV, not by splitting lines
    named = [(r["predicted_class"], Path(r["path"]).stem.split("_", 1)) for r in rows if r["predicted_class"]]
    right = sum(1 for predicted, parts in named if parts[-1] == predicted)
    minutes = (time.perf_counter() - start) / 60
    print("\n" + "=" * 72)
    print(f"lightning_cv demo finished in {minutes:.1f} min")
    print(f"  test accuracy          {accuracy:.2%} on {len(test.datamodule.datasets['test'])} unseen images")
    print(f"  best checkpoint        {best}")
    print(f"  run directory          {fit.trainer.log_dir} (config.yaml, TensorBoard events, checkpoints/)")
    print(
        f"  predictions            {out / 'predictions.csv'} ({right} of {len(rows) - 1} photos right, "
        "1 unreadable file reported)"
    )
    if export.report is not None:
        diff = max(export.report.max_abs_diff.values())
        print(f"  ONNX model             {export.report.path} (checked with onnxruntime: max abs diff {diff:.1e})")
    else:
        print(f"  ONNX model             export failed: {export.error}")
    print("  TensorBoard            tensorboard --logdir runs")
    print("=" * 72)


if __name__ == "__main__":
    main()
