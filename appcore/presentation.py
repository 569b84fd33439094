"""Texts and small pictures of the page that do not depend on the UI toolkit: the main result line, the
panel and slider texts, the colour bar, the model card, the region summary and the status line."""
from __future__ import annotations

import html
import logging
import re
from pathlib import Path

import cv2
import numpy as np

from fundus.datasets.labels import DR_ONLY, is_dr_grader, spelled_out
from fundus.tasks import FINDING_FLOOR, MULTICLASS, MULTILABEL, finding_thresholds, task_of

log = logging.getLogger("fundus_cam_zoo.app")
NOTICE = ("⚠️ **Research tool, not a medical device — not for clinical use.** The models and explanations "
          "shown here are not validated for diagnosis, screening or treatment.")
FOV_COLOUR = (0, 255, 0)
CROP_COLOUR = (255, 215, 0)
TITLE_HTML = ("<h1 style='margin:0'>Fundus CAM Zoo</h1><div>Explainable retinal fundus image classification: "
              "four explanation methods side by side, with the papers' region tools.</div>")
EXAMPLE_CREDITS = ("<small>Example photos: HRF (Budai et al. 2013) and IDRiD (Porwal et al. 2018), both CC BY 4.0, "
                   "downscaled and re-encoded; IDRiD lesion counts from the CODRAS boxes (C. von Csefalvay, CC BY-SA "
                   "4.0). Details: assets/examples/CREDITS.md.</small>")
# The Gradio page's own styles: a prominent main result, example captions that wrap, a model card that fits its
# column, the colour bar, and a phone layout (390 px) without horizontal overflow.
CSS = """
#main-result .main-result { padding: 10px 14px; border-radius: 8px; background: var(--block-background-fill);
  border: 1px solid var(--block-border-color); }
#main-result .main-line { font-size: 1.2rem; line-height: 1.45; }
#main-result .answer { font-weight: 700; }
#main-result .model { color: var(--body-text-color-subdued); }
#main-result .low-resolution { color: #b45309; }
#main-result .unlike-training, #main-result .no-field { color: #b45309; font-weight: 600; }
#main-result .scope { font-size: 0.9rem; margin-top: 4px; color: var(--body-text-color-subdued); }
.panel-notes { font-size: 0.85rem; color: var(--body-text-color-subdued); margin-top: 4px; }
#main-result .known { font-size: 0.9rem; margin-top: 4px; }
#main-result .credit { color: var(--body-text-color-subdued); }
#examples .grid-wrap { height: auto !important; max-height: none !important; min-height: 0 !important;
  overflow: visible !important; }
#examples .grid-container { grid-template-columns: repeat(4, minmax(0, 1fr)) !important;
  grid-template-rows: none !important; grid-auto-rows: auto !important; padding-top: 30px !important; }
#examples .gallery-item { height: auto !important; }
#examples .thumbnail-item { width: 100% !important; height: auto !important; display: flex !important;
  flex-direction: column; overflow: hidden; }
#examples .thumbnail-item img { width: 100% !important; height: auto !important; aspect-ratio: 1 / 1;
  object-fit: cover; }
#examples .caption-label { position: static !important; white-space: normal !important; overflow: visible !important;
  text-overflow: clip !important; max-width: 100% !important; width: 100%; margin: 0 !important;
  border-radius: 0 !important; font-size: 0.75rem; line-height: 1.2; text-align: center; padding: 2px 1px !important; }
#model-card { overflow-wrap: anywhere; }
#model-card pre, #model-card code { white-space: pre-wrap !important; word-break: break-word; }
.panel-head { min-height: 3.4em; }
.panel-head p { margin: 0 !important; font-size: 0.85rem; line-height: 1.3; }
.panel-head strong { font-size: 1rem; }
.colorbar { display: flex; align-items: center; gap: 8px; font-size: 0.85rem; flex-wrap: wrap; }
.colorbar .bar { display: inline-block; width: 220px; max-width: 45vw; height: 12px; border-radius: 3px; }
.region-summary { font-size: 0.95rem; }
.regions-note { font-style: italic; }
@media (max-width: 640px) {
  #main-result .main-line { font-size: 1.05rem; }
  #panels { flex-direction: row !important; flex-wrap: wrap !important; gap: 8px !important; }
  #panels > .column { flex: 1 1 calc(50% - 8px) !important; min-width: calc(50% - 8px) !important;
    max-width: calc(50% - 4px) !important; }
  .panel-head { min-height: 0; }
  .panel-head p { font-size: 0.75rem; }
  .gradio-container { padding-left: 6px !important; padding-right: 6px !important; }
}
"""

CLOSE_TO_CUTOFF = 0.15  # a grade value this close to a cut-off is called borderline
CLOSE_CALL = 0.15  # a multiclass answer whose runner-up is this close in probability is called a close call
LOW_RESOLUTION = 0.75  # a field of view narrower than this share of the model's input gets a low-resolution note


def example_caption(path: str | Path) -> str:
    name = Path(path).stem
    return "scikit-image retina (CC0)" if "retina" in name else name.replace("-", " ")


def card_markdown(config, model_key: str = "") -> str:
    """The model card: a short plain summary first (what it answers, how well, what it cannot do), then the key
    facts one per line (readable in a narrow column): paper, labels, decision rule and thresholds, data and licence,
    metrics, provenance, intended use."""
    if config is None:
        return "No model loaded."
    from zoo.localisation import card_lines
    from zoo.model import decision_rule

    try:
        from zoo.papers import PAPERS

        paper = PAPERS.get(config.paper)
        paper_text = f"{config.paper} — {paper.title}" if paper else (config.paper or "none")
    except ImportError:  # pragma: no cover - zoo is a hard dependency; keep the card readable anyway
        paper_text = config.paper or "none"
    lines = [
        f"**Model:** `{model_key or config.name}` — {config.arch}, {config.task}, input {config.input_size} px",
        f"**Paper:** {paper_text}",
        f"**Labels:** {', '.join(spelled_out(label) for label in config.labels)}",
        f"**Decision rule:** {decision_rule(config)}",
    ]
    if task_of(config.task) is MULTILABEL:
        lines.append("**Thresholds:** " + ", ".join(f"{label} {percent(t)}" for label, t in
                                                    zip(config.labels, finding_thresholds(config.thresholds)))
                     + f" (none below {FINDING_FLOOR:.0%}: a lower probability is never a finding)")
    if config.gradcam_is_cam:
        from zoo.config import GRADCAM_IS_CAM

        lines.append(f"**Grad-CAM:** {GRADCAM_IS_CAM}")
    lines += [
        f"**Training data:** {', '.join(config.datasets) or 'not stated'}",
        f"**Data licence:** {config.data_license or 'not stated'}",
        f"**Weights:** {config.pretrained}",
        f"**Region defaults:** θ = {config.theta}, τ = {config.tau:g}, t = {config.t:g}",
        f"**Map grid:** {map_grid_caption(config) or 'not stated'}",
    ]
    text = card_summary(config) + "\n\n" + "  \n".join(lines)
    metrics = "\n".join(f"- {k}: {_fmt(v)}" for k, v in config.metrics.items()) or "- not reported"
    text += f"\n\n**Metrics**\n\n{metrics}"
    localisation = card_lines(getattr(config, "localisation", None) or {})
    if localisation:  # the model card's table, its heading in this card's style
        text += "\n\n**Localisation**\n\n" + "\n".join(localisation[2:])
    if config.description:
        text += f"\n\n{config.description}"
    if config.reproduce:
        text += f"\n\n**Reproduce**\n\n```\n{config.reproduce}\n```"
    return text + ("\n\n**Not for clinical use.** A research model: its outputs and explanations must not be used "
                   "to diagnose, screen or treat anyone.")


def card_summary(config) -> str:
    """The card's opening in plain words: the model card's summary (``zoo.card.summary``: what it answers, what it
    cannot do) and its headline test result."""
    from zoo.card import summary

    headline = _headline(config.metrics)
    return summary(config) + (f" On held-out photos: {headline}." if headline else "")


def _headline(metrics: dict) -> str:
    """The headline figure of a card's metrics (the test split's, else the first): quadratic kappa, mean AUC or
    accuracy, in words ('' when there is none)."""
    names = {"quadratic_kappa": "quadratic kappa", "auc_mean": "mean AUC", "accuracy": "accuracy"}
    splits = [metrics.get("test"), metrics.get("held-out"), metrics]
    for split in (s for s in splits if isinstance(s, dict)):
        found = [f"{names[k]} {split[k]:.2f}" for k in names if isinstance(split.get(k), (int, float))]
        if found:
            return found[0]
    return ""


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_fmt(v)}" for k, v in value.items())
    return str(value)


def percent(p: float) -> str:
    """A probability as a percentage, with a decimal below 10 % (so that 1.7 % and 2.4 % stay apart)."""
    value = 100 * float(p)
    if 0 < value < 10:
        return f"{value:.1f} %"
    return f"{value:.0f} %"


# -- the main result -----------------------------------------------------------------------------------------

def answer_line(prediction: dict) -> tuple[str, str]:
    """(answer, uncertainty) of a prediction (``explain.pipeline.summarise``'s dict), as plain text.

    Grades: the grade and its label, then the value and its distance to the nearest cut-off (borderline when
    closer than ``CLOSE_TO_CUTOFF``). Multi-class: the label and its probability, then the runner-up.
    Multi-label: the decided labels with their probabilities, then their thresholds and any overruled label.
    """
    task = task_of(prediction["task"])
    if task.regression:
        value, cuts, grade = prediction["value"], prediction["grade_cutoffs"], prediction["grade"]
        labels = prediction.get("labels") or []
        answer = f"{prediction['label']} (grade {grade})"
        if not cuts:
            return answer, f"value {value:.2f}"
        index = min(range(len(cuts)), key=lambda i: abs(value - cuts[i]))
        cut, gap = cuts[index], value - cuts[index]
        if abs(gap) < CLOSE_TO_CUTOFF:
            between = f" between {labels[index]} and {labels[index + 1]}" if index + 1 < len(labels) else ""
            return answer, f"value {value:.2f}, close to the {cut:g} cut-off{between}: borderline"
        return answer, f"value {value:.2f}, {abs(gap):.2f} {'above' if gap > 0 else 'below'} the {cut:g} cut-off"
    probabilities = prediction["probabilities"]
    if task is MULTICLASS:
        ranked = sorted(probabilities.items(), key=lambda kv: -kv[1])
        (top, p), rest = ranked[0], ranked[1:]
        if not rest:
            return top, f"probability {percent(p)}"
        second, q = rest[0]
        close = " — a close call" if p - q < CLOSE_CALL else ""
        return top, f"probability {percent(p)}; next: {second} {percent(q)}{close}"
    thresholds = prediction["thresholds"]
    chosen = prediction["predicted"]
    if not chosen:
        top = max(probabilities, key=probabilities.get)
        return ("no label reached its threshold",
                f"most probable: {spelled_out(top)} {percent(probabilities[top])} (threshold "
                f"{percent(thresholds[top])})")
    answer = ", ".join(f"{spelled_out(label)} {percent(probabilities[label])}" for label in chosen)
    detail = ("thresholds " if len(chosen) > 1 else "threshold ") + ", ".join(percent(thresholds[label])
                                                                             for label in chosen)
    overruled = prediction.get("overruled") or []
    if overruled:
        detail += "; overruled: " + ", ".join(f"{spelled_out(label)} {percent(probabilities[label])} (threshold "
                                              f"{percent(thresholds[label])})" for label in overruled)
    return answer, detail


def low_resolution_note(analysis) -> str:
    """A note when the photo's field of view is much narrower than the model's input ('' otherwise)."""
    x0, _y0, x1, _y1 = analysis.pre.crop_box
    side = max(1, int(round(x1 - x0)))
    size = int(analysis.pre.image.shape[0])
    if side >= LOW_RESOLUTION * size:
        return ""
    return (f"low resolution: the eye is {side} px across, the model's input {size} px "
            f"(enlarged {size / side:.1f}×): fine lesions may be lost")


# No field of view found: the photo is still graded (a tightly cropped fundus photo has no dark border to find, and
# the fundus check decides what is a fundus photo), but the answer is marked as unreliable on its own line, since the
# crop, CLAHE and field-of-view normalisation the model was trained with did not happen as in training.
NO_FIELD = "no field of view found: cropped and normalised unlike the training photos, so the answer is unreliable"


def unlike_training_caution() -> str:
    """The main result's caution for a photo unlike the model's training photos (``zoo.ood``)."""
    from zoo.ood import CAUTION

    return f"⚠️ {CAUTION}"


def unlike_training_details(analysis) -> str:
    """The unlike-training check for the details: the photo's feature distance against the model's threshold ('' for
    a model without a reference)."""
    unlike = analysis.unlike_training
    if unlike is None:
        return ""
    from zoo.ood import CAUTION

    far = unlike["unlike_training"]
    flagged_by = unlike.get("flagged_by", ["model"] if far else [])
    text = (f"**Unlike-training check** — feature distance {unlike['distance']:.2f} "
            f"{'>' if 'model' in flagged_by else '≤'} threshold {unlike['threshold']:.2f}")
    where = "the target layer's pooled features against the training photos'"
    if "content_distance" in unlike:  # the model-independent distance (zoo.fundus_check_reference)
        text += (f"; content distance {unlike['content_distance']:.2f} {'>' if 'content' in flagged_by else '≤'} "
                 f"threshold {unlike['content_threshold']:.2f}")
        where += ", and the fundus check's content features against real fundus photos'"
    return f"{text}: {CAUTION if far else 'like the training photos'} ({where}, zoo.ood)"


def main_result(analysis, example=None) -> str:
    """The page's main result as HTML: one line (the answer, its uncertainty, a low-resolution note, the caution for
    a photo unlike the training photos), and for an example photo a second, smaller line with what its data set
    says about it."""
    answer, detail = answer_line(analysis.prediction)
    parts = [f'<span class="answer">{html.escape(answer)}</span>', f'<span class="detail">{html.escape(detail)}</span>']
    if not analysis.pre.fov_found:
        parts.append(f'<span class="no-field">⚠️ {html.escape(NO_FIELD)}</span>')
    note = low_resolution_note(analysis)
    if note:
        parts.append(f'<span class="low-resolution">⚠️ {html.escape(note)}</span>')
    if analysis.unlike_training and analysis.unlike_training["unlike_training"]:
        parts.append(f'<span class="unlike-training">{html.escape(unlike_training_caution())}</span>')
    model = html.escape(analysis.model_key)
    text = f'<div class="main-line"><span class="model">{model}:</span> ' + " · ".join(parts) + "</div>"
    if is_dr_grader(analysis.config.labels):
        text += f'<div class="scope">{html.escape(DR_ONLY)}</div>'
    if example is not None:
        seen = (f" This model was trained on {example.credit.split(' (')[0]} photos: it may have seen this one."
                if example.trained_on_by(analysis.config) else "")
        text += (f'<div class="known">Example photo — known: {html.escape(example.known)}. '
                 f'<span class="credit">{html.escape(example.credit)}.</span>{html.escape(seen)}</div>')
    return f'<div class="main-result">{text}</div>'


def timings_line(analysis, render_seconds: float | None = None) -> str:
    """The timings in one line (for the details, not the panel titles)."""
    t = analysis.timings
    line = (f"**Timings** — preprocessing {t['preprocess'] * 1000:.0f} ms · one network pass for all four maps "
            f"{t['explain'] * 1000:.0f} ms")
    if render_seconds is not None:
        line += f" · drawing {render_seconds * 1000:.0f} ms"
    return line


def map_grid_caption(config) -> str:
    """The model's map grid ("20 × 20 at 320 px"): how coarse the maps are before they are upsampled."""
    from zoo.architectures import map_grid_text

    try:
        return map_grid_text(config)
    except ValueError:  # an architecture this installation does not know
        return ""


def colorbar_html(colormap: str = "jet", grid: str = "", notes: dict[str, str] | None = None) -> str:
    """A colour bar for the heat maps: the colormap from 0 (no evidence) to 1 (the map's strongest); ``grid``: the
    model's map grid (``map_grid_caption``), said under the panels; ``notes``: the panels' notes (``View.notes``: a
    panel that repeats another, one with no map), below it, where the panels are seen."""
    from explain.overlay import heatmap

    ramp = heatmap(np.linspace(0, 1, 11, dtype=np.float32)[None].repeat(2, 0), colormap)[0]
    stops = ", ".join(f"rgb({r},{g},{b}) {i * 10}%" for i, (r, g, b) in enumerate(ramp.tolist()))
    return ('<div class="colorbar"><span>low</span>'
            f'<span class="bar" style="background: linear-gradient(to right, {stops})"></span>'
            '<span>high evidence for the explained output (each map scaled to its maximum)</span>'
            + (f'<span>· each map is a {grid} grid, upsampled to the photo</span>' if grid else "")
            + '</div>' + panel_notes_html(notes))


def panel_notes_html(notes: dict[str, str] | None) -> str:
    """The panels' notes as one small block ('' for none)."""
    if not notes:
        return ""
    return '<div class="panel-notes">' + "<br>".join(f"ℹ️ {html.escape(note)}" for note in notes.values()) + "</div>"


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
    graham = " · local average colour subtracted (Graham)" if getattr(cfg, "graham", False) else ""
    text = (f"**Preprocessing** — file: {file_note or 'photo'} · field of view: {fov} · crop: {crop} · "
            f"CLAHE: {clahe}{graham} · input {size}×{size} px")
    unlike = unlike_training_details(analysis)
    return f"{text}\n\n{unlike}" if unlike else text


def prediction_title(analysis) -> str:
    """The chart's title: the answer and its uncertainty (``answer_line``)."""
    answer, detail = answer_line(analysis.prediction)
    return f"{answer} · {detail}"


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
    """The region summary (θ crop box and its share of the image, τ patch count and area, or why no region is
    drawn) and the lesion-outline legend (one coloured swatch per label, paper 001 Fig. 6c's colours)."""
    lines = []
    if regions and regions.get("note"):
        lines.append(f'<span class="regions-note">{html.escape(regions["note"])}</span>')
    if regions and "crop_box" in regions:
        x0, y0, x1, y1 = regions["crop_box"]
        share = regions.get("crop_fraction")
        if regions.get("crop_empty"):
            note = " (no pixel above θ: whole image; lower θ)"
        elif share is not None and share < 0.05:
            note = f", {100 * share:.1f}% of the image: lower θ for a wider crop"
        elif share is not None:
            note = f", {100 * share:.0f}% of the image"
        else:
            note = ""
        lines.append(f"<b>θ = {regions['theta']}</b> attention crop: ({x0}, {y0})–({x1}, {y1}){note}")
    if regions and "lesion_patches" in regions:
        lines.append(f"<b>τ = {regions['tau']:.2f}</b> lesion mask: {regions['lesion_patches']} patches, "
                     f"{regions['lesion_area_px']} px ({100 * regions['lesion_area_fraction']:.1f}% of the field of view)")
    if legend:
        items = "".join(
            f'<span style="margin-right:1em"><span style="display:inline-block;width:1em;height:1em;'
            f'background:{html.escape(colour)};vertical-align:middle;margin-right:.3em"></span>'
            f'{html.escape(outline_label(label))}</span>' for label, colour in legend)
        lines.append(f'<span class="outline-legend"><b>Outlines (the map above τ):</b> {items}</span>')
    return "<div class=\"region-summary\">" + "<br>".join(lines) + "</div>" if lines else ""


def outline_label(label: str) -> str:
    """What an outline's colour stands for: a lesion by name ("haemorrhages (HM)"); for any other label (a grade,
    a disease) the evidence for it, not the thing itself ("evidence for Severe", not "Severe")."""
    named = spelled_out(label)
    return named if named != label else f"evidence for {label}"


# -- the page's status line --------------------------------------------------------------------------
INTERNAL_ERROR = ("Something went wrong on the server; the error was logged. Try again, or use another photo "
                  "or model.")
# An absolute path in a message (not a URL, not a label like "BP/MA"): never shown to a visitor.
_PATH = re.compile(r"(?<![\w:/\\~.-])(?:~|\.\.?)?[/\\][^\s'\"`,;)]+")


def error_message(exc: BaseException) -> str | None:
    """The status line's text for an error that is the visitor's (``appcore.user_errors``): a photo that cannot be
    read or is no fundus photograph, a model that cannot be had, a value that cannot be used. None for anything
    else, a ``ValueError`` from deep inside included: an unexpected error, to be logged and shown as
    ``INTERNAL_ERROR``.

    Paths that a message might still hold are cut out: the page never reveals the server's file system.
    """
    from appcore.user_errors import is_users

    if is_users(exc) and str(exc).strip():
        return _PATH.sub("…", str(exc).strip())
    return None


def message_of(exc: BaseException) -> str:
    """What a visitor reads about an exception: a user error's own message (``error_message``); anything else is
    logged with its traceback, so that a bug is not taken for the visitor's mistake, and shown as a generic line."""
    message = error_message(exc)
    if message is None:
        log.exception("unexpected error", exc_info=exc)
        return INTERNAL_ERROR
    return message


def status_error(message: str) -> str:
    """The status line for an error: it stays on the page until the next action succeeds."""
    return f"❌ {message}"


def status_warnings(notes: list[str]) -> str:
    """The status line for a photo's warnings (empty when there are none)."""
    return "\n\n".join(f"⚠️ **{note}**" for note in notes)
