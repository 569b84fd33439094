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


@dataclass
class _Canvas:
    """What ``render`` draws into, step by step: the panels' pictures, captions and notes, the regions' record, the
    outline legend and the enlarged crop."""

    analysis: Any
    params: ViewParams
    maps: dict[str, np.ndarray]
    pictures: dict[str, np.ndarray] = field(default_factory=dict)
    captions: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)
    regions: dict[str, Any] = field(default_factory=dict)
    legend: list[tuple[str, str]] = field(default_factory=list)
    crop: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        return self.analysis.pre.image

    @property
    def fov(self) -> np.ndarray:
        return self.analysis.pre.fov_mask

    @property
    def line(self) -> int:
        """A box's or an outline's width: visible at the size the page shows the panels."""
        return max(2, self.image.shape[0] // 160)


def render(analysis, params: ViewParams, panels: tuple[str, ...] | None = None) -> View:
    """Draw the panels, the θ crop, the τ lesion mask and the outlines from cached maps.

    Regions (θ crop box, τ lesion mask, lesion outlines) are drawn only for ``analysis.region_labels``: for a
    no-disease answer ("healthy", "normal", "No DR") the panels show the maps alone and ``regions["note"]`` says
    why (``analysis.no_regions``). The enlarged crop keeps the crop's aspect ratio.

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
    canvas = _Canvas(analysis, params, analysis.maps(params.t))
    for method in panels:
        _draw_panel(canvas, method)
    labels = analysis.region_labels
    canvas.regions.update(theta=int(params.theta), tau=float(params.tau), t=float(params.t), labels=list(labels))
    if not labels:
        _draw_no_regions(canvas, analysis.no_regions)
    else:
        drawn = [m for m in panels if m in canvas.maps]
        for region, draw in REGION_TOOLS.items():  # in this order: a panel may carry several
            carrier = _carrier(region, drawn)
            if carrier:
                draw(canvas, carrier)
    image = canvas.image
    compare = canvas.pictures.get(params.compare)
    view = View(panels=canvas.pictures, captions=canvas.captions, crop=image if canvas.crop is None else canvas.crop,
                regions=canvas.regions, legend=canvas.legend, notes=canvas.notes,
                compare=None if compare is None else (image, compare))
    view.render_seconds = time.perf_counter() - start
    return view


def _draw_panel(canvas: _Canvas, method: str) -> None:
    """A method's panel: its map over the photo, or a tile saying why there is none; its caption and notes."""
    analysis, params, maps, image = canvas.analysis, canvas.params, canvas.maps, canvas.image
    title = get_method(method).title
    if method not in maps:
        reason = analysis.unavailable.get(method, "not computed for this model")
        canvas.pictures[method] = analysis.memo(("unavailable", method), lambda: unavailable_picture(
            image.shape[:2], f"No {title} for this model", background=image))
        canvas.captions[method] = f"{title} — unavailable: {reason}"
        canvas.notes[method] = f"No {title} map for this model: {reason}."
        return
    # Only a method with parameters (GMSM's t) changes with them; each overlay is drawn once per
    # (α, colormap[, parameters]) and reused.
    own = tuple(round(getattr(params, p.name), 3) for p in get_method(method).params)
    canvas.pictures[method] = analysis.memo(
        ("overlay", method, own, params.alpha, params.colormap),
        lambda: overlay(image, maps[method], params.alpha, params.colormap, mask=canvas.fov))
    canvas.captions[method] = title  # the timings are in one line of the details, not in every title
    if method == "gradcam" and "cam" in maps and getattr(analysis.config, "gradcam_is_cam", False):
        canvas.captions[method] = f"{title} (= CAM for this model)"
        canvas.notes[method] = GRADCAM_IS_CAM
    measured = panel_caption(getattr(analysis.config, "localisation", None) or {}, method)
    if measured:  # how well this method's maps found lesions on an annotated data set (none: never measured)
        canvas.notes[method + LOCALISATION_NOTE] = measured


def _draw_no_regions(canvas: _Canvas, why) -> None:
    """No region for this answer (``explain.pipeline.NoRegions``): the note, and a crop tile saying why."""
    canvas.regions["note"] = why.note
    canvas.crop = canvas.analysis.memo(("no-crop",), lambda: unavailable_picture(
        canvas.image.shape[:2], f"No crop: {why.reason}"))


def _draw_crop(canvas: _Canvas, carrier: str) -> None:
    """Paper 000 eq. 5 and Fig. 2 d–f: the θ crop's box on its panel, and the crop enlarged."""
    analysis, theta, image = canvas.analysis, canvas.params.theta, canvas.image
    found = analysis.memo(("crop", carrier, theta), lambda: attention_crop(canvas.maps[carrier], theta))
    box = [int(v) for v in found.box]
    area = (box[2] - box[0]) * (box[3] - box[1])
    canvas.regions.update(crop_box=box, crop_empty=bool(found.empty),
                          crop_fraction=round(area / float(image.shape[0] * image.shape[1]), 4))
    canvas.crop = analysis.memo(("crop-picture", theta), lambda: crop_picture(image, box, image.shape[0]))
    canvas.pictures[carrier] = draw_boxes(canvas.pictures[carrier], [found.box], CROP_COLOUR, canvas.line)


def _draw_outlines(canvas: _Canvas, carrier: str) -> None:
    """Paper 001 Fig. 6c: the outlines of the map above τ, one colour per drawn label (when asked for)."""
    analysis, params = canvas.analysis, canvas.params
    if not params.outlines:
        return
    labels = analysis.region_labels
    outlines = analysis.memo(("outlines", carrier, params.tau), lambda: lesion_outlines(
        {k: v for k, v in analysis.maps_by_label(carrier).items() if k in labels}, params.tau, fov_mask=canvas.fov))
    canvas.pictures[carrier] = draw_outlines_with_halo(canvas.pictures[carrier], outlines, canvas.line)
    canvas.legend = [(label, "#%02x%02x%02x" % colour) for label, colour in outlines.legend]


def _draw_lesions(canvas: _Canvas, carrier: str) -> None:
    """Paper 004 eq. 4: M = L_norm > τ tinted on its panel, split into patches with their boxes."""
    analysis, params, fov = canvas.analysis, canvas.params, canvas.fov
    lesions = analysis.memo(("lesions", carrier, round(params.t, 3), params.tau),
                            lambda: lesion_mask(canvas.maps[carrier], params.tau, fov_mask=fov))
    panel = canvas.pictures[carrier].copy()
    panel[lesions.mask] = (0.6 * panel[lesions.mask] + 0.4 * np.array(MASK_TINT, np.float32)).astype(np.uint8)
    canvas.pictures[carrier] = draw_boxes(panel, [p.box for p in lesions.patches], PATCH_COLOUR,
                                          max(1, canvas.image.shape[0] // 320))
    inside = int(fov.sum()) or fov.size
    canvas.regions.update(lesion_patches=len(lesions.patches), lesion_area_px=int(lesions.total_area),
                          lesion_area_fraction=round(lesions.total_area / inside, 4),
                          lesion_boxes=[[int(v) for v in p.box] for p in lesions.patches[:50]])


# The region tools (``Method.regions``), each drawn on the panel that carries it, in this order.
REGION_TOOLS = {"crop": _draw_crop, "outlines": _draw_outlines, "lesions": _draw_lesions}


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
