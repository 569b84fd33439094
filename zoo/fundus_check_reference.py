"""How unlike real fundus photos a picture looks to the fundus check's content stage: the second, model-independent
distance of the unlike-training indicator (``zoo.ood`` holds the first, in each model's own feature space).

Why a second one: after a model's field-of-view crop and Graham's local-average subtraction a colonoscopy frame or a
skin lesion looks ordinary in the model's features (two shipped models flagged 0 of 125 such lookalikes). The content
stage's features (``zoo.fundus_check.pooled_features``: ImageNet EfficientNet-Lite0, pooled over the whole,
unprocessed photo) keep what the picture shows, so a distance there tells them apart.

The distance is a Mahalanobis distance under a probabilistic-PCA covariance (Tipping & Bishop 1999): the K leading
principal axes of the fit photos' features with their own variances, and one variance shared by every other
direction. A lookalike differs from fundus photos mostly *outside* the axes along which fundus photos vary, so the
residual term is what finds it (the distance within 32 axes alone flagged 293 of 394 lookalikes; with the residual,
all 394). It is reported as a root mean square over the features (``sqrt(D² / C)``), as ``zoo.ood``'s is.

``scripts/fit_fundus_check.py`` fits it on the fit part's real fundus photos only (each also in a form real photos
arrive in: squashed, downscaled, cropped, exposed, compressed), never on lookalikes, so it generalises to kinds of
picture it has never seen; the threshold is a quantile (99 %) of the held-out real photos' distances, fixed before
any lookalike is measured. It is stored as plain JSON numbers beside the head (``zoo/fundus_check_reference.json``).

It speaks for a model trained on the photos it describes: ``applies_to(config)`` when the model's data sets name one
of its sources (every shipped model does); a model trained on other photos (the tests' generated ones) keeps its own
distance only.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

REFERENCE_FILE = Path(__file__).with_name("fundus_check_reference.json")
DEFAULT_AXES = 32  # principal axes kept: 16-128 flagged the same lookalikes; 32 keeps the file ~0.5 MB
DEFAULT_QUANTILE = 0.99
DIGITS = 7  # significant digits written: distances read back agree to ~1e-6


@dataclass(frozen=True)
class ContentReference:
    """The fit photos' content features as a probabilistic-PCA Gaussian, and the distance threshold."""

    mean: np.ndarray  # (C,)
    axes: np.ndarray  # (K, C) orthonormal principal axes
    axis_variance: np.ndarray  # (K,) the fit photos' variance along each axis
    rest_variance: float  # the mean variance along every other direction
    threshold: float
    quantile: float
    sources: tuple[str, ...]  # the data sets of the fit photos (``ModelConfig.datasets`` names)
    about: dict[str, Any] = field(default_factory=dict)  # how it was fitted and what it flags (plain JSON)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) root-mean-square Mahalanobis distance of (N, C) content features to the fit photos."""
        centred = np.atleast_2d(np.asarray(features, np.float64)) - self.mean
        along = centred @ self.axes.T
        residual = np.maximum((centred ** 2).sum(1) - (along ** 2).sum(1), 0.0)
        squared = (along ** 2 / self.axis_variance).sum(1) + residual / self.rest_variance
        return np.sqrt(squared / self.mean.size)

    def verdict(self, distance: float) -> dict[str, Any]:
        """One photo's content verdict: ``{"content_distance", "content_threshold", "content_unlike"}``."""
        return {"content_distance": float(distance), "content_threshold": self.threshold,
                "content_unlike": bool(distance > self.threshold)}

    def applies_to(self, config: Any) -> bool:
        """Whether this reference describes a model's training photos: its data sets name one of the sources."""
        return bool(set(getattr(config, "datasets", None) or ()) & set(self.sources))

    def to_json(self) -> dict[str, Any]:
        def numbers(values) -> list[float]:
            return [float(f"{v:.{DIGITS}g}") for v in np.ravel(values)]

        return {**self.about, "threshold": self.threshold, "quantile": self.quantile, "sources": list(self.sources),
                "features": int(self.mean.size), "axes_kept": int(len(self.axes)),
                "rest_variance": float(f"{self.rest_variance:.{DIGITS}g}"),
                "axis_variance": numbers(self.axis_variance), "mean": numbers(self.mean), "axes": numbers(self.axes)}


def fit_content_reference(fit_features: np.ndarray, held_out_features: np.ndarray, *, axes: int = DEFAULT_AXES,
                          quantile: float = DEFAULT_QUANTILE, sources: tuple[str, ...] = (),
                          about: dict[str, Any] | None = None) -> ContentReference:
    """Fit the reference on real fundus photos' features and its threshold on held-out real photos' distances.

    Args:
        fit_features: (N, C) content features of the fit photos (real fundus photos only).
        held_out_features: (M, C) content features of real fundus photos not fitted on.
        axes: principal axes kept (K < min(N, C)).
        quantile: the held-out distance quantile used as the threshold.
        sources: the data sets the photos come from.
        about: plain-JSON notes stored with it (how it was fitted).

    Raises:
        ValueError: too few photos, mismatched feature sizes, ``axes`` out of range or ``quantile`` outside (0, 1).
    """
    fit = np.asarray(fit_features, np.float64)
    held_out = np.asarray(held_out_features, np.float64)
    if fit.ndim != 2 or held_out.ndim != 2 or fit.shape[1] != held_out.shape[1]:
        raise ValueError(f"feature sizes differ: {fit.shape} vs {held_out.shape}")
    if not 0 < axes < min(fit.shape) - 1:
        raise ValueError(f"axes must lie in (0, {min(fit.shape) - 1}), got {axes} for {fit.shape[0]} photos")
    if len(held_out) < 1:
        raise ValueError("need at least one held-out photo")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must lie in (0, 1), got {quantile}")
    mean = fit.mean(0)
    _u, singular, vt = np.linalg.svd(fit - mean, full_matrices=False)
    variance = singular ** 2 / (len(fit) - 1)
    # Tipping & Bishop's maximum-likelihood noise variance: the mean of the discarded directions' variances.
    rest = float(variance[axes:].sum() / (fit.shape[1] - axes))
    # Rounded as its file stores it before the threshold is set: what is measured is what ships.
    unset = ContentReference(mean, vt[:axes], variance[:axes], max(rest, 1e-12), 0.0, quantile, tuple(sources),
                             dict(about or {}))
    reference = reference_from_json(json.loads(json.dumps(unset.to_json())))
    return replace(reference, threshold=float(np.quantile(reference.distance(held_out), quantile)))


def reference_from_json(data: dict[str, Any], origin: str = "content reference") -> ContentReference:
    """A reference from its JSON form, validated.

    Raises:
        ValueError: a field is missing, a shape is inconsistent, or a number is not finite (or a variance not > 0).
    """
    missing = [k for k in ("mean", "axes", "axis_variance", "rest_variance", "threshold", "quantile", "sources")
               if k not in data]
    if missing:
        raise ValueError(f"{origin}: lacks {', '.join(missing)}")
    mean = np.asarray(data["mean"], np.float64)
    variance = np.asarray(data["axis_variance"], np.float64)
    axes = np.asarray(data["axes"], np.float64)
    if axes.size != variance.size * mean.size:
        raise ValueError(f"{origin}: {axes.size} axis numbers for {variance.size} axes of {mean.size} features")
    numbers = np.concatenate([mean, variance, axes, [data["rest_variance"], data["threshold"], data["quantile"]]])
    if not np.isfinite(numbers).all() or (variance <= 0).any() or data["rest_variance"] <= 0:
        raise ValueError(f"{origin}: non-finite numbers or non-positive variances")
    known = {"mean", "axes", "axis_variance", "rest_variance", "threshold", "quantile", "sources", "features",
             "axes_kept"}
    return ContentReference(mean, axes.reshape(variance.size, mean.size), variance, float(data["rest_variance"]),
                            float(data["threshold"]), float(data["quantile"]), tuple(data["sources"]),
                            {k: v for k, v in data.items() if k not in known})


def read_reference(path: Path = REFERENCE_FILE) -> ContentReference:
    """The reference stored at ``path`` (plain JSON numbers: nothing executable).

    Raises:
        FileNotFoundError: no such file. ValueError: as ``reference_from_json``.
    """
    return reference_from_json(json.loads(Path(path).read_text()), str(path))


def write_reference(reference: ContentReference, path: Path = REFERENCE_FILE) -> Path:
    """Write the reference as compact JSON (one line per key: the file stays diffable by its notes)."""
    data = reference.to_json()
    lines = [f"{json.dumps(key)}: {json.dumps(value, separators=(',', ':'))}" for key, value in data.items()]
    Path(path).write_text("{\n" + ",\n".join(lines) + "\n}\n")
    return Path(path)


@lru_cache(maxsize=1)
def shipped_reference() -> ContentReference | None:
    """The packaged reference (``REFERENCE_FILE``), read once; None where the file is absent."""
    return read_reference(REFERENCE_FILE) if REFERENCE_FILE.is_file() else None
