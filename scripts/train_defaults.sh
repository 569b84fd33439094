#!/usr/bin/env bash
# The exact commands that trained the three shipped default models in assets/ (see docs/MODELS.md);
# each model's config.json ("reproduce") and card hold its own lines. CPU only (2 cores).
# Data: ../shared/data (srahim-dr600, idrid-seg-dev, diaretdb1-boxes, hrf).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # `python` below is the project's environment (./dev.sh makes it)

# --- multi-disease: partial fine-tuning on cached frozen features (scripts/train_default_models.py)
# 1. Preprocess every photo (FOV crop, CLAHE, 320 px) and cache the frozen ImageNet features
#    (EfficientNet-Lite0 stem + blocks 0-4; as is and mirrored).
[ -f runs/defaults/features.pt ] || python scripts/train_default_models.py features --out runs/defaults/features.pt
# 2. Train the top of the model on the cached features, save fp16, evaluate end to end on the held-out photos.
python scripts/train_default_models.py train multi-disease --epochs 10 --lr 0.001 --first-trained-block 6 --out assets/multi-disease
