"""Example photos for the app.

``shipped_examples``: the real photographs in ``assets/examples`` (HRF and IDRiD, CC BY 4.0, downscaled to
≤ 512 px and re-encoded; ``assets/examples/CREDITS.md``), each with the diagnosis its data set gives, so
that a visitor can see where a model is right and where it is not. ``examples.json`` lists them, their
captions, credits and the photo the page opens on.

``ensure_examples``: generated ones (the project's synthetic fundus-like images with lesions and the CC0
retina photograph that scikit-image ships), written into a cache folder at start-up; for experiments and
for front ends that have not moved to the real photos yet.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

# (file name, make_fundus keyword arguments): a plain field, an IDRiD-like notched photo, a dark one.
SYNTHETIC_EXAMPLES = (
    ("synthetic-fundus-1.png", {"seed": 1}),
    ("synthetic-fundus-notched.png", {"seed": 7, "border": "notched"}),
    ("synthetic-fundus-dark.png", {"seed": 21, "exposure": 0.6}),
)
RETINA_EXAMPLE = "skimage-retina-cc0.jpg"
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "assets" / "examples"


@dataclass(frozen=True)
class Example:
    """One shipped example photo and what its data set says about it."""

    path: Path
    caption: str  # a few words, shown under the thumbnail
    known: str  # the known diagnosis or findings, as the data set gives them
    dataset: str  # the data set's name as model configs list it (``ModelConfig.datasets``)
    credit: str  # source and licence

    def trained_on_by(self, config) -> bool:
        """Whether the model's training data include this photo's data set (it may have seen this photo)."""
        return self.dataset in (getattr(config, "datasets", None) or [])


def shipped_examples(folder: str | Path | None = None) -> tuple[list[Example], int]:
    """The example photos listed in ``folder/examples.json`` (default ``assets/examples``) and the index of the
    one the page opens on.

    Raises:
        FileNotFoundError: no ``examples.json``, or a photo it lists is missing.
    """
    folder = Path(folder) if folder is not None else EXAMPLES_DIR
    listing = json.loads((folder / "examples.json").read_text())
    examples = []
    for item in listing["examples"]:
        path = folder / item["file"]
        if not path.is_file():
            raise FileNotFoundError(f"example photo {path} listed in examples.json is missing")
        examples.append(Example(path, item["caption"], item["known"], item["dataset"], item["credit"]))
    files = [e.path.name for e in examples]
    start = files.index(listing["start"]) if listing.get("start") in files else 0
    return examples, start


def cache_dir() -> Path:
    """The app's cache folder: ``$FUNDUS_APP_CACHE``, else ``$XDG_CACHE_HOME/fundus-cam-zoo`` (~/.cache)."""
    if os.environ.get("FUNDUS_APP_CACHE"):
        return Path(os.environ["FUNDUS_APP_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fundus-cam-zoo"


def _synthetic(size: int, options: dict) -> np.ndarray:
    from fundus import make_fundus

    rgb, _info = make_fundus(size, **options)
    return rgb


def _retina(size: int) -> np.ndarray:
    from skimage.data import retina

    return cv2.resize(retina(), (size, size), interpolation=cv2.INTER_AREA)


def ensure_examples(folder: str | Path | None = None, size: int = 512) -> list[Path]:
    """Write the example photos into ``folder`` (default: ``cache_dir()/examples``) unless already there.

    Args:
        folder: where to write them.
        size: side of the square examples in pixels (>= 64).

    Returns:
        The example files, synthetic ones first, then the CC0 retina photograph.

    Raises:
        ValueError: ``size`` below 64.
    """
    if size < 64:
        raise ValueError(f"example size must be >= 64 px, got {size}")
    folder = Path(folder) if folder is not None else cache_dir() / "examples" / str(size)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, options in SYNTHETIC_EXAMPLES:
        path = folder / name
        if not path.exists():
            _write_rgb(path, _synthetic(size, options))
        paths.append(path)
    path = folder / RETINA_EXAMPLE
    if not path.exists():
        _write_rgb(path, _retina(size), [cv2.IMWRITE_JPEG_QUALITY, 92])
    paths.append(path)
    return paths


def _write_rgb(path: Path, rgb: np.ndarray, params: list[int] | None = None) -> None:
    # Write to a temporary name first so that a concurrent start never reads a half-written file.
    tmp = path.with_name(f".{path.stem}.{os.getpid()}{path.suffix}")
    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params or []):
        raise OSError(f"could not write example image {tmp}")
    os.replace(tmp, path)
