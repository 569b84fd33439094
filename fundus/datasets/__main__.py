"""Check a data set folder against its official layout and summarise it.

    python -m fundus.datasets imagefolder ../shared/data/srahim-dr600 --preset srahim-dr600
    python -m fundus.datasets idrid-seg ../shared/data/idrid-seg-dev --read-images
"""
from __future__ import annotations

import argparse
import sys
from collections import Counter
from typing import Sequence

from ..imageio import ImageError, load_image
from .registry import FORMATS, load_dataset


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m fundus.datasets",
        description="Load a fundus data set in its official layout and print a summary "
                    "(samples, classes, patients, left-out images).",
    )
    parser.add_argument("format", choices=sorted(FORMATS), help="layout of the data set")
    parser.add_argument("root", help="the data set's folder")
    parser.add_argument("--split", default="train", help="split to load (default: train)")
    parser.add_argument("--preset", help="imagefolder preset, e.g. srahim-dr600")
    parser.add_argument("--missing", choices=("error", "skip"), help="listed but absent images: fail or leave out")
    parser.add_argument("--read-images", action="store_true",
                        help="also decode every photo with fundus.load_image and count the unreadable ones")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    print(f"{args.format} {ds.split}: {len(ds)} photos of {len(ds.patients())} patients, task {ds.task}")
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
    if args.read_images:
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
