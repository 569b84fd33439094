"""The registered data set formats with their facts, or a data set folder checked against its layout and summarised.

    python -m fundus.datasets                      # every format: layout, annotation, official splits, licence
    python -m fundus.datasets diaretdb1-boxes      # one format's facts
    python -m fundus.datasets imagefolder ../shared/data/srahim-dr600 --preset srahim-dr600
    python -m fundus.datasets idrid-seg ../shared/data/idrid-seg-dev --read-images
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Sequence

from ..imageio import ImageError, load_image
from .base import FundusDataset
from .registry import ANNOTATIONS, FORMATS, LESION_ANNOTATIONS, DatasetFormat, load_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fundus.datasets",
        description="The registered data set formats and their facts (FORMAT: its own); FORMAT ROOT: the data set "
                    "loaded in that layout and summarised (samples, classes, patients, left-out images).",
    )
    parser.add_argument("format", nargs="?", choices=sorted(FORMATS), help="layout of the data set")
    parser.add_argument("root", nargs="?", help="the data set's folder")
    parser.add_argument("--split", default="train", help="split to load (default: train)")
    parser.add_argument("--preset", help="imagefolder preset, e.g. srahim-dr600")
    parser.add_argument("--missing", choices=("error", "skip"), help="listed but absent images: fail or leave out")
    parser.add_argument("--read-images", action="store_true",
                        help="also decode every photo with fundus.load_image and count the unreadable ones")
    return parser


def describe(spec: DatasetFormat) -> list[str]:
    """A format's facts as a few lines of text."""
    splits = f"splits {', '.join(spec.splits)}" if spec.splits else "no official split: the whole folder"
    read_as = [f"read as {spec.base}"] if spec.base else []
    named = f"{spec.name} ({spec.title})" if spec.title else spec.name
    lines = [f"{named}: {', '.join([spec.annotation, splits, *read_as])}",
             f"  files:      {spec.layout}",
             f"  annotation: {ANNOTATIONS[spec.annotation]}"]
    if spec.annotation in LESION_ANNOTATIONS:
        lines.append("  missing:    " + ("a lesion without its mask or box is absent" if spec.exhaustive
                                        else "a lesion without its mask or box is unknown (not every one is marked)"))
    return lines + [f"  licence:    {spec.licence or 'unknown, see the data set'}"]


def list_formats(names: Sequence[str]) -> None:
    """Print the facts of these formats."""
    for name in names:
        print("\n".join(describe(FORMATS[name])))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.root is None:
        list_formats([args.format] if args.format else sorted(FORMATS))
        return 0
    opts = {}
    if args.preset:
        opts["preset"] = args.preset
    if args.missing:
        opts["missing"] = args.missing
    try:
        ds = load_dataset(args.format, args.root, args.split, **opts)
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    summarise(ds)
    if args.read_images:
        count_unreadable(ds)
    return 0


def summarise(ds: FundusDataset) -> None:
    """Print a loaded data set's photos, patients, classes, near-duplicate groups and left-out photos."""
    print(f"{ds.format} {ds.split}: {len(ds)} photos of {len(ds.patients())} patients, task {ds.task}")
    for name, count in ds.class_counts().items():
        print(f"  {name:<24} {count}")
    grouped = {s.patient_id: len(s.meta["duplicates"]) for s in ds.samples if "duplicates" in s.meta}
    if grouped:
        sizes = Counter(grouped.values())
        print(f"  near-duplicate groups: {len(grouped)} ({sum(grouped.values())} photos; "
              + ", ".join(f"{n} of {size}" for size, n in sorted(sizes.items())) + ")")
    if ds.excluded:
        reasons = Counter(reason for _, reason in ds.excluded)
        for reason, count in reasons.items():
            print(f"  left out: {count} ({reason})")


def count_unreadable(ds: FundusDataset) -> None:
    """Decode every photo with ``fundus.load_image`` and print the unreadable ones."""
    from tqdm import tqdm

    unreadable = []
    for sample in tqdm(ds.samples, desc="reading photos", unit="photo"):
        try:
            load_image(sample.image)
        except (ImageError, OSError) as exc:
            unreadable.append((sample.image, exc))
    print(f"  unreadable photos: {len(unreadable)}")
    for path, exc in unreadable[:10]:
        print(f"    {path}: {exc}")


if __name__ == "__main__":
    sys.exit(main())
