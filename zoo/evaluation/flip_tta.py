"""Does mirroring help a grader? Test-time augmentation by horizontal flip, measured on validation photos.

Issue 19 allows flip test-time augmentation only where validation shows it helps: ``flip_tta_kappa`` grades each
photo as it is and averaged with its mirror image (the raw outputs averaged, then the model's own rule,
``FundusNet.decide``) and gives both quadratic kappas. A left and a right eye are mirror images of each other, so a
grader trained with flips should be nearly symmetric; averaging removes what is left of the asymmetry and noise.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from fundus import load_image, preprocess


def flip_averaged(model: Any, x: torch.Tensor) -> torch.Tensor:
    """The model's raw outputs on a preprocessed batch averaged with those on its mirror image (width flipped)."""
    return (model(x) + model(torch.flip(x, dims=[3]))) / 2


@torch.no_grad()
def flip_tta_kappa(model: Any, photos: Sequence[Any], truth: Sequence[int], batch_size: int = 8) -> dict[str, Any]:
    """``{"n_photos", "kappa", "kappa_flip_tta", "agreement"}``: quadratic kappa of the grades as they are and with
    flip averaging, and the share of photos whose grade the averaging leaves unchanged."""
    from sklearn.metrics import cohen_kappa_score

    model.eval()
    plain, averaged = [], []
    for start in range(0, len(photos), batch_size):
        x = torch.cat([preprocess(load_image(p), model.config).tensor for p in photos[start:start + batch_size]])
        out = model(x)
        plain.append(model.decide(out).reshape(-1).cpu().numpy())
        averaged.append(model.decide(flip_averaged(model, x)).reshape(-1).cpu().numpy())
    y = np.asarray(truth, np.int64)
    plain_grades, tta_grades = np.concatenate(plain).astype(np.int64), np.concatenate(averaged).astype(np.int64)
    return {"n_photos": len(y),
            "kappa": float(cohen_kappa_score(y, plain_grades, weights="quadratic")),
            "kappa_flip_tta": float(cohen_kappa_score(y, tta_grades, weights="quadratic")),
            "agreement": float((plain_grades == tta_grades).mean())}
