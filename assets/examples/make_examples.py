"""Rebuild the app's example photos from the real data sets in ../shared/data (see examples.json, CREDITS.md).

Each photo is read with Pillow, scaled so that its longest side is at most 512 px, and re-encoded as a
baseline JPEG (quality 85, no metadata): the files here are new encodings, never byte copies of the
data set files. Only data sets whose licence allows redistribution are used (HRF and IDRiD: CC BY 4.0).

    python assets/examples/make_examples.py [--data ../shared/data]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
MAX_SIDE = 512
QUALITY = 85


def build(data: Path, out: Path = HERE) -> list[Path]:
    """Write every example of ``examples.json`` into ``out``; returns the files written."""
    listing = json.loads((HERE / "examples.json").read_text())
    written = []
    for item in listing["examples"]:
        with Image.open(data / item["source"]) as image:
            image = image.convert("RGB")
            image.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
            target = out / item["file"]
            image.save(target, format="JPEG", quality=QUALITY, optimize=True)
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=HERE.parents[2] / "shared" / "data",
                        help="the folder holding hrf/ and idrid-grading-boxes/ (default ../shared/data)")
    args = parser.parse_args(argv)
    files = build(args.data)
    total = sum(f.stat().st_size for f in files)
    for f in files:
        print(f"{f.name}: {Image.open(f).size[0]}×{Image.open(f).size[1]}, {f.stat().st_size // 1024} KB")
    print(f"{len(files)} photos, {total / 2**20:.2f} MB")


if __name__ == "__main__":
    main()
