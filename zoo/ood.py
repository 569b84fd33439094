"""How unlike a model's training photos a photo is: a distance in the model's own feature space.

The photo's features are the model's last convolutional features (``config.target_layer``, the layer the
class activation maps use), averaged over space. Their distance to the training photos is a Mahalanobis
distance with a diagonal covariance (each feature standardised by the training photos' mean and standard
deviation (shrunk towards the mean variance), then the root mean square; Lee et al. 2018 use the full covariance — with 1,280 features and a few
hundred photos a diagonal one is what can be estimated, and it fits in the model file). The threshold is a
high quantile of the distances of held-out *validation* photos of the training sources, so about
``1 - quantile`` of photos like the training ones are flagged; ``python -m train ship`` fits it and records, per
test source, the share of photos flagged (the model card shows it).

The reference lives in the model as the ``feature_reference`` submodule (its buffers are saved with the
weights); ``config.ood`` says which layer and threshold.

A second, model-independent distance joins it (``with_content``): the fundus check's content features against real
fundus photos (``zoo.fundus_check_reference``), which a model's field-of-view crop and Graham preprocessing cannot
make ordinary. A photo is unlike the training photos when either distance exceeds its threshold; ``flagged_by`` says
which ("model", "content").
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

REFERENCE = "feature_reference"  # the submodule's name: its buffers are "feature_reference.mean" / ".scale"
DEFAULT_QUANTILE = 0.99
SHRINKAGE = 0.1  # of each feature's variance towards the mean variance
CAUTION = "unlike the training photos — treat with caution"


class FeatureReference(nn.Module):
    """Mean and standard deviation of the training photos' pooled features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(channels))
        self.register_buffer("scale", torch.ones(channels))

    def distance(self, features: torch.Tensor) -> torch.Tensor:
        """(B,) root-mean-square standardised distance of (B, C) pooled features to the training photos."""
        z = (features.float() - self.mean.float()) / self.scale.float()
        return z.pow(2).mean(1).sqrt()


def attach(model: nn.Module, channels: int) -> FeatureReference:
    """Give ``model`` an (empty) feature reference; ``zoo.load`` does it before the weights fill it."""
    reference = FeatureReference(channels)
    model.add_module(REFERENCE, reference)
    return reference


def reference_of(model: nn.Module) -> FeatureReference | None:
    ref = getattr(model, REFERENCE, None)
    return ref if isinstance(ref, FeatureReference) and model.config.ood else None


@contextmanager
def pooled_features(model: nn.Module, layer: str | None = None) -> Iterator[list[torch.Tensor]]:
    """Collect the spatially averaged output of ``layer`` (default ``config.target_layer``) of every forward."""
    found: list[torch.Tensor] = []
    module = model.get_submodule(layer or model.config.ood.get("layer") or model.config.target_layer)

    def hook(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        out = output[0] if isinstance(output, (tuple, list)) else output
        found.append(out.detach().float().mean(dim=(2, 3)) if out.ndim == 4 else out.detach().float().flatten(1))

    handle = module.register_forward_hook(hook)
    try:
        yield found
    finally:
        handle.remove()


def fit_reference(model: nn.Module, train_features: np.ndarray, val_features: np.ndarray, *,
                  quantile: float = DEFAULT_QUANTILE, layer: str | None = None, note: str = "") -> dict[str, Any]:
    """Fit the reference on training photos' features and the threshold on validation photos' distances.

    Args:
        train_features, val_features: (N, C) pooled features (``pooled_features``) of training / validation photos.
        quantile: the validation distance quantile used as the threshold.

    Returns:
        The new ``config.ood`` (also set on the model).

    Raises:
        ValueError: too few photos, mismatched feature sizes, or a quantile outside (0, 1).
    """
    train_features, val_features = np.asarray(train_features, np.float64), np.asarray(val_features, np.float64)
    if len(train_features) < 2 or len(val_features) < 1:
        raise ValueError(f"need >= 2 training and >= 1 validation photos, got {len(train_features)} / {len(val_features)}")
    if train_features.shape[1] != val_features.shape[1]:
        raise ValueError(f"feature sizes differ: {train_features.shape[1]} vs {val_features.shape[1]}")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    reference = attach(model, train_features.shape[1])
    reference.mean.copy_(torch.from_numpy(train_features.mean(0)))
    # Each variance shrunk a tenth of the way towards the mean variance (as Ledoit-Wolf shrink a covariance):
    # a feature nearly constant over a few hundred training photos must not dominate every distance.
    var = train_features.var(0)
    reference.scale.copy_(torch.from_numpy(np.sqrt(SHRINKAGE * max(float(var.mean()), 1e-12) + (1 - SHRINKAGE) * var)))
    val_distance = reference.distance(torch.from_numpy(val_features)).numpy()
    model.config.ood = {
        "layer": layer or model.config.target_layer, "features": int(train_features.shape[1]), "method": "diagonal Mahalanobis (RMS z-score) of pooled features",
        "threshold": float(np.quantile(val_distance, quantile)), "quantile": quantile,
        "fitted_on": note or f"{len(train_features)} training / {len(val_features)} validation photos",
    }
    return model.config.ood


def warning(assessment: dict[str, Any] | None) -> str:
    """The user-facing warning for one photo's assessment ('' when it is like the training photos, or none)."""
    if not assessment or not assessment["unlike_training"]:
        return ""
    flagged_by = assessment.get("flagged_by", ["model"])
    reasons = [f"feature distance {assessment['distance']:.2f} > {assessment['threshold']:.2f}"] if "model" in flagged_by else []
    if "content" in flagged_by:
        reasons.append(f"content distance {assessment['content_distance']:.2f} > {assessment['content_threshold']:.2f}: "
                       "it looks unlike real fundus photos")
    return f"This photo is {CAUTION} ({'; '.join(reasons)})."


def with_content(assessment: dict[str, Any], content: dict[str, Any] | None) -> dict[str, Any]:
    """One photo's assessment joined with its content verdict (``zoo.fundus_check_reference``: content_distance,
    content_threshold, content_unlike): unlike the training photos when either distance exceeds its threshold.
    ``content`` None (the content reference does not speak for this model) leaves the assessment as it is."""
    if content is None:
        return assessment
    own = assessment.get("flagged_by", ["model"] if assessment["unlike_training"] else [])
    flagged_by = [*own, *(["content"] if content["content_unlike"] else [])]
    return {**assessment, "content_distance": content["content_distance"],
            "content_threshold": content["content_threshold"], "unlike_training": bool(flagged_by),
            "flagged_by": flagged_by}


def with_content_verdicts(config: Any, assessments: list[dict[str, Any]], photos: list[np.ndarray],
                          checks: list[Any] | None = None) -> list[dict[str, Any]]:
    """The photos' verdicts by the one rule ``zoo.predict``, the apps and ``python -m explain`` share: each model
    assessment (``assess``) joined with the photo's content verdict (``with_content``) where the content reference
    speaks for a model with ``config`` (``zoo.fundus_check.content_verdicts``; ``checks``: the photos' fundus checks
    where made, whose content distance is reused), else as it is."""
    from zoo.fundus_check import content_verdicts  # the content model only where it is needed

    content = content_verdicts(config, photos, checks) or [None] * len(assessments)
    return [with_content(a, c) for a, c in zip(assessments, content)]


def assess(model: nn.Module, features: torch.Tensor) -> list[dict[str, Any]] | None:
    """Per photo: ``{"distance", "threshold", "unlike_training", "flagged_by"}`` (``flagged_by``: ``["model"]`` or
    ``[]``; ``with_content`` adds the content distance); None when the model has no reference."""
    reference = reference_of(model)
    if reference is None:
        return None
    threshold = float(model.config.ood["threshold"])
    return [{"distance": float(d), "threshold": threshold, "unlike_training": bool(d > threshold),
             "flagged_by": ["model"] if d > threshold else []}
            for d in reference.distance(features.to(reference.mean.device))]
