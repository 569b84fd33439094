#!/usr/bin/env bash
# The exact commands that trained the four shipped default models in assets/ (see docs/MODELS.md);
# each model's config.json ("reproduce") and card hold its own lines. CPU only (2 cores); times measured
# with one torch thread per run (OMP_NUM_THREADS=1), two runs side by side.
# Data: ../shared/data (srahim-dr600, eyepacs-1k, idrid-seg-dev, diaretdb1-boxes, hrf).
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"  # `python` below is the project's environment (./dev.sh makes it)

# --- The two DR graders: srahim-dr600 + eyepacs-1k, each data set split by patient into train / validation / test
#     (fundus.datasets.train_val_test_split). EfficientNet-Lite0 at 320 px, Graham preprocessing + CameraShift
#     (chosen by scripts/compare_preprocessing.py, docs/MODELS.md), stem + blocks[:4] frozen at ImageNet and cached
#     for 3 views a photo (train.frozen). Then paper 003's recipe without eyepacs-1k (paper 004's is the comparison's
#     variant5 run): how far they transfer to a camera they never saw; and `python -m train ship`: fp16, each data
#     set's test patients end to end, card.
python -m train ellg --data ../shared/data/srahim-dr600 --format srahim-dr600 --data ../shared/data/eyepacs-1k --format eyepacs --arch efficientnet_lite0 --input-size 320 --preprocessing graham --camera-augment --frozen-blocks 4 --cached-views 3 --channels-last --epochs 8 --patience 3 --lr 3e-4 --batch-size 32 --workers 2 --flips --rounds 1 --round-epochs 3 --round-lr 1e-4 --t 0 --name dr-grading --out runs/defaults/dr-grading --quiet
python -m train aptos --data ../shared/data/srahim-dr600 --format srahim-dr600 --data ../shared/data/eyepacs-1k --format eyepacs --arch efficientnet_lite0 --input-size 320 --preprocessing graham --camera-augment --frozen-blocks 4 --cached-views 3 --channels-last --epochs 6 --patience 3 --lr 3e-4 --batch-size 32 --workers 2 --name dr-grade-classifier --out runs/defaults/dr-grade-classifier --quiet
python -m train aptos --data ../shared/data/srahim-dr600 --format srahim-dr600 --arch efficientnet_lite0 --input-size 320 --preprocessing graham --camera-augment --frozen-blocks 4 --cached-views 3 --channels-last --epochs 6 --patience 3 --lr 3e-4 --batch-size 32 --workers 2 --name dr-grade-classifier --out runs/defaults/dr-grade-classifier-without-eyepacs --quiet
python scripts/compare_preprocessing.py --out runs/preprocessing  # also the leave-eyepacs-out run of paper 004's recipe
python -m train ship runs/defaults/dr-grading --out assets/dr-grading --theta 48 --leave-out runs/preprocessing/variant5 ../shared/data/eyepacs-1k eyepacs --selection "Preprocessing and augmentation (Graham + CameraShift) chosen on validation patients by scripts/compare_preprocessing.py; the best epoch by validation loss; one candidate, its test patients measured once." --limit "Trained on two sources: one clinic's camera (srahim-dr600) and EyePACS photos from many cameras; photos from other cameras and populations may be graded worse (see the trained-without-eyepacs-1k numbers)." --limit "Severe and proliferative DR are rare in the training data (eyepacs-1k 27 / 20 photos, srahim-dr600 34 / 16): those grades are the least reliable; see the confusion matrices." --limit "Not for clinical use: a research and teaching model." --limit "The value is cut at 0.5 / 1.5 / 2.5 / 3.5: a value near a cut-off is borderline. The trained-without-eyepacs-1k figure is paper 004's recipe at 256 px without the ELLG round (the comparison run)."
python -m train ship runs/defaults/dr-grade-classifier --out assets/dr-grade-classifier --theta 48 --leave-out runs/defaults/dr-grade-classifier-without-eyepacs ../shared/data/eyepacs-1k eyepacs --selection "The same data, splits, preprocessing and frozen blocks as dr-grading (paper 003's head and loss instead of paper 004's regression); the best epoch by validation loss; its test patients measured once." --limit "Trained on two sources: one clinic's camera (srahim-dr600) and EyePACS photos from many cameras; photos from other cameras and populations may be graded worse (see the trained-without-eyepacs-1k numbers)." --limit "Severe and proliferative DR are rare in the training data (eyepacs-1k 27 / 20 photos, srahim-dr600 34 / 16): those grades are the least reliable; see the confusion matrices." --limit "Not for clinical use: a research and teaching model."

# --- dr-lesions and multi-disease: trained before the multi-source split (validation = held-out), shipped by the
#     older script; the issue "A trained model for every paper" retrains dr-lesions and replaces multi-disease.
# --- dr-lesions: paper 001's recipe with an EfficientNet-Lite0 FCN (~40 min), then shipped the same way.
python -m train dr-lesions --data ../shared/data/idrid-seg-dev --format idrid-seg --data ../shared/data/diaretdb1-boxes --format yolo --data ../shared/data/srahim-dr600 --format srahim-dr600 --arch efficientnet_lite0 --input-size 320 --fcn-widths 128 64 --missing-box unknown --optimizer adam --lr 3e-4 --frozen-lr 1e-3 --frozen-epochs 1 --epochs 9 --batch-size 16 --workers 1 --name dr-lesions --out runs/defaults/dr-lesions-adam
python scripts/train_default_models.py ship dr-lesions --run runs/defaults/dr-lesions-adam --out assets/dr-lesions

# --- multi-disease: partial fine-tuning on cached frozen features (scripts/train_default_models.py)
# 1. Preprocess every photo (FOV crop, CLAHE, 320 px) and cache the frozen ImageNet features
#    (EfficientNet-Lite0 stem + blocks 0-4; as is and mirrored).
[ -f runs/defaults/features.pt ] || python scripts/train_default_models.py features --out runs/defaults/features.pt
# 2. Train the top of the model on the cached features, save fp16, evaluate end to end on the held-out photos.
python scripts/train_default_models.py train multi-disease --epochs 10 --lr 0.001 --first-trained-block 6 --out assets/multi-disease
