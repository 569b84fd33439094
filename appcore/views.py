"""Everything a slider changes, computed from a cached Analysis: no network pass here.

θ draws paper 000's attention crop box on the Guided Grad-CAM panel and enlarges the crop (Fig. 2 d–f);
τ draws paper 004's lesion mask and patch boxes on the GMSM panel (eq. 4); t is GMSM's gate (eq. 2);
lesion outlines use paper 001's per-label colours (Fig. 6c).
"""
from __future__ import annotations

import shutil
import tempfile
import textwrap
import threading
import time
from collections import deque
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from explain.overlay import colormap_names, draw_boxes, overlay, panel_grid
from explain.regions import attention_crop, lesion_mask, lesion_outlines

from appcore.analysis import PANEL_METHODS
PANEL_TITLES = {"cam": "CAM", "gradcam": "Grad-CAM", "guided_gradcam": "Guided Grad-CAM", "gmsm": "GMSM"}
COLORMAPS = ("jet", "turbo", "inferno", "viridis", "hot", "bone")
CROP_COLOUR = (0, 255, 0)  # θ attention box
PATCH_COLOUR = (0, 255, 255)  # τ lesion patches
MASK_TINT = (255, 255, 255)
_COLORMAP_NAMES = frozenset(colormap_names())


@dataclass(frozen=True)
class ViewParams:
    """The view's controls. Raises ValueError on construction when one is out of range."""

    theta: int = 128  # paper 000 eq. 5, [0, 255]
    tau: float = 0.6  # paper 004 eq. 4, [0, 1]
    t: float = 1.0  # paper 004 eq. 2 gate, >= 0
    alpha: float = 0.5
    colormap: str = "jet"
    outlines: bool = True
    compare: str = "guided_gradcam"  # which panel the before/after slider shows

    def __post_init__(self) -> None:
        if not 0 <= self.theta <= 255:
            raise ValueError(f"theta must be in [0, 255] (paper 000 eq. 5), got {self.theta}")
        if not 0.0 <= self.tau <= 1.0:
            raise ValueError(f"tau must be in [0, 1] (paper 004 eq. 4), got {self.tau}")
        if self.t < 0:
            raise ValueError(f"the GMSM gate t must be >= 0 (paper 004 eq. 2), got {self.t}")
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {self.alpha}")
        if self.colormap not in _COLORMAP_NAMES:
            raise ValueError(f"unknown colormap {self.colormap!r}; choose from {', '.join(COLORMAPS)}")
        if self.compare not in PANEL_METHODS:
            raise ValueError(f"compare must be one of {PANEL_METHODS}, got {self.compare!r}")

    @classmethod
    def from_config(cls, config, **overrides) -> "ViewParams":
        """The model's own θ/τ/t defaults, with overrides."""
        values = {"theta": int(config.theta), "tau": float(config.tau), "t": float(config.t)}
        values.update(overrides)
        return cls(**values)


@dataclass
class View:
    """What the page shows for one Analysis and one set of ViewParams."""

    panels: dict[str, np.ndarray]  # method -> (S, S, 3) uint8 RGB picture
    captions: dict[str, str]  # method -> panel title, or the title and why it is unavailable
    crop: np.ndarray  # θ crop enlarged, its longer side the input size, aspect kept (paper 000 Fig. 2f)
    regions: dict[str, Any]  # JSON-ready: crop box, lesion patches, areas
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, "#rrggbb") of drawn outlines
    compare: tuple[np.ndarray, np.ndarray] | None = None  # (photo as the model sees it, overlay)
    render_seconds: float = 0.0

    def grid(self) -> np.ndarray:
        """The four panels and the enlarged crop side by side, titled, as one RGB image (the PNG download)."""
        side = self.panels[PANEL_METHODS[0]].shape[0]
        images = [self.panels[m] for m in PANEL_METHODS] + [_letterbox(self.crop, side)]
        title = f"theta={self.regions['theta']} crop" if "crop_box" in self.regions else "no crop"
        titles = [self.captions[m] for m in PANEL_METHODS] + [title]
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


def render_view(analysis, params: ViewParams) -> View:
    """Draw the four panels, the θ crop, the τ lesion mask and the outlines from cached maps.

    Regions (θ crop box, τ lesion mask, lesion outlines) are drawn only for disease labels
    (``analysis.region_labels``): for a no-disease answer ("healthy", "normal", "No DR") the panels show the
    maps alone and ``regions["note"]`` says why. The enlarged crop keeps the crop's aspect ratio.

    Args:
        analysis: an ``appcore.analysis.Analysis``.
        params: the controls.

    Raises:
        TypeError: ``params`` is not a ViewParams.
    """
    if not isinstance(params, ViewParams):
        raise TypeError(f"params must be a ViewParams, got {type(params).__name__}")
    start = time.perf_counter()
    image = analysis.pre.image
    fov = analysis.pre.fov_mask
    maps = analysis.maps(params.t)
    unavailable = analysis.unavailable
    panels: dict[str, np.ndarray] = {}
    captions: dict[str, str] = {}
    for method in PANEL_METHODS:
        title = PANEL_TITLES[method]
        if method in maps:
            # Only GMSM depends on t; each overlay is drawn once per (α, colormap[, t]) and reused.
            gate = round(params.t, 3) if method == "gmsm" else None
            panels[method] = analysis.memo(
                ("overlay", method, gate, params.alpha, params.colormap),
                lambda m=method: overlay(image, maps[m], params.alpha, params.colormap, mask=fov))
            captions[method] = title  # the timings are in one line of the details, not in every title
        else:
            reason = unavailable.get(method, "not computed for this model")
            panels[method] = analysis.memo(("unavailable", method),
                                           lambda: unavailable_picture(image.shape[:2], f"{title} unavailable: {reason}"))
            captions[method] = f"{title} — unavailable: {reason}"
    regions: dict[str, Any] = {"theta": int(params.theta), "tau": float(params.tau), "t": float(params.t)}
    legend: list[tuple[str, str]] = []
    drawn = analysis.region_labels
    regions["labels"] = list(drawn)
    crop = None
    if not drawn:
        regions["note"] = analysis.regions_note
        reason = "a no-disease answer" if "no-disease" in regions["note"] else "no label reached its threshold"
        crop = analysis.memo(("no-crop",), lambda: unavailable_picture(image.shape[:2], f"No crop: {reason}"))
    elif "guided_gradcam" in maps:  # paper 000 eq. 5 and Fig. 2 d–f
        found = analysis.memo(("crop", params.theta), lambda: attention_crop(maps["guided_gradcam"], params.theta))
        box = [int(v) for v in found.box]
        regions["crop_box"] = box
        regions["crop_empty"] = bool(found.empty)
        area = (box[2] - box[0]) * (box[3] - box[1])
        regions["crop_fraction"] = round(area / float(image.shape[0] * image.shape[1]), 4)
        crop = analysis.memo(("crop-picture", params.theta), lambda: crop_picture(image, box, image.shape[0]))
        line = max(2, image.shape[0] // 160)
        panel = draw_boxes(panels["guided_gradcam"], [found.box], CROP_COLOUR, line)
        if params.outlines:
            outlines = analysis.memo(("outlines", params.tau), lambda: lesion_outlines(
                {k: v for k, v in analysis.guided_by_label().items() if k in drawn}, params.tau, fov_mask=fov))
            panel = draw_outlines_with_halo(panel, outlines, line)
            legend = [(label, "#%02x%02x%02x" % colour) for label, colour in outlines.legend]
        panels["guided_gradcam"] = panel
    if drawn and "gmsm" in maps:  # paper 004 eq. 4: M = L_norm > τ, split into patches
        lesions = analysis.memo(("lesions", round(params.t, 3), params.tau),
                                lambda: lesion_mask(maps["gmsm"], params.tau, fov_mask=fov))
        panel = panels["gmsm"].copy()
        panel[lesions.mask] = (0.6 * panel[lesions.mask] + 0.4 * np.array(MASK_TINT, np.float32)).astype(np.uint8)
        panels["gmsm"] = draw_boxes(panel, [p.box for p in lesions.patches], PATCH_COLOUR,
                                    max(1, image.shape[0] // 320))
        inside = int(fov.sum()) or fov.size
        regions.update(lesion_patches=len(lesions.patches), lesion_area_px=int(lesions.total_area),
                       lesion_area_fraction=round(lesions.total_area / inside, 4),
                       lesion_boxes=[[int(v) for v in p.box] for p in lesions.patches[:50]])
    if crop is None:
        crop = image
    view = View(panels=panels, captions=captions, crop=crop, regions=regions, legend=legend,
                compare=(image, panels[params.compare]))
    view.render_seconds = time.perf_counter() - start
    return view


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


def unavailable_picture(shape: tuple[int, int], message: str) -> np.ndarray:
    """A dark tile with the reason a method is undefined written on it."""
    height, width = shape
    tile = np.full((height, width, 3), 40, np.uint8)
    scale = max(0.35, width / 700)  # about 32 characters a line, whatever the size
    chars = max(12, int((width - 16) / (20 * scale)))
    step = int(round(40 * scale))
    for row, line in enumerate(textwrap.wrap(message, chars)[:12]):
        cv2.putText(tile, line, (8, 2 * step + step * row), cv2.FONT_HERSHEY_SIMPLEX, scale, (230, 230, 230),
                    1, cv2.LINE_AA)
    return tile


class DownloadFolders:
    """Fresh folders for a view's downloads (``appcore.exports.write_downloads``); only the newest ``keep``
    stay on disk, and all of them go when the process ends.

    The web server copies a download into its own cache when it answers, so a folder is needed only until
    then: a server that prepares downloads all day must not keep every one of them.
    """

    def __init__(self, keep: int = 32, root: str | Path | None = None) -> None:
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.keep = keep
        self._temporary = None if root is not None else tempfile.TemporaryDirectory(prefix="fundus-cam-zoo-downloads-")
        self.root = Path(root) if root is not None else Path(self._temporary.name)
        self.root.mkdir(parents=True, exist_ok=True)
        self._folders: deque[Path] = deque()
        self._lock = threading.Lock()

    def new(self) -> Path:
        """A new empty folder; the oldest beyond ``keep`` are deleted."""
        folder = Path(tempfile.mkdtemp(dir=self.root))
        with self._lock:
            self._folders.append(folder)
            old = [self._folders.popleft() for _ in range(len(self._folders) - self.keep)]
        for path in old:
            shutil.rmtree(path, ignore_errors=True)
        return folder

    def __len__(self) -> int:
        return len(self._folders)
