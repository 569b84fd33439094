"""Example photos for the app, generated at start-up (nothing is committed, nothing from ../shared/data).

Two redistributable sources: the project's synthetic fundus-like images with lesions
(``fundus.make_fundus``) and the CC0 retina photograph that scikit-image ships (``skimage.data.retina``).
"""
from __future__ import annotations

import os
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
