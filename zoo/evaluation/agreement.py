"""Does a grader grade a photo the same whatever shape and size it arrives in?

Redistributed data sets squash photos to a square and shrink them to 224–256 px (APTOS 2019, EyePACS copies:
``../shared/data/README.md``), while a clinic's camera gives a 3:2 photo at full size. ``grade_agreement`` runs a
model end to end (``fundus.preprocess`` as the app does, then ``FundusNet.decide``, the model's own rule) on each
photo and on its copies (``VARIANTS``) and says how often the copy gets the photo's grade, how far the graded
value moves (the regression value, or the expected grade of a classifier), and each version's quadratic kappa
where the true grades are given. ``scripts/grade_agreement.py`` runs it on the test photos of real data sets.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from fundus import load_image, preprocess
from fundus.tasks import expected_grade, task_of


def squashed(rgb: np.ndarray) -> np.ndarray:
    """The photo squashed to a square whose side is its shorter side (the longer side shrunk, area resampling)."""
    side = min(rgb.shape[:2])
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


def downscaled(rgb: np.ndarray, side: int = 224) -> np.ndarray:
    """The photo shrunk so that its shorter side is ``side`` px, aspect ratio kept (unchanged when smaller)."""
    h, w = rgb.shape[:2]
    scale = side / min(h, w)
    if scale >= 1:
        return rgb
    return cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def squashed_small(rgb: np.ndarray, side: int = 224) -> np.ndarray:
    """Squashed to a ``side`` × ``side`` square, as the redistributed APTOS 2019 and EyePACS copies are."""
    return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)


# The copies measured against the photo as it is.
VARIANTS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "squashed to a square": squashed,
    "224 px": downscaled,
    "squashed, 224 px": squashed_small,
}


@torch.no_grad()
def graded(model: Any, photos: Sequence[np.ndarray], batch_size: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """``(grades, values)`` of each photo by the model's own rule (``FundusNet.decide``) after its preprocessing;
    value: the regression output, or a classifier's expected grade."""
    model.eval()
    task = task_of(model.config.task)
    grades, values = [], []
    for start in range(0, len(photos), batch_size):
        x = torch.cat([preprocess(p, model.config).tensor for p in photos[start:start + batch_size]])
        out = model(x)
        grades.append(model.decide(out).reshape(-1).cpu().numpy())
        score = out.reshape(-1) if task.regression else expected_grade(model.probabilities(out))
        values.append(score.float().cpu().numpy())
    if not grades:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(grades).astype(np.int64), np.concatenate(values)


def grade_agreement(model: Any, photos: Sequence[Any], truth: Sequence[int] | None = None,
                    variants: dict[str, Callable[[np.ndarray], np.ndarray]] | None = None,
                    batch_size: int = 8) -> dict[str, Any]:
    """How often each copy of a photo gets the photo's grade.

    Args:
        model: a zoo grader (multiclass over grades, or a grade regression).
        photos: paths or anything ``fundus.load_image`` reads.
        truth: the true grades (optional): each version's quadratic kappa.
        variants: name → copy of an ``(H, W, 3)`` uint8 photo (default ``VARIANTS``).

    Returns:
        ``{"n_photos", "original": {"kappa"}, variant: {"agreement", "mean_abs_value_change", "changed_up",
        "changed_down", "kappa"}}``; ``agreement`` is the share of photos graded the same, ``changed_up`` /
        ``changed_down`` the shares graded higher / lower.
    """
    from sklearn.metrics import cohen_kappa_score

    variants = VARIANTS if variants is None else variants
    images = [load_image(p) for p in photos]
    grades, values = graded(model, images, batch_size)
    y = None if truth is None else np.asarray(truth).reshape(-1).astype(np.int64)

    def kappa(g: np.ndarray) -> float | None:
        if y is None or len(np.unique(np.concatenate([g, y]))) < 2:
            return None
        return float(cohen_kappa_score(y, g, weights="quadratic"))

    result: dict[str, Any] = {"n_photos": len(images), "original": {"kappa": kappa(grades)}}
    for name, copy in variants.items():
        g, v = graded(model, [copy(im) for im in images], batch_size)
        result[name] = {"agreement": float((g == grades).mean()) if len(g) else None,
                        "mean_abs_value_change": float(np.abs(v - values).mean()) if len(v) else None,
                        "changed_up": float((g > grades).mean()) if len(g) else None,
                        "changed_down": float((g < grades).mean()) if len(g) else None,
                        "kappa": kappa(g)}
    return result
