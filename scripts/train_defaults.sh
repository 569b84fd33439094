#!/usr/bin/env bash
# The exact commands that trained the three shipped default models in assets/ (see docs/MODELS.md).
# CPU only (2 shared cores): ~15 min for the cached features, then a few minutes per model.
# Data: ../shared/data (srahim-dr600, idrid-seg-dev, diaretdb1-boxes, hrf); override with --data DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
run() { nice -n 5 "$py" scripts/train_default_models.py "$@"; }

# 1. Preprocess every photo (FOV crop, CLAHE, 320 px) and cache the frozen ImageNet features
#    (EfficientNet-Lite0 stem + blocks 0-5; as is and mirrored).
[ -f runs/defaults/features.pt ] || run features --out runs/defaults/features.pt

# 2. Train the top of each model on the cached features, save fp16, evaluate end to end on the held-out photos.
run train dr-grading --epochs 12 --lr 0.001 --first-trained-block 6 --out assets/dr-grading
run train dr-lesions --epochs 12 --lr 0.001 --first-trained-block 6 --out assets/dr-lesions
run train multi-disease --epochs 10 --lr 0.001 --first-trained-block 6 --out assets/multi-disease
