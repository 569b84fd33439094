"""Is this a retinal fundus photograph? The check that runs before any grade.

A fundus photograph is a round (or, resampled to another aspect ratio, oval) illuminated retina —
the field of view — on a dark surround, in one dominant hue (red to orange; yellowish, greenish or
grey in hazy, badly white-balanced or red-free photos), with some detail (vessels, the optic disc)
but far less texture than noise or a natural scene. The check combines the field-of-view circle fit
of ``fundus.fov`` with statistics measured inside and outside the fitted field:

1. **A field on a dark surround.** ``fov.fit_fov_circle`` must find a round field whose surround
   is dark (``surround``: the median lightness outside 1.08 field radii over the field's median).
   It is tried on the photo, then on variants of a small copy that real photos need: the copy
   itself (the detector misses some 400 px tight crops at full size), the white padding some data
   sets put around the black surround blacked out, the ragged border of a tight crop trimmed, and
   the width stretched (0.9–1.5×) for photos resampled to a square. Failing all that, a tight crop
   whose four corners (beyond 1.3 half-sides from the centre) are each dark passes. A picture with
   no dark surround at all never passes (the detector's "field fills the frame" — reddish and
   smooth — also describes an orange cat).
2. **One hue** (``hue_variety``: the chroma-weighted circular spread of hue, times the mean
   chroma; a colour wheel is near 1), **not blue** (``blue_red``: mean blue / mean red). A grey
   (red-free) picture passes only with a round field found on the photo itself.
3. **Some detail, not noise** (``texture``: the mean absolute high-pass of the lightness, σ = 3 px,
   over its mean, on the field resampled to a 100 px radius; ``fine_share``: the part of it left at
   σ = 1 px — pixel noise is nearly all fine).

The thresholds are the constants below, each commented with the numbers of the calibration that
set it (``scripts/calibrate_fundus_check.py``: all 3,626 photos in the 7 folders of
``../shared/data`` — none rejected — and 56 non-fundus images, 53 rejected). It is a plausibility
test, not a classifier: a smooth orange gradient disc and a natural photo of one hue cut into a
round vignette on black (the calibration's coffee cup and cat) pass; every plain colour, noise and
gradient, and the scikit-image, scikit-learn, matplotlib and gradio sample photos as they are, are
rejected.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from .fov import _check_rgb, fit_fov_circle

# --- thresholds ---------------------------------------------------------------------------------
# Calibration (scripts/calibrate_fundus_check.py): "real" = the 3,626 photos of ../shared/data,
# "negatives" = the non-fundus images whose field passed the geometry tests before this one.
# Surround / corners: real max 0.155 (one over-exposed EyePACS photo with a bright halo), p99.9 0.075;
# closest negatives: a dahlia on dark leaves (sklearn flower.jpg) 0.269, coffee 0.98, rocket 0.48;
# corners: real max 0.067 (9 photos take that path), the closest negative 0.66 (rocket).
SURROUND_MAX = 0.2
CORNERS_MAX = 0.2
# Hue variety: real max 0.374 (an ODIR photo half orange, half cyan), p99.9 0.111; colour wheel 0.82.
HUE_VARIETY_MAX = 0.6
# Blue/red: real max 1.035 (greenish-grey EyePACS photos); a blue planet-like disc 2.88, rocket 1.71.
BLUE_RED_MAX = 1.3
# Texture (the field resampled to a 100 px radius): real min 0.0006 (hazy cataract photos), a flat
# disc of paint 0.0; real max 0.064, p99.9 0.053; the astronaut in a round vignette 0.090 (the cat in
# one, 0.065, and the coffee cup in one, 0.058, pass); generated fundus images 0.005-0.056.
TEXTURE_MIN = 0.0003
TEXTURE_MAX = 0.075
# Finest-scale share of the texture: real max 0.628, p99.9 0.601; colour noise in a disc 0.789.
FINE_SHARE_MAX = 0.7
# Mean chroma below which the field is grey: real min 0.056; greyscale pictures 0.0.
MONOCHROME_CHROMA = 0.04

# --- geometry of the measurements ---------------------------------------------------------------
WORK_SIDE = 256  # the variants are made on a copy with this longest side (the detector's own size)
_INNER = 0.9  # field statistics inside this fraction of the fitted radius (away from the rim)
_OUTER = 1.08  # the surround starts this many radii out (past the rim's blur and JPEG halo)
_MIN_SURROUND_PIXELS = 30  # a surround with fewer pixels inside the photo counts as dark (nothing to see)
_TEXTURE_RADIUS = 100.0  # texture is measured on the field resampled to this radius in pixels
_CORNER = 1.3  # a tight crop's corners: beyond this many half-sides from the centre
_DARK = 15.0  # pixels at or below this lightness carry no colour
_MIN_FIELD_LEVEL = 5.0  # a field whose median lightness is below this is black: no surround can be darker
_STRETCHES = (1.33, 1.2, 1.1, 1.5, 0.9)  # width factors tried for photos resampled to another aspect
_TRIM = 0.04  # share of each side trimmed off a tight crop's ragged border


@dataclass(frozen=True)
class FundusCheck:
    """The outcome of :func:`check_fundus`.

    Attributes:
        is_fundus: True when the photo passes as a fundus photograph.
        reason: why it does not (a user-facing phrase), ``""`` when it does.
        fov_found: a field of view was found (on the photo or a variant).
        fills_frame: the field covers the whole photo (no surround to measure).
        variant: which copy the field was found on (``"photo"``, ``"white padding removed"``, …).
        stats: the measured statistics (NaN where not measurable).
    """

    is_fundus: bool
    reason: str
    fov_found: bool
    fills_frame: bool
    variant: str = ""
    stats: dict[str, float] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return self.is_fundus


class NotFundusError(ValueError):
    """A photo that is not a fundus photograph; the message is meant for the user."""

    def __init__(self, check: FundusCheck, source: str | None = None) -> None:
        self.check = check
        self.source = source
        subject = f"{source}: this" if source else "This photo"
        super().__init__(f"{subject} does not look like a retinal fundus photograph ({check.reason}), "
                         "so it was not classified.")


def check_fundus(rgb: np.ndarray) -> FundusCheck:
    """Decide whether a photo is a fundus photograph (see the module docstring for the tests).

    Args:
        rgb: ``(H, W, 3) uint8`` RGB photo, as ``fundus.load_image`` returns it.

    Returns:
        A :class:`FundusCheck`; ``reason`` says which test failed. Never raises on image content.

    Raises:
        TypeError: ``rgb`` is not a uint8 array.
        ValueError: ``rgb`` is not ``(H, W, 3)``.
    """
    _check_rgb(rgb)
    small = _work_copy(rgb)
    first_failure: FundusCheck | None = None
    fills_frame = False
    for variant, image in _variants(rgb, small):
        cx, cy, radius, found, fills = fit_fov_circle(image)
        if not found:
            continue
        if fills:  # the detector's "reddish, smooth, no surround": an orange cat passes that too
            fills_frame = True
            continue
        if image is rgb and small is not rgb:  # measure on the small copy: the same circle, scaled
            scale = small.shape[1] / rgb.shape[1]
            cx, cy, radius, image = (cx + 0.5) * scale - 0.5, (cy + 0.5) * scale - 0.5, radius * scale, small
        stats = _field_stats(image, _circle_distance(image.shape, cx, cy, radius), radius)
        if stats["surround"] > SURROUND_MAX:  # a field, but not on a dark surround: try the next variant
            first_failure = first_failure or FundusCheck(False, _surround_reason(stats), True, False, variant, stats)
            continue
        reason = field_failure(stats, circle_on_photo=variant in ("photo", "working size"))
        return FundusCheck(not reason, reason, True, False, variant, stats)
    # A tight crop: the field is cut by all four sides of the frame and only the corners are dark.
    stats = _field_stats(small, _frame_distance(small.shape), min(small.shape[:2]) / 2, corners=True)
    if stats["surround"] <= CORNERS_MAX:
        reason = field_failure(stats, circle_on_photo=False)
        return FundusCheck(not reason, reason, True, False, "field cut by the frame, dark corners", stats)
    if first_failure is not None:
        return first_failure
    if fills_frame:
        return FundusCheck(False, "there is no dark surround around the picture (a fundus photo shows the round "
                           "field of the retina on black)", False, True, "", stats)
    return FundusCheck(False, "no round field of view on a dark background was found", False, False, "", stats)


def require_fundus(rgb: np.ndarray, source: str | None = None) -> FundusCheck:
    """:func:`check_fundus`, raising for a photo that is not a fundus photograph.

    Args:
        rgb: ``(H, W, 3) uint8`` RGB photo.
        source: a name for the photo in the message (a file name), optional.

    Returns:
        The passing :class:`FundusCheck`.

    Raises:
        NotFundusError: (a ValueError) the photo is not a fundus photograph; the message says why.
    """
    check = check_fundus(rgb)
    if not check.is_fundus:
        raise NotFundusError(check, source)
    return check


# --- decisions ------------------------------------------------------------------------------------
def _surround_reason(stats: dict[str, float]) -> str:
    return (f"the area around the round field is not dark: it is {stats['surround']:.0%} as bright as the field, "
            f"at most {SURROUND_MAX:.0%} in fundus photos")


def field_failure(stats: dict[str, float], circle_on_photo: bool) -> str:
    """Why the field's colours or texture are not a retina's, or ``""`` (``stats`` as ``FundusCheck.stats``)."""
    chroma, variety, blue_red = stats["chroma"], stats["hue_variety"], stats["blue_red"]
    texture, fine = stats["texture"], stats["fine_share"]
    if np.isnan(chroma):
        return "the field is black"
    if chroma < MONOCHROME_CHROMA:
        if not circle_on_photo:
            return "a grey picture whose field is not a circle found on the photo itself (red-free fundus photos are)"
    elif variety > HUE_VARIETY_MAX:
        return (f"the field has many vivid colours (hue variety {variety:.2f}; at most {HUE_VARIETY_MAX:.2f} in "
                "fundus photos, which are one hue, mostly red to orange)")
    elif blue_red > BLUE_RED_MAX:
        return f"the field is blue (blue/red {blue_red:.2f}; at most {BLUE_RED_MAX:.2f} in fundus photos)"
    if np.isnan(texture) or texture < TEXTURE_MIN:
        return "the field is a flat colour with no retinal detail (vessels, optic disc)"
    if texture > TEXTURE_MAX or fine > FINE_SHARE_MAX:
        return (f"the field is textured like noise or a natural scene (texture {texture:.3f}, finest-scale share "
                f"{fine:.2f}; at most {TEXTURE_MAX:.3f} and {FINE_SHARE_MAX:.2f} in fundus photos)")
    return ""


# --- measurements ---------------------------------------------------------------------------------
def _circle_distance(shape, cx: float, cy: float, radius: float) -> np.ndarray:
    """Distance of each pixel from the field's centre, in field radii."""
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return np.hypot(xx - cx, yy - cy) / max(radius, 1e-6)


def _frame_distance(shape) -> np.ndarray:
    """Distance from the photo's centre in half-sides (1 = the inscribed ellipse; the corners are at √2)."""
    h, w = shape[:2]
    yy, xx = np.mgrid[:h, :w]
    return np.hypot((xx - (w - 1) / 2) / (w / 2), (yy - (h - 1) / 2) / (h / 2))


def _texture(light: np.ndarray, lit: np.ndarray, radius: float) -> tuple[float, float]:
    """(texture, fine_share) of the lit field, measured with the field resampled to a radius of
    ``_TEXTURE_RADIUS`` pixels so that the numbers do not depend on the photo's resolution."""
    rows, cols = np.nonzero(lit)
    y0, y1, x0, x1 = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
    scale = _TEXTURE_RADIUS / max(radius, 1.0)
    size = (max(8, round((x1 - x0) * scale)), max(8, round((y1 - y0) * scale)))
    patch = cv2.resize(light[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    mask = cv2.resize(lit[y0:y1, x0:x1].astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).view(bool)
    mask = cv2.erode(mask.astype(np.uint8), np.ones((7, 7), np.uint8)).view(bool)  # not the field's own rim
    if mask.sum() < 50:
        return float("nan"), float("nan")
    fine = np.abs(patch - cv2.GaussianBlur(patch, (0, 0), 1.0))[mask]
    coarse = np.abs(patch - cv2.GaussianBlur(patch, (0, 0), 3.0))[mask]
    return (float(coarse.mean() / max(float(patch[mask].mean()), 1.0)),
            float(fine.mean() / max(float(coarse.mean()), 1e-6)))


def _field_stats(image: np.ndarray, dist: np.ndarray, radius: float, corners: bool = False) -> dict[str, float]:
    """Statistics of the field ``dist <= _INNER`` of an image (see the module docstring).

    ``surround``: the median lightness outside ``_OUTER`` field radii over the field's median; with
    ``corners``, the largest of the four corners' medians (``dist > _CORNER``), each corner alone.
    """
    h, w = image.shape[:2]
    pixels = image.astype(np.float32)
    light = pixels.max(axis=2)
    nan = float("nan")
    inside = dist <= _INNER
    stats: dict[str, float] = {}
    level = float(np.median(light[inside])) if inside.any() else 0.0
    if corners:
        yy, xx = np.mgrid[:h, :w]
        medians = []
        for left in (True, False):
            for top in (True, False):
                region = (dist > _CORNER) & ((xx < w / 2) == left) & ((yy < h / 2) == top)
                medians.append(float(np.median(light[region])) if region.sum() >= 4 else float("inf"))
        surround = max(medians)
    else:
        outside = dist >= _OUTER
        surround = float(np.median(light[outside])) if outside.sum() >= _MIN_SURROUND_PIXELS else 0.0
    stats["surround"] = surround / level if level >= _MIN_FIELD_LEVEL else float("inf")

    lit = inside & (light > _DARK)
    if lit.sum() >= 50:
        red, blue = pixels[..., 0][lit], pixels[..., 2][lit]
        spread = light[lit] - pixels.min(axis=2)[lit]
        stats["chroma"] = float(spread.mean() / max(float(light[lit].mean()), 1.0))
        stats["blue_red"] = float(blue.mean() / max(float(red.mean()), 1.0))
        hue = cv2.cvtColor(image, cv2.COLOR_RGB2HSV_FULL)[..., 0][lit].astype(np.float32) * (2 * np.pi / 256)
        weights = spread / max(float(spread.sum()), 1e-6)
        resultant = abs(complex(float((weights * np.cos(hue)).sum()), float((weights * np.sin(hue)).sum())))
        stats["hue_spread"] = float(1.0 - resultant)
        stats["hue_variety"] = stats["hue_spread"] * stats["chroma"]
        stats["texture"], stats["fine_share"] = _texture(light, lit, radius)
    else:
        stats.update(chroma=nan, blue_red=nan, hue_spread=nan, hue_variety=nan, texture=nan, fine_share=nan)
    return stats


def _work_copy(rgb: np.ndarray) -> np.ndarray:
    side = max(rgb.shape[:2])
    if side <= WORK_SIDE:
        return rgb
    scale = WORK_SIDE / side
    size = (max(1, round(rgb.shape[1] * scale)), max(1, round(rgb.shape[0] * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _variants(rgb: np.ndarray, small: np.ndarray):
    """(name, image) pairs the field is looked for on: the photo itself, then variants of its small copy."""
    yield "photo", rgb
    if small is not rgb:
        yield "working size", small
    cleaned = _without_white_padding(small)
    bases = [("", small)] if cleaned is None else [("white padding removed", cleaned)]
    for base_name, base in bases:
        if base_name:
            yield base_name, base
        h, w = base.shape[:2]
        dy, dx = max(1, round(_TRIM * h)), max(1, round(_TRIM * w))
        trimmed = base[dy:h - dy, dx:w - dx]
        for trim_name, image in (("", base), ("border trimmed", trimmed)):
            if trim_name:
                yield _join(base_name, trim_name), image
            for factor in _STRETCHES:
                size = (max(1, round(image.shape[1] * factor)), image.shape[0])
                stretched = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
                yield _join(base_name, trim_name, f"width ×{factor:g}"), stretched


def _join(*parts: str) -> str:
    return ", ".join(p for p in parts if p)


def _without_white_padding(small: np.ndarray) -> np.ndarray | None:
    """The copy with near-white, grey regions touching the photo's border set to black, or None if none."""
    low, high = small.min(axis=2), small.max(axis=2)
    white = ((low > 200) & (high.astype(np.int16) - low < 30)).astype(np.uint8)
    if not white.any():
        return None
    n, labels = cv2.connectedComponents(white, connectivity=8)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    border = border[border > 0]
    if border.size == 0:
        return None
    padding = np.isin(labels, border)
    if padding.sum() < 0.01 * padding.size:
        return None
    # Padding is white around the black surround (a quarter of its border at least is dark); white bordered
    # by lit pixels only is an over-exposed field.
    edge = cv2.dilate(padding.astype(np.uint8), np.ones((5, 5), np.uint8)).view(bool) & ~padding
    if not edge.any() or float(np.percentile(high[edge], 25)) > 60:
        return None
    cleaned = small.copy()
    cleaned[padding] = 0
    return cleaned
