#!/usr/bin/env bash
# A ResNet-18 trained on the embedded shapes dataset at 224 px, on the CPU, for the deployment benchmark
# (`lightning-cv benchmark`): first 64 px from scratch (cheap), then a short fine-tune at 224 px from those weights
# (FixRes-style resolution adaptation). About 10 minutes on 2 cores. Writes runs/resnet18_shapes/.
set -euo pipefail
cd "$(dirname "$0")/.."
CLI="${PYTHON:-.venv/bin/python} -m lightning_cv"
ROOT=runs/resnet18_shapes
COMMON=(--config configs/quickstart.yaml --model.backbone resnet18 --trainer.enable_model_summary=false --trainer.enable_progress_bar=false
        --gallery_images 0 --trainer.logger.init_args.save_dir "$ROOT")
$CLI fit "${COMMON[@]}" --trainer.logger.init_args.name px64 --trainer.max_epochs 12 \
    --data.image_size 64 --data.dataset_kwargs '{num_train: 4000, num_val: 300, num_test: 600, image_size: 64}'
BEST64=$(ls -t "$ROOT"/px64/version_*/checkpoints/best-*.ckpt | head -1)
$CLI fit "${COMMON[@]}" --trainer.logger.init_args.name px224 --trainer.max_epochs 2 --model.pretrained "$BEST64" \
    --model.lr 0.0005 --model.warmup_epochs 0.2 \
    --data.image_size 224 --data.dataset_kwargs '{num_train: 1500, num_val: 300, num_test: 600, image_size: 224}'
ls -t "$ROOT"/px224/version_*/checkpoints/best-*.ckpt | head -1
