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
from explain.overlay import colormap_names, draw_boxes, draw_outlines, overlay, panel_grid
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
    captions: dict[str, str]  # method -> panel title with its time, or why it is unavailable
    crop: np.ndarray  # θ crop enlarged to the input size (paper 000 Fig. 2f)
    regions: dict[str, Any]  # JSON-ready: crop box, lesion patches, areas
    legend: list[tuple[str, str]] = field(default_factory=list)  # (label, "#rrggbb") of drawn outlines
    compare: tuple[np.ndarray, np.ndarray] | None = None  # (photo as the model sees it, overlay)
    render_seconds: float = 0.0

    def grid(self) -> np.ndarray:
        """The four panels and the enlarged crop side by side, titled, as one RGB image (the PNG download)."""
        images = [self.panels[m] for m in PANEL_METHODS] + [self.crop]
        titles = [self.captions[m] for m in PANEL_METHODS] + [f"theta={self.regions['theta']} crop"]
        return panel_grid(images, titles, columns=len(images))


def render_view(analysis, params: ViewParams) -> View:
    """Draw the four panels, the θ crop, the τ lesion mask and the outlines from cached maps.

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
    timings = analysis.method_timings
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
            seconds = timings.get(method)
            if seconds is not None:
                captions[method] = f"{title} · {seconds * 1000:.0f} ms"
            else:  # the engine computes all methods in one pass: show that pass's time
                captions[method] = f"{title} · {analysis.timings['explain'] * 1000:.0f} ms (shared pass)"
        else:
            reason = unavailable.get(method, "not computed for this model")
            panels[method] = analysis.memo(("unavailable", method),
                                           lambda: unavailable_picture(image.shape[:2], f"{title} unavailable: {reason}"))
            captions[method] = f"{title} — unavailable: {reason}"
    regions: dict[str, Any] = {"theta": int(params.theta), "tau": float(params.tau), "t": float(params.t)}
    crop = image
    legend: list[tuple[str, str]] = []
    if "guided_gradcam" in maps:  # paper 000 eq. 5 and Fig. 2 d–f
        found = analysis.memo(("crop", params.theta), lambda: attention_crop(maps["guided_gradcam"], params.theta, image))
        regions["crop_box"] = [int(v) for v in found.box]
        regions["crop_empty"] = bool(found.empty)
        crop = found.enlarged
        panel = draw_boxes(panels["guided_gradcam"], [found.box], CROP_COLOUR, 2)
        if params.outlines:
            outlines = analysis.memo(("outlines", params.tau),
                                     lambda: lesion_outlines(analysis.guided_by_label(), params.tau, fov_mask=fov))
            panel = draw_outlines(panel, outlines, 2, legend=False)
            legend = [(label, "#%02x%02x%02x" % colour) for label, colour in outlines.legend]
        panels["guided_gradcam"] = panel
    if "gmsm" in maps:  # paper 004 eq. 4: M = L_norm > τ, split into patches
        lesions = analysis.memo(("lesions", round(params.t, 3), params.tau),
                                lambda: lesion_mask(maps["gmsm"], params.tau, fov_mask=fov))
        panel = panels["gmsm"].copy()
        panel[lesions.mask] = (0.6 * panel[lesions.mask] + 0.4 * np.array(MASK_TINT, np.float32)).astype(np.uint8)
        panels["gmsm"] = draw_boxes(panel, [p.box for p in lesions.patches], PATCH_COLOUR, 1)
        inside = int(fov.sum()) or fov.size
        regions.update(lesion_patches=len(lesions.patches), lesion_area_px=int(lesions.total_area),
                       lesion_area_fraction=round(lesions.total_area / inside, 4),
                       lesion_boxes=[[int(v) for v in p.box] for p in lesions.patches[:50]])
    view = View(panels=panels, captions=captions, crop=crop, regions=regions, legend=legend,
                compare=(image, panels[params.compare]))
    view.render_seconds = time.perf_counter() - start
    return view


def unavailable_picture(shape: tuple[int, int], message: str) -> np.ndarray:
    """A dark tile with the reason a method is undefined written on it."""
    height, width = shape
    tile = np.full((height, width, 3), 40, np.uint8)
    chars = max(12, width // 11)
    for row, line in enumerate(textwrap.wrap(message, chars)[:12]):
        cv2.putText(tile, line, (8, 30 + 22 * row), cv2.FONT_HERSHEY_SIMPLEX, max(0.35, width / 1100),
                    (230, 230, 230), 1, cv2.LINE_AA)
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
