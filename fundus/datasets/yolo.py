"""YOLO box annotations: images with ``<stem>.txt`` lines ``class cx cy w h`` (normalised) and a ``.names`` file."""
from __future__ import annotations

from pathlib import Path

from fundus.tasks import MULTILABEL

from .base import DatasetError, FundusDataset, Sample, list_images, multi_hot, patient_from_stem
from .registry import LESION_BOXES, register


def read_names(path: Path) -> list[str]:
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    if not names:
        raise DatasetError(f"{path.name} lists no class names")
    return names


def read_boxes(path: Path, names: list[str]) -> list[tuple[str, float, float, float, float]]:
    """Boxes of one YOLO label file as ``(class_name, x0, y0, x1, y1)`` normalised and clipped to [0, 1].

    Raises:
        DatasetError: naming the file and line of a malformed line or an unknown class.
    """
    boxes = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        try:
            if len(parts) < 5:
                raise ValueError
            cls = int(parts[0])
            cx, cy, w, h = (float(v) for v in parts[1:5])
        except ValueError:
            raise DatasetError(f"{path.name} line {number}: expected 'class cx cy w h', got {line!r}") from None
        if not 0 <= cls < len(names):
            raise DatasetError(f"{path.name} line {number}: class {cls} not in the .names file ({len(names)} classes)")
        clip = lambda v: min(max(v, 0.0), 1.0)  # noqa: E731
        boxes.append((names[cls], clip(cx - w / 2), clip(cy - h / 2), clip(cx + w / 2), clip(cy + h / 2)))
    return boxes


# An unknown annotator may have boxed some lesions only: a missing box is unknown unless a data set says otherwise.
@register("yolo", layout="images/NNNN.jpg + images/NNNN.txt or labels/NNNN.txt ('class cx cy w h') + a *.names file",
          annotation=LESION_BOXES, licence="see the data set", exhaustive=False)
def load_yolo(root: Path, split: str = "train", *, names: str | Path | None = None) -> FundusDataset:
    """YOLO layout (``diaretdb1-boxes``, ``idrid-grading-boxes``): ``images/NNNN.jpg`` + ``images/NNNN.txt`` (or
    ``labels/NNNN.txt``; ``images/<split>/`` + ``labels/<split>/`` when split folders exist) and a
    ``*.names`` file (one class per line) in ``root``.

    Labels are multilabel: which classes have at least one box. An image without a label file has
    no boxes (YOLO's convention for background images).

    Args:
        split: a split folder name when present, else "train"/"all" = every image.
        names: the class-names file (default: the single ``*.names`` / ``classes.txt`` in ``root``).
    """
    if names is not None:
        names_path = Path(names)
    else:
        candidates = sorted(root.glob("*.names")) or sorted(root.glob("classes.txt"))
        if len(candidates) != 1:
            raise FileNotFoundError(f"expected one .names file in {root}, found {[c.name for c in candidates]}")
        names_path = candidates[0]
    if not names_path.is_file():
        raise FileNotFoundError(f"YOLO names file not found: {names_path}")
    classes = read_names(names_path)
    image_dir = root / "images" if (root / "images").is_dir() else root
    label_dir = root / "labels"
    if (image_dir / split).is_dir():
        image_dir, label_dir = image_dir / split, label_dir / split
    elif split not in ("train", "all"):
        raise FileNotFoundError(f"split folder not found: {image_dir / split}")
    samples = []
    for image in list_images(image_dir):
        txt = image.with_suffix(".txt")
        if not txt.is_file():
            txt = label_dir / f"{image.stem}.txt"
        boxes = read_boxes(txt, classes) if txt.is_file() else []
        present = sorted({classes.index(b[0]) for b in boxes})
        meta = {"label_file": str(txt) if txt.is_file() else None}
        samples.append(Sample(image, multi_hot(present, len(classes)), boxes=boxes,
                              patient_id=patient_from_stem(image.stem), meta=meta))
    if not samples:
        raise DatasetError(f"no images found in {image_dir}")
    return FundusDataset("yolo", root, split, samples, classes, MULTILABEL.name)
