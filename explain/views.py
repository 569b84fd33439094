"""Everything a slider changes, drawn from a cached ``explain.pipeline.Analysis``: no network pass here.

The panels are the registry's (``explain.methods``): the page's main ones and the optional ones asked for. Region
tools go where the registry puts them: θ draws paper 000's attention crop box on the panel that carries the crop
(Guided Grad-CAM) and enlarges the crop (Fig. 2 d–f); τ draws paper 004's lesion mask and patch boxes on the panel
that carries the lesions (GMSM, eq. 4) and paper 001's per-label outlines (Fig. 6c) on the one that carries them;
t is GMSM's gate (eq. 2). The Gradio app, the Streamlit app and ``python -m explain`` draw through ``render``.
"""
from __future__ import annotations

import textwrap
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import cv2
import numpy as np

from explain.controls import BY_NAME, CONTROLS
from explain.methods import get_method, panel_methods
from explain.overlay import draw_boxes, overlay, panel_grid
from explain.regions import attention_crop, lesion_mask, lesion_outlines
from zoo.config import GRADCAM_IS_CAM
from zoo.localisation import panel_caption

CROP_COLOUR = (0, 255, 0)  # θ attention box
PATCH_COLOUR = (0, 255, 255)  # τ lesion patches
MASK_TINT = (255, 255, 255)
LOCALISATION_NOTE = ":localisation"  # View.notes key suffix of a panel's localisation caption


@dataclass(frozen=True)
class ViewParams:
    """The view's controls (``explain.controls.CONTROLS``), checked and brought to each control's type on
    construction (an int θ stays an int).

    Raises:
        ValueError: a value out of its control's range or choices.
    """

    theta: int = BY_NAME["theta"].default  # paper 000 eq. 5, [0, 255]
    tau: float = BY_NAME["tau"].default  # paper 004 eq. 4, [0, 1]
    t: float = BY_NAME["t"].default  # paper 004 eq. 2 gate, >= 0
    alpha: float = BY_NAME["alpha"].default
    colormap: str = BY_NAME["colormap"].default
    outlines: bool = BY_NAME["outlines"].default
    compare: str = BY_NAME["compare"].default  # which panel the before/after view shows
    extras: tuple[str, ...] = BY_NAME["extras"].default  # optional panels shown after the main ones

    def __post_init__(self) -> None:
        for control in CONTROLS:
            object.__setattr__(self, control.name, control.check(getattr(self, control.name)))

    @classmethod
    def from_config(cls, config, **overrides) -> "ViewParams":
        """The model's own defaults (θ, τ, t: ``Control.config``), with overrides."""
        values = {c.name: c.default_for(config) for c in CONTROLS if c.config}
        return cls(**{**values, **overrides})

    @property
    def panels(self) -> tuple[str, ...]:
        """The panels of this view: the main ones, then the extras asked for."""
        return panel_methods("main") + self.extras

    def record(self) -> dict[str, Any]:
        """JSON-ready values (tuples as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


@dataclass
class View:
    """What the page shows for one Analysis and one set of ViewParams."""

    panels: dict[str, np.ndarray]  # method -> (S, S, 3) uint8 RGB picture, in panel order
    captions: dict[str, str]  # method -> panel title, or the title and why it is unavailable
    crop: np.ndarray  # θ crop enlarged, its longer side the input size, aspect kept (paper 000 Fig. 2f)
    regions: dict[str, Any]  # JSON-ready: crop box, lesion patches, areas
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, "#rrggbb") of drawn outlines
    # method -> a sentence for under the panels: why its panel repeats another's or shows no map; method +
    # LOCALISATION_NOTE -> how well its maps found lesions on an annotated data set (zoo.localisation.panel_caption)
    notes: dict[str, str] = field(default_factory=dict)
    compare: tuple[np.ndarray, np.ndarray] | None = None  # (photo as the model sees it, overlay)
    render_seconds: float = 0.0

    def grid(self) -> np.ndarray:
        """The panels and the enlarged crop side by side, titled, as one RGB image (the PNG download, and
        ``python -m explain``'s ``*_panel.png``)."""
        names = list(self.panels)
        side = self.panels[names[0]].shape[0]
        images = [self.panels[m] for m in names] + [_letterbox(self.crop, side)]
        title = f"theta={self.regions['theta']} crop" if "crop_box" in self.regions else "no crop"
        titles = [self.captions[m] for m in names] + [title]
        return panel_grid(images, titles, columns=len(images))


def _letterbox(picture: np.ndarray, side: int) -> np.ndarray:
    """A picture scaled into a black side × side square, its aspect ratio kept."""
    height, width = picture.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = cv2.resize(picture, size, interpolation=cv2.INTER_AREA)
    square = np.zeros((side, side, 3), np.uint8)
    y, x = (side - size[1]) // 2, (side - size[0]) // 2
    square[y:y + size[1], x:x + size[0]] = small
    return square


def _carrier(region: str, panels) -> str | None:
    """The panel that carries a region tool (``Method.regions``), among these panels."""
    return next((m for m in panels if region in get_method(m).regions), None)


def render(analysis, params: ViewParams, panels: tuple[str, ...] | None = None) -> View:
    """Draw the panels, the θ crop, the τ lesion mask and the outlines from cached maps.

    Regions (θ crop box, τ lesion mask, lesion outlines) are drawn only for ``analysis.region_labels``: for a
    no-disease answer ("healthy", "normal", "No DR") the panels show the maps alone and ``regions["note"]`` says
    why. The enlarged crop keeps the crop's aspect ratio.

    Args:
        analysis: an ``explain.pipeline.Analysis``.
        params: the controls.
        panels: the methods to draw, in order (default ``params.panels``: the main ones and the extras); a
            method the analysis lacks gets a tile saying why.

    Raises:
        TypeError: ``params`` is not a ViewParams.
    """
    if not isinstance(params, ViewParams):
        raise TypeError(f"params must be a ViewParams, got {type(params).__name__}")
    start = time.perf_counter()
    panels = tuple(panels or params.panels)
    image = analysis.pre.image
    fov = analysis.pre.fov_mask
    maps = analysis.maps(params.t)
    unavailable = analysis.unavailable
    pictures: dict[str, np.ndarray] = {}
    captions: dict[str, str] = {}
    notes: dict[str, str] = {}
    for method in panels:
        title = get_method(method).title
        if method in maps:
            # Only a method with parameters (GMSM's t) changes with them; each overlay is drawn once per
            # (α, colormap[, parameters]) and reused.
            own = tuple(round(getattr(params, p.name), 3) for p in get_method(method).params)
            pictures[method] = analysis.memo(
                ("overlay", method, own, params.alpha, params.colormap),
                lambda m=method: overlay(image, maps[m], params.alpha, params.colormap, mask=fov))
            captions[method] = title  # the timings are in one line of the details, not in every title
            if method == "gradcam" and "cam" in maps and getattr(analysis.config, "gradcam_is_cam", False):
                captions[method] = f"{title} (= CAM for this model)"
                notes[method] = GRADCAM_IS_CAM
        else:
            reason = unavailable.get(method, "not computed for this model")
            pictures[method] = analysis.memo(("unavailable", method),
                                             lambda: unavailable_picture(image.shape[:2], f"No {title} for this model",
                                                                         background=image))
            captions[method] = f"{title} — unavailable: {reason}"
            notes[method] = f"No {title} map for this model: {reason}."
        measured = panel_caption(getattr(analysis.config, "localisation", None) or {}, method) if method in maps else ""
        if measured:  # how well this method's maps found lesions on an annotated data set (none: never measured)
            notes[method + LOCALISATION_NOTE] = measured
    regions: dict[str, Any] = {"theta": int(params.theta), "tau": float(params.tau), "t": float(params.t)}
    legend: list[tuple[str, str]] = []
    drawn = analysis.region_labels
    regions["labels"] = list(drawn)
    crop = None
    cropped, outlined, lesioned = (_carrier(region, [m for m in panels if m in maps])
                                   for region in ("crop", "outlines", "lesions"))
    if not drawn:
        regions["note"] = analysis.regions_note
        reason = "a no-disease answer" if "no-disease" in regions["note"] else "no label reached its threshold"
        crop = analysis.memo(("no-crop",), lambda: unavailable_picture(image.shape[:2], f"No crop: {reason}"))
    elif cropped:  # paper 000 eq. 5 and Fig. 2 d–f
        found = analysis.memo(("crop", cropped, params.theta), lambda: attention_crop(maps[cropped], params.theta))
        box = [int(v) for v in found.box]
        regions["crop_box"] = box
        regions["crop_empty"] = bool(found.empty)
        area = (box[2] - box[0]) * (box[3] - box[1])
        regions["crop_fraction"] = round(area / float(image.shape[0] * image.shape[1]), 4)
        crop = analysis.memo(("crop-picture", params.theta), lambda: crop_picture(image, box, image.shape[0]))
        line = max(2, image.shape[0] // 160)
        pictures[cropped] = draw_boxes(pictures[cropped], [found.box], CROP_COLOUR, line)
    if drawn and outlined and params.outlines:  # paper 001 Fig. 6c: one colour per label
        line = max(2, image.shape[0] // 160)
        outlines = analysis.memo(("outlines", outlined, params.tau), lambda: lesion_outlines(
            {k: v for k, v in analysis.maps_by_label(outlined).items() if k in drawn}, params.tau, fov_mask=fov))
        pictures[outlined] = draw_outlines_with_halo(pictures[outlined], outlines, line)
        legend = [(label, "#%02x%02x%02x" % colour) for label, colour in outlines.legend]
    if drawn and lesioned:  # paper 004 eq. 4: M = L_norm > τ, split into patches
        lesions = analysis.memo(("lesions", lesioned, round(params.t, 3), params.tau),
                                lambda: lesion_mask(maps[lesioned], params.tau, fov_mask=fov))
        panel = pictures[lesioned].copy()
        panel[lesions.mask] = (0.6 * panel[lesions.mask] + 0.4 * np.array(MASK_TINT, np.float32)).astype(np.uint8)
        pictures[lesioned] = draw_boxes(panel, [p.box for p in lesions.patches], PATCH_COLOUR,
                                        max(1, image.shape[0] // 320))
        inside = int(fov.sum()) or fov.size
        regions.update(lesion_patches=len(lesions.patches), lesion_area_px=int(lesions.total_area),
                       lesion_area_fraction=round(lesions.total_area / inside, 4),
                       lesion_boxes=[[int(v) for v in p.box] for p in lesions.patches[:50]])
    if crop is None:
        crop = image
    compare = pictures.get(params.compare)
    view = View(panels=pictures, captions=captions, crop=crop, regions=regions, legend=legend, notes=notes,
                compare=None if compare is None else (image, compare))
    view.render_seconds = time.perf_counter() - start
    return view


render_view = render  # the name the front ends have used


def crop_picture(image: np.ndarray, box, side: int) -> np.ndarray:
    """The crop ``box`` (x0, y0, x1, y1) of ``image`` enlarged so that its longer side is ``side`` pixels,
    keeping its aspect ratio (paper 000 Fig. 2f, without the distortion of stretching it to a square)."""
    x0, y0, x1, y1 = (int(v) for v in box)
    cut = image[max(0, y0):max(y0 + 1, y1), max(0, x0):max(x0 + 1, x1)]
    height, width = cut.shape[:2]
    scale = side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    return np.ascontiguousarray(cv2.resize(cut, size, interpolation=interpolation))


def before_after(pair: tuple[np.ndarray, np.ndarray], position: float) -> np.ndarray:
    """A view's before/after pair (``View.compare``) as one picture, for a front end without Gradio's ImageSlider:
    ``before`` left of a white handle at ``position`` (0 … 1 of the width), ``after`` right of it.

    Raises:
        ValueError: ``position`` outside [0, 1], or the two pictures differ in shape.
    """
    before, after = pair
    if not 0.0 <= position <= 1.0:
        raise ValueError(f"the handle's position must be in [0, 1], got {position}")
    if before.shape != after.shape:
        raise ValueError(f"before and after differ in shape: {before.shape} vs {after.shape}")
    width = before.shape[1]
    x = int(round(position * width))
    picture = after.copy()
    picture[:, :x] = before[:, :x]
    line = max(2, width // 160)
    start = min(max(0, x - line // 2), width - line)
    picture[:, start:start + line] = 255
    return picture


def draw_outlines_with_halo(image: np.ndarray, outlines, thickness: int = 2) -> np.ndarray:
    """Lesion outlines in their label colours (paper 001 Fig. 6c) over a dark halo, so that they stay visible
    on any heat-map colour at the size the page shows them. A region too small to see as an outline (Guided
    Grad-CAM's are often a few pixels) gets a ring around it instead."""
    canvas = np.ascontiguousarray(image).copy()
    radius = max(5, canvas.shape[0] // 45)
    shapes = []  # (kind, geometry, colour)
    for label, contours in outlines.contours.items():
        colour = tuple(int(c) for c in outlines.colours[label])
        for contour in contours:
            x, y, w, h = cv2.boundingRect(contour)
            if max(w, h) < 2 * radius:
                shapes.append(("ring", (x + w // 2, y + h // 2), colour))
            else:
                shapes.append(("contour", contour, colour))
    for halo in (True, False):
        for kind, geometry, colour in shapes:
            paint, width = ((0, 0, 0), thickness + 2) if halo else (colour, thickness)
            if kind == "ring":
                cv2.circle(canvas, geometry, radius, paint, width, cv2.LINE_AA)
            else:
                cv2.drawContours(canvas, [geometry], -1, paint, width, cv2.LINE_AA)
    return canvas


def unavailable_picture(shape: tuple[int, int], message: str, background: np.ndarray | None = None) -> np.ndarray:
    """A dark tile with a short message written on it (the reason goes in the caption and the view's notes): over
    ``background`` (the photo as the model sees it), greyed and darkened, so that the panel reads as "this photo,
    no map" rather than as a placeholder."""
    height, width = shape
    tile = np.full((height, width, 3), 40, np.uint8)
    if background is not None and background.shape[:2] == (height, width):
        grey = cv2.cvtColor(np.ascontiguousarray(background), cv2.COLOR_RGB2GRAY)
        tile = np.repeat((grey.astype(np.float32) * 0.35)[..., None], 3, axis=2).astype(np.uint8)
    scale = max(0.35, width / 700)  # about 32 characters a line, whatever the size
    chars = max(12, int((width - 16) / (20 * scale)))
    step = int(round(40 * scale))
    for row, line in enumerate(textwrap.wrap(message, chars)[:12]):
        cv2.putText(tile, line, (8, 2 * step + step * row), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230),
                    1, cv2.LINE_AA)
    return tile
