"""Registry of data set layouts: ``load_dataset("aptos", root)`` picks the loader by name."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from .base import FundusDataset, Loader

FORMATS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator: make a loader ``fn(root: Path, split: str, **opts) -> FundusDataset`` loadable by name."""

    def add(fn: Loader) -> Loader:
        if name in FORMATS:
            raise ValueError(f"data set format {name!r} is already registered")
        FORMATS[name] = fn
        return fn

    return add


def load_dataset(fmt: str, root: str | Path, split: str = "train", **opts: Any) -> FundusDataset:
    """Load the annotations of one split of a data set in its official layout.

    Args:
        fmt: one of ``FORMATS`` (aptos, eyepacs, idrid-grading, idrid-seg, rfmid, odir,
            imagefolder, yolo, hrf).
        root: the data set's folder, laid out as its official archive.
        split: "train", "val"/"test" where the layout has them, or "all" for layouts without
            official splits (imagefolder, yolo, hrf).
        **opts: options of that loader (see its docstring), e.g. ``missing="skip"``.

    Raises:
        ValueError: unknown format or split.
        FileNotFoundError: the root, an annotation file or (``missing="error"``) an image is missing.
        DatasetError: an annotation file lacks a column or holds a bad value (named in the message).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown data set format {fmt!r}; known: {', '.join(sorted(FORMATS))}")
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root}")
    return FORMATS[fmt](root, split, **opts)
