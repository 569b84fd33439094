"""The downloads: the panel grid (PNG), the raw maps (.npy) and a JSON that reproduces the view, for both front
ends (Gradio writes them into a folder, Streamlit hands each to a download button)."""
from __future__ import annotations

import io
import json
import shlex
import tempfile
from pathlib import Path

import cv2
import numpy as np

from explain.cli import target_spec
from explain.controls import CONTROLS
from explain.pipeline import Analysis
from explain.views import View, ViewParams


def view_record(analysis: Analysis, params: ViewParams, view: View, image_name: str = "photo.png") -> dict:
    """Everything needed to reproduce the view: model id and revision, target, parameters, prediction.

    Args:
        analysis: the cached network pass.
        params: the controls of the view.
        view: the rendered view (its regions: crop box, lesion patches).
        image_name: the photo's file name, used in the reproduce command.
    """
    model_id, _, revision = analysis.model_key.partition("@")
    config = analysis.config
    record = {
        "model": {"id": model_id, "revision": revision or None, "name": config.name, "arch": config.arch,
                  "paper": config.paper, "task": config.task, "labels": list(config.labels)},
        "image": {"name": image_name, "sha": analysis.key[0], "input_size": int(analysis.pre.image.shape[0]),
                  "crop_box": [int(v) for v in analysis.pre.crop_box], "fov_found": bool(analysis.pre.fov_found),
                  "warnings": list(analysis.pre.warnings)},
        "target": analysis.request,
        "target_spec": target_spec(analysis.target),
        "explained_classes": [int(c) for c in analysis.explanation.targets[0]],
        "parameters": params.record(),
        "prediction": analysis.prediction,
        "regions": view.regions,
        "maps_npy": {"order": list(view.panels),
                     "shape": f"({len(view.panels)}, S, S) float32 in [0, 1]; NaN = unavailable",
                     "unavailable": analysis.unavailable},
        "timings_s": {k: round(v, 4) for k, v in analysis.timings.items()},
        "not_for_clinical_use": True,
    }
    record["reproduce"] = reproduce_command(record)
    return record


def reproduce_command(record: dict) -> str:
    """The ``python -m explain`` command line that draws the view of a record: the same pipeline, so its
    ``*_panel.png`` is the panels download, pixel for pixel, and its ``*.npy`` maps the maps download."""
    params = record["parameters"]
    words = ["python", "-m", "explain", record["model"]["id"], record["image"]["name"]]
    if record["model"]["revision"]:
        words += ["--revision", record["model"]["revision"]]
    words += ["--target", record["target_spec"], "--methods", ",".join(record["maps_npy"]["order"])]
    for control in CONTROLS:
        if control.command_line:
            value = params[control.name]
            words += [f"--{control.name}" if value else f"--no-{control.name}"] if control.type is bool else \
                [f"--{control.name}", str(value)]
    return shlex.join(words + ["--out", "explained"])


# The downloads' content types (a .npy file has no registered one).
MIME_TYPES = {".png": "image/png", ".npy": "application/octet-stream", ".json": "application/json"}


def downloads(analysis: Analysis, params: ViewParams, view: View, image_name: str = "photo.png") -> dict:
    """The view's downloads, ``{file name: function returning its bytes}``, each made only when asked for:
    ``<stem>-panels.png`` (the panel grid), ``<stem>-maps.npy`` (the raw maps of the view's panels, (N, S, S)
    float32, NaN = unavailable) and ``<stem>-view.json`` (``view_record``)."""
    stem = Path(image_name).stem or "photo"

    def panels() -> bytes:
        done, png = cv2.imencode(".png", cv2.cvtColor(view.grid(), cv2.COLOR_RGB2BGR))
        if not done:
            raise ValueError("could not encode the panel grid as PNG")
        return png.tobytes()

    def maps() -> bytes:
        found = analysis.maps(params.t)
        size = analysis.pre.image.shape[:2]
        stack = np.stack([found.get(m, np.full(size, np.nan, np.float32)) for m in view.panels]).astype(np.float32)
        buffer = io.BytesIO()
        np.save(buffer, stack, allow_pickle=False)
        return buffer.getvalue()

    def record() -> bytes:
        return (json.dumps(view_record(analysis, params, view, image_name), indent=2) + "\n").encode()

    return {f"{stem}-panels.png": panels, f"{stem}-maps.npy": maps, f"{stem}-view.json": record}


def write_downloads(analysis: Analysis, params: ViewParams, view: View, folder: str | Path | None = None,
                    image_name: str = "photo.png") -> list[Path]:
    """Write the view's ``downloads`` into ``folder``; return their paths (panels PNG, maps .npy, view JSON).

    Args:
        folder: where to write (default: a new temporary folder).
    """
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="fundus-cam-zoo-"))
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, make in downloads(analysis, params, view, image_name).items():
        (folder / name).write_bytes(make())
        written.append(folder / name)
    return written
