"""Texts and small pictures of the page that do not depend on the UI toolkit."""
from __future__ import annotations

import html
import re
from pathlib import Path

import cv2
import numpy as np

NOTICE = ("⚠️ **Research tool, not a medical device — not for clinical use.** The models and explanations "
          "shown here are not validated for diagnosis, screening or treatment.")
FOV_COLOUR = (0, 255, 0)
CROP_COLOUR = (255, 215, 0)


def example_caption(path: str | Path) -> str:
    name = Path(path).stem
    return "scikit-image retina (CC0)" if "retina" in name else name.replace("-", " ")


def card_markdown(config, model_key: str = "") -> str:
    """The model card's key facts: paper, labels, data and licence, metrics, provenance, intended use."""
    if config is None:
        return "No model loaded."
    try:
        from zoo.papers import PAPERS

        paper = PAPERS.get(config.paper)
        paper_text = f"{config.paper} — {paper.title}" if paper else (config.paper or "none")
    except ImportError:  # pragma: no cover - zoo is a hard dependency; keep the card readable anyway
        paper_text = config.paper or "none"
    metrics = ", ".join(f"{k}: {_fmt(v)}" for k, v in config.metrics.items()) or "not reported"
    rows = [
        ("model", f"`{model_key or config.name}` ({config.arch}, {config.task}, input {config.input_size} px)"),
        ("paper", paper_text),
        ("labels", ", ".join(config.labels)),
        ("training data", ", ".join(config.datasets) or "not stated"),
        ("data licence", config.data_license or "not stated"),
        ("metrics", metrics),
        ("weights", config.pretrained),
        ("reproduce", f"`{config.reproduce}`" if config.reproduce else "not stated"),
    ]
    table = "\n".join(f"| {k} | {v} |" for k, v in rows)
    description = f"\n\n{config.description}" if config.description else ""
    return (f"| | |\n|---|---|\n{table}{description}\n\n**Not for clinical use.** A research model: its outputs "
            "and explanations must not be used to diagnose, screen or treat anyone.")


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_fmt(v)}" for k, v in value.items()) + "}"
    return str(value)


def warnings_of(analysis) -> list[str]:
    """User-facing warnings of a preprocessed photo (e.g. no fundus field found)."""
    notes = list(analysis.pre.warnings)
    if not analysis.pre.fov_found and not any("field" in n.lower() for n in notes):
        notes.append("No fundus field of view was found in this photo: the results are unlikely to mean anything.")
    return notes


def preprocessing_markdown(analysis, file_note: str = "") -> str:
    pre, cfg = analysis.pre, analysis.config.preprocessing
    fov = "found" if pre.fov_found else "**not found** (warning above)"
    clahe = f"on (clip {cfg.clahe_clip}, {cfg.clahe_tile}×{cfg.clahe_tile} tiles)" if cfg.clahe else "off"
    crop = "off" if not cfg.fov_crop else f"{tuple(int(v) for v in pre.crop_box)} in photo pixels"
    size = pre.image.shape[0]
    lines = [f"**Preprocessing** — file: {file_note or 'photo'} · field of view: {fov} · crop: {crop} · "
             f"CLAHE: {clahe} · input {size}×{size} px · preprocess {analysis.timings['preprocess'] * 1000:.0f} ms, "
             f"network pass {analysis.timings['explain'] * 1000:.0f} ms"]
    return "\n".join(lines)


def prediction_title(analysis) -> str:
    pred = analysis.prediction
    if pred["task"] == "grade-regression":
        return f"grade {pred['grade']} ({pred['label']}), value {pred['value']:.2f}"
    chosen = ", ".join(pred["predicted"]) or "no label over its threshold"
    return f"predicted: {chosen}"


def photo_with_crop(analysis) -> np.ndarray:
    """The original photo (display size) with the square crop around the field of view drawn."""
    photo = analysis.photo.copy()
    x0, y0, x1, y1 = (int(round(v * analysis.photo_scale)) for v in analysis.pre.crop_box)
    thickness = max(2, photo.shape[1] // 200)
    cv2.rectangle(photo, (x0, y0), (x1 - 1, y1 - 1), CROP_COLOUR, thickness)
    return photo


def model_input_with_fov(analysis) -> np.ndarray:
    """The photo as the model sees it, with the detected field of view outlined."""
    image = analysis.pre.image.copy()
    contours, _ = cv2.findContours(analysis.pre.fov_mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(image, contours, -1, FOV_COLOUR, 1, cv2.LINE_AA)
    return image


def legend_html(legend: list[tuple[str, str]], regions: dict | None = None) -> str:
    """The region summary (θ crop box, τ patch count and area) and the lesion-outline legend
    (one coloured swatch per label, paper 001 Fig. 6c's colours)."""
    lines = []
    if regions and "crop_box" in regions:
        x0, y0, x1, y1 = regions["crop_box"]
        note = " (no pixel above θ: whole image)" if regions.get("crop_empty") else ""
        lines.append(f"<b>θ = {regions['theta']}</b> attention crop: ({x0}, {y0})–({x1}, {y1}){note}")
    if regions and "lesion_patches" in regions:
        lines.append(f"<b>τ = {regions['tau']:.2f}</b> lesion mask: {regions['lesion_patches']} patches, "
                     f"{regions['lesion_area_px']} px ({100 * regions['lesion_area_fraction']:.1f}% of the field of view)")
    if legend:
        items = "".join(
            f'<span style="margin-right:1em"><span style="display:inline-block;width:1em;height:1em;'
            f'background:{html.escape(colour)};vertical-align:middle;margin-right:.3em"></span>{html.escape(label)}</span>'
            for label, colour in legend)
        lines.append(f'<span class="outline-legend"><b>Outlines:</b> {items}</span>')
    return "<div class=\"region-summary\">" + "<br>".join(lines) + "</div>" if lines else ""


# -- the page's status line --------------------------------------------------------------------------
INTERNAL_ERROR = ("Something went wrong on the server; the error was logged. Try again, or use another photo "
                  "or model.")
# An absolute path in a message (not a URL, not a label like "BP/MA"): never shown to a visitor.
_PATH = re.compile(r"(?<![\w:/\\~.-])(?:~|\.\.?)?[/\\][^\s'\"`,;)]+")


def error_message(exc: BaseException) -> str | None:
    """The status line's text for a library error a visitor can cause: a rejected photo (``ImageError``,
    ``PhotoRejected``), a model that cannot be had (``ModelUnavailable``), an invalid value (``ValueError``).
    None for anything else: an unexpected error, to be logged and shown as ``INTERNAL_ERROR``.

    Paths that a message might still hold are cut out: the page never reveals the server's file system.
    """
    from appcore.catalogue import ModelUnavailable

    if isinstance(exc, (ModelUnavailable, ValueError)) and str(exc).strip():
        return _PATH.sub("…", str(exc).strip())
    return None


def status_error(message: str) -> str:
    """The status line for an error: it stays on the page until the next action succeeds."""
    return f"❌ {message}"


def status_warnings(notes: list[str]) -> str:
    """The status line for a photo's warnings (empty when there are none)."""
    return "\n\n".join(f"⚠️ **{note}**" for note in notes)
