#!/usr/bin/env bash
# The exact commands that trained the three shipped default models in assets/ (see docs/MODELS.md);
# each model's config.json ("reproduce") and card hold its own lines. CPU only (2 cores); times measured
# with one torch thread per run (OMP_NUM_THREADS=1), two runs side by side.
# Data: ../shared/data (srahim-dr600, idrid-seg-dev, diaretdb1-boxes, hrf).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # `python` below is the project's environment (./dev.sh makes it)

# --- dr-grading: paper 004's recipe (ELLG) with an EfficientNet-Lite0 regressor (~75 min), then shipped:
#     fp16, evaluated end to end on the held-out patients, model card.
python -m train ellg --data ../shared/data/srahim-dr600 --format srahim-dr600 --arch efficientnet_lite0 --input-size 320 --epochs 8 --lr 3e-4 --batch-size 16 --rounds 1 --round-epochs 3 --round-lr 1e-4 --workers 1 --name dr-grading --out runs/defaults/ellg-lite0-320
python scripts/train_default_models.py ship dr-grading --run runs/defaults/ellg-lite0-320 --out assets/dr-grading --t 0

# --- dr-lesions: paper 001's recipe with an EfficientNet-Lite0 FCN (~40 min), then shipped the same way.
python -m train dr-lesions --data ../shared/data/idrid-seg-dev --format idrid-seg --data ../shared/data/diaretdb1-boxes --format yolo --data ../shared/data/srahim-dr600 --format srahim-dr600 --arch efficientnet_lite0 --input-size 320 --fcn-widths 128 64 --missing-box unknown --optimizer adam --lr 3e-4 --frozen-lr 1e-3 --frozen-epochs 1 --epochs 9 --batch-size 16 --workers 1 --name dr-lesions --out runs/defaults/dr-lesions-adam
python scripts/train_default_models.py ship dr-lesions --run runs/defaults/dr-lesions-adam --out assets/dr-lesions

# --- multi-disease: partial fine-tuning on cached frozen features (scripts/train_default_models.py)
# 1. Preprocess every photo (FOV crop, CLAHE, 320 px) and cache the frozen ImageNet features
#    (EfficientNet-Lite0 stem + blocks 0-4; as is and mirrored).
[ -f runs/defaults/features.pt ] || python scripts/train_default_models.py features --out runs/defaults/features.pt
# 2. Train the top of the model on the cached features, save fp16, evaluate end to end on the held-out photos.
python scripts/train_default_models.py train multi-disease --epochs 10 --lr 0.001 --first-trained-block 6 --out assets/multi-disease
