"""Preprocessing speed on a full-resolution photo (goal: well under 0.3 s for 3872×2592).

Prints medians of interleaved runs and ratios measured side by side, so that a busy shared
machine slows every variant alike:
  * fundus.preprocess (FOV on a downscaled copy, crop, resize, CLAHE, normalise);
  * a plain cv2.resize (INTER_AREA) of the whole photo to the input size, for scale;
  * FOV detection run on the full-resolution photo instead of a downscaled copy (why we downscale).

    .venv/bin/python benchmarks/preprocess_speed.py --size 3872 2592 --input-size 224 --repeats 7
"""
from __future__ import annotations

import argparse
import statistics
import time
from types import SimpleNamespace

import cv2
import numpy as np

from fundus import fov as fov_module
from fundus import make_fundus, preprocess


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(3872, 2592), metavar=("W", "H"), help="photo size")
    parser.add_argument("--input-size", type=int, default=224, help="model input side S")
    parser.add_argument("--clahe", action="store_true", default=True, help="include CLAHE (default on)")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved rounds (median reported)")
    args = parser.parse_args()
    cv2.setNumThreads(2)

    width, height = args.size
    small, _ = make_fundus(1024, seed=0, border="notched")
    photo = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
    config = SimpleNamespace(input_size=args.input_size, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225),
                             preprocessing={"fov_crop": True, "clahe": args.clahe})

    def full_resolution_fov() -> None:
        saved = fov_module.DETECT_SIDE
        fov_module.DETECT_SIDE = max(width, height)
        try:
            fov_module.fit_fov_circle(photo)
        finally:
            fov_module.DETECT_SIDE = saved

    variants = {
        "preprocess": lambda: preprocess(photo, config),
        "cv2.resize INTER_AREA": lambda: cv2.resize(photo, (args.input_size,) * 2, interpolation=cv2.INTER_AREA),
        "FOV at full resolution": full_resolution_fov,
    }
    times = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(args.repeats):
        for name, fn in variants.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    print(f"photo {width}×{height} → {args.input_size}², CLAHE {'on' if args.clahe else 'off'}, "
          f"{args.repeats} interleaved rounds, medians:")
    for name, value in med.items():
        print(f"  {name:<24} {value * 1000:8.1f} ms   ×{value / med['preprocess']:.2f} of preprocess")
    print(f"preprocess / 0.3 s budget: {med['preprocess'] / 0.3:.2f}")


if __name__ == "__main__":
    np.random.seed(0)
    main()
