"""Training: one loop (CPU, CUDA, torchrun DDP), the papers' losses and augmentations, and recipes.

``python -m train RECIPE --data DIR --format FMT …``; see ``train.recipes`` for the recipe API.
"""
