"""Data set formats and their facts, registered where each is defined: ``load_dataset("aptos", root)``.

Each format module decorates its loader with ``@register(name, layout=…, annotation=…, licence=…, splits=…)``;
``fundus.datasets`` imports every module of its package, so a new format is one new file. A named data set read
in another format's layout (srahim-dr600, diaretdb1-boxes) registers with ``base=`` that format. The facts are
written here once: ``python -m fundus.datasets`` lists them, the label rules (``labels.sample_target``) pick
their converter by ``annotation``, training's model cards take the ``licence``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from fundus.registration import Registry

from .base import FundusDataset, Loader

# Annotation kinds: what a format's labels say about a photo. Each has its converter into a model's labels.
DR_GRADE = "dr-grade"
CLASS = "class"
DIAGNOSES = "diagnoses"
LESION_MASKS = "lesion-masks"
LESION_BOXES = "lesion-boxes"
ANNOTATIONS = {
    DR_GRADE: "one DR grade a photo (International Clinical DR scale)",
    CLASS: "one class a photo, known by its name (class folders, file-name suffixes)",
    DIAGNOSES: "several diagnoses a photo (multi-hot columns)",
    LESION_MASKS: "lesion types present, from per-photo lesion masks",
    LESION_BOXES: "lesion types present, from lesion boxes",
}
LESION_ANNOTATIONS = (LESION_MASKS, LESION_BOXES)


@dataclass(frozen=True)
class DatasetFormat:
    """One registered format and its facts.

    Attributes:
        load: ``fn(root: Path, split: str, **opts) -> FundusDataset``.
        layout: where the photos and labels lie, in one line.
        annotation: an ``ANNOTATIONS`` kind.
        licence: the data's licence for model cards ("": unknown, see the data set).
        splits: the layout's own splits; () = none, the whole folder is read (split "all").
        exhaustive: every lesion of an annotated type is marked, so a photo without its mask or box has none
            (False: its absence says nothing, e.g. DIARETDB1's boxes; ``labels.incompletely_boxed``).
        base: the format whose layout a named data set is read in ("" for a layout of its own).
        title: the data set's name for a reader ("IDRiD" for idrid-seg); "" for a layout any data set may have
            (imagefolder, yolo), where the folder's name says it.
    """

    name: str
    load: Loader
    layout: str
    annotation: str
    licence: str
    splits: tuple[str, ...] = ()
    exhaustive: bool = True
    base: str = ""
    title: str = ""

    @property
    def default_split(self) -> str:
        """The split read when none is asked for: the first official one, else the whole folder."""
        return self.splits[0] if self.splits else "all"


FORMATS: Registry = Registry("data set format", "fundus.datasets", skip=("torch_dataset",))  # torch on demand


def register(name: str, *, layout: str, annotation: str, licence: str, splits: tuple[str, ...] = (),
             exhaustive: bool = True, base: str = "", title: str = "") -> Callable[[Loader], Loader]:
    """Decorator: make a loader ``fn(root: Path, split: str, **opts) -> FundusDataset`` loadable by ``name``, with
    its facts (see :class:`DatasetFormat`).

    Raises:
        ValueError: a taken name, an unknown annotation kind, or a ``base`` that is not registered.
    """
    if annotation not in ANNOTATIONS:
        raise ValueError(f"format {name!r}: annotation must be one of {', '.join(ANNOTATIONS)}, got {annotation!r}")
    if base and base not in FORMATS:
        raise ValueError(f"format {name!r}: base format {base!r} is not registered (import its loader first)")

    def add(load: Loader) -> Loader:
        FORMATS.add(name, DatasetFormat(name, load, layout, annotation, licence, tuple(splits), exhaustive, base,
                                        title))
        return load

    return add


def format_of(fmt: str, root: str | Path | None = None, *, preset: str | None = None) -> DatasetFormat:
    """The registered format that ``--format fmt`` (with ``--preset``) means for the folder ``root``.

    - ``preset``: the data set of that name when it is read in ``fmt``'s layout (``imagefolder`` + srahim-dr600);
      a preset of another layout is for another ``--data`` and left out here.
    - A layout's own name on a folder named after a data set registered with that layout's own loader
      (``yolo`` on ``…/diaretdb1-boxes``) is that data set, with a warning: the same photos and labels, and its
      facts (licence, whether a missing box is absent). Commands written before those data sets had a format
      (the shipped models' ``reproduce``) read as they did.

    Raises:
        ValueError: an unknown format or preset.
    """
    spec = FORMATS.lookup(fmt)
    if preset:
        named = FORMATS.lookup(preset)
        return named if named.base == spec.name else spec
    named = FORMATS.get(Path(root).name) if root is not None else None
    if named is not None and named.base == spec.name and named.load is spec.load:
        warnings.warn(f"{root} is read as the data set {named.name!r} (its licence and label facts); "
                      f"say --format {named.name}", UserWarning)  # attributed here: shown once per data set
        return named
    return spec


def data_title(fmt: str, folder: str) -> str:
    """A data set's name for a reader: its format's ``title`` ("IDRiD" for idrid-seg), else the folder's name (an
    unknown format included: a title is only ever read, never relied on)."""
    spec = FORMATS.get(fmt)
    return spec.title if spec is not None and spec.title else folder


def annotated_formats() -> tuple[str, ...]:
    """The formats whose photos carry lesion masks or boxes (localisation, the localisation term)."""
    return tuple(sorted(name for name, spec in FORMATS.items() if spec.annotation in LESION_ANNOTATIONS))


def load_dataset(fmt: str, root: str | Path, split: str = "train", **opts: Any) -> FundusDataset:
    """Load the annotations of one split of a data set in its official layout.

    Args:
        fmt: a registered format (``python -m fundus.datasets`` lists them with their facts).
        root: the data set's folder, laid out as its official archive.
        split: "train", "val"/"test" where the layout has them, or "all" for layouts without
            official splits (imagefolder, yolo, hrf).
        **opts: options of that loader (see its docstring), e.g. ``missing="skip"``; ``preset``: see
            :func:`format_of`.

    Returns:
        The data set, its ``format`` the registered name whose facts apply to it.

    Raises:
        ValueError: unknown format, preset or split.
        FileNotFoundError: the root, an annotation file or (``missing="error"``) an image is missing.
        DatasetError: an annotation file lacks a column or holds a bad value (named in the message).
    """
    spec = format_of(fmt, root, preset=opts.pop("preset", None))
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"data set folder not found: {root}")
    dataset = spec.load(root, split, **opts)
    dataset.format = spec.name
    return dataset
