"""Calibrate and measure ``fundus.check`` (the fundus check before any grade).

    python scripts/calibrate_fundus_check.py [--data ../shared/data] [--limit N] [--csv stats.csv] [--json]

Runs the check over

- every photo in every folder of ``../shared/data`` (real fundus photographs: each rejection is a
  false reject; the goal is none), skipped cleanly when the folder is absent;
- generated fundus-like photos (``fundus.make_fundus``) and scikit-image's CC0 retina (must pass);
- non-fundus images: scikit-image's data images, the sample photos shipped inside installed
  packages (scikit-learn, matplotlib, gradio), plain colours, noise, gradients and flat or noisy
  discs on black (must all be rejected);

and prints the false-reject rate per data-set folder, the percentiles of each statistic over the
real photos and over the non-fundus images (what the thresholds in ``fundus/check.py`` are set
from), and the decision and reason for every non-fundus image. Runs at low priority on one thread.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import json
import math
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

import cv2
import numpy as np

from fundus import load_image
from fundus.check import check_fundus

REPO = Path(__file__).resolve().parents[1]

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff"}
STATS = ("surround", "hue_variety", "hue_spread", "blue_red", "chroma", "texture", "fine_share")
# skimage images that are fundus photographs (or a crop of one), not counted as non-fundus.
SKIMAGE_FUNDUS = {"retina"}
SKIMAGE_SKIP = {"microaneurysms"}  # a 102 px grey crop of a retina: neither a photo nor a non-fundus image
PACKAGE_PHOTOS = (
    ("sklearn", "datasets/images/china.jpg"),
    ("sklearn", "datasets/images/flower.jpg"),
    ("matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("gradio", "media_assets/images/cheetah1.jpg"),
    ("gradio", "media_assets/images/lion.jpg"),
    ("gradio", "media_assets/images/tower.jpg"),
    ("gradio", "media_assets/images/groot.jpeg"),
)


def real_photos(root: Path):
    """(folder name, path) of every photo under each data-set folder (lesion masks left out)."""
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        for path in sorted(folder.rglob("*")):
            if path.suffix.lower() in PHOTO_SUFFIXES and path.is_file() and "Groundtruth" not in str(path):
                yield folder.name, path


def _rgb(array) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == bool:
        array = array.astype(np.uint8) * 255
    if array.dtype != np.uint8:
        array = np.clip(array / max(float(array.max()), 1e-9) * 255, 0, 255).astype(np.uint8)
    if array.ndim == 2:
        array = np.stack([array] * 3, axis=-1)
    return np.ascontiguousarray(array[..., :3])


def skimage_images():
    """(name, rgb, is_fundus) for every scikit-image data image available offline."""
    try:
        import skimage.data as data
    except ImportError:
        return
    for name in sorted(data.__all__):
        if name in SKIMAGE_SKIP or name in ("data_dir", "download_all", "file_hash", "lfw_subset", "cells3d",
                                            "lbp_frontal_face_cascade_filename", "stereo_motorcycle"):
            continue
        try:
            image = getattr(data, name)()
        except Exception:  # noqa: BLE001 - images that need a download (pooch) are not here offline
            continue
        if isinstance(image, tuple):
            image = image[0]
        image = _rgb(image)
        if min(image.shape[:2]) < 64:
            continue
        yield f"skimage.{name}", image, name in SKIMAGE_FUNDUS
    try:
        left, _right, _disp = data.stereo_motorcycle()
        yield "skimage.stereo_motorcycle", _rgb(left), False
    except Exception:  # noqa: BLE001
        pass


def package_photos():
    """(name, rgb) of sample photos shipped inside installed packages."""
    import importlib.util

    for package, relative in PACKAGE_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        path = Path(list(spec.submodule_search_locations)[0]) / relative
        if path.is_file():
            yield f"{package}:{path.name}", load_image(path)


def generated_non_fundus(size: int = 384):
    """Plain colours, noise, gradients, discs on black: (name, rgb)."""
    rng = np.random.default_rng(0)
    colours = {"black": (0, 0, 0), "white": (255, 255, 255), "grey": (128, 128, 128), "red": (200, 30, 20),
               "fundus-orange": (200, 90, 40), "dark-red": (90, 20, 10), "green": (30, 160, 40),
               "blue": (30, 60, 200), "yellow": (230, 210, 40)}
    for name, colour in colours.items():
        yield f"plain {name}", np.full((size, size, 3), colour, np.uint8)
    yield "uniform noise", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    yield "grey noise 90-110", rng.integers(90, 110, (size, size, 3), dtype=np.uint8)
    yield "gaussian noise", np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    reddish = np.clip(rng.normal(0, 25, (size, size, 3)) + (180, 80, 40), 0, 255).astype(np.uint8)
    yield "reddish noise", reddish
    ramp = np.linspace(0, 255, size, dtype=np.float32)
    yield "horizontal grey gradient", _rgb(np.tile(ramp, (size, 1)).astype(np.uint8))
    yield "vertical red gradient", np.stack([np.tile(ramp[:, None], (1, size)) * c for c in (0.9, 0.35, 0.15)],
                                            axis=-1).astype(np.uint8)
    yy, xx = np.mgrid[:size, :size]
    dist = np.hypot(xx - size / 2, yy - size / 2) / (0.45 * size)
    disc = dist <= 1
    flat = np.zeros((size, size, 3), np.uint8)
    flat[disc] = (200, 90, 40)
    yield "flat orange disc on black", flat
    radial = np.clip(1 - dist, 0, 1)[..., None] * np.array([230, 110, 50], np.float32)
    yield "radial orange gradient on black", radial.astype(np.uint8)
    noisy = np.zeros((size, size, 3), np.uint8)
    noisy[disc] = reddish[disc]
    yield "reddish noise disc on black", noisy
    wheel = np.zeros((size, size, 3), np.uint8)
    hue = ((np.arctan2(yy - size / 2, xx - size / 2) + np.pi) / (2 * np.pi) * 179).astype(np.uint8)
    hsv = np.stack([hue, np.full_like(hue, 255), np.full_like(hue, 220)], axis=-1)
    wheel[disc] = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[disc]
    yield "hue wheel disc on black", wheel
    board = ((xx // 32 + yy // 32) % 2 * 255).astype(np.uint8)
    yield "checkerboard", _rgb(board)
    smooth = cv2.GaussianBlur(rng.normal(0, 1, (size, size)).astype(np.float32), (0, 0), 6)
    earth = np.zeros((size, size, 3), np.uint8)
    clouds = np.clip(smooth / smooth.std() * 60 + 110, 0, 255)[..., None] * np.array([0.35, 0.6, 1.0])
    earth[disc] = clouds.astype(np.uint8)[disc]
    yield "blue textured disc on black (a planet)", earth


def vignetted_photos(size: int = 384):
    """Natural colour photos inside a round vignette on black: (name, rgb). A stress test: only the
    field's colour and texture can tell them from a fundus photo."""
    try:
        import skimage.data as data
    except ImportError:
        return
    yy, xx = np.mgrid[:size, :size]
    disc = np.hypot(xx - size / 2, yy - size / 2) <= 0.45 * size
    for name in ("astronaut", "coffee", "chelsea", "rocket"):
        image = cv2.resize(_rgb(getattr(data, name)()), (size, size), interpolation=cv2.INTER_AREA)
        image[~disc] = 0
        yield f"skimage.{name} in a round vignette on black", image


def generated_fundus():
    """Fundus-like images that must pass: (name, rgb)."""
    from fundus import make_fundus

    variants = [("black", {}), ("notched", {"border": "notched"}), ("none", {"border": "none"}),
                ("dark", {"exposure": 0.4}), ("bright", {"exposure": 1.5}), ("small field", {"radius_frac": 0.3}),
                ("off-centre", {"center": (220.0, 180.0)}), ("no lesions", {"lesions": ()})]
    for seed in range(3):
        for name, options in variants:
            yield f"make_fundus {name} seed {seed}", make_fundus(384, seed=seed, **options)[0]
    for size in (64, 128):
        yield f"make_fundus {size} px", make_fundus(size, seed=5)[0]
    grey = cv2.cvtColor(make_fundus(384, seed=11, border="notched")[0], cv2.COLOR_RGB2GRAY)
    yield "make_fundus greyscale (red-free)", _rgb(grey)


def row_of(group: str, name: str, rgb: np.ndarray, expected_fundus: bool) -> dict:
    check = check_fundus(rgb)
    return {"group": group, "name": name, "expected_fundus": expected_fundus, "accepted": check.is_fundus,
            "reason": check.reason, "fov_found": check.fov_found, "fills_frame": check.fills_frame,
            "variant": check.variant,
            **{k: check.stats.get(k, float("nan")) for k in STATS}}


def percentiles(rows: list[dict]) -> dict[str, dict[str, float]]:
    out = {}
    for stat in STATS:
        values = np.array([r[stat] for r in rows], float)
        values = values[np.isfinite(values)]
        if len(values):
            qs = np.percentile(values, [0, 0.1, 1, 50, 99, 99.9, 100])
            out[stat] = dict(zip(("min", "p0.1", "p1", "p50", "p99", "p99.9", "max"), map(float, qs)),
                             count=int(len(values)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FUNDUS_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--limit", type=int, default=None, help="at most N photos per data-set folder")
    parser.add_argument("--csv", type=Path, default=None, help="write every image's statistics here")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):  # not allowed everywhere
        os.nice(10)
    cv2.setNumThreads(1)
    rows, unreadable = real_rows(args.data, args.limit)
    rows += reference_rows()
    report = calibration_report(rows, unreadable)
    if args.csv:
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.json:
        print(json.dumps(report, indent=1, default=float))
        return 0
    print_report(report, [r for r in rows if r["group"] == "non-fundus"])
    return 0


def real_rows(data: Path, limit: int | None) -> tuple[list[dict], list[str]]:
    """One row per real photo under ``data`` (at most ``limit`` per data-set folder), and the unreadable ones."""
    rows: list[dict] = []
    unreadable: list[str] = []
    if not data.is_dir():
        print(f"no real data at {data}: real photos skipped", file=sys.stderr)
        return rows, unreadable
    taken: Counter = Counter()
    for folder, path in real_photos(data):
        if limit is not None and taken[folder] >= limit:
            continue
        taken[folder] += 1
        try:
            rgb = load_image(path)
        except ValueError as error:
            unreadable.append(f"{path}: {error}")
            continue
        rows.append(row_of(folder, str(path.relative_to(data)), rgb, True))
    return rows, unreadable


def reference_rows() -> list[dict]:
    """Rows of the generated fundus photos, skimage's images and the non-fundus pictures."""
    rows = [row_of("generated fundus", name, rgb, True) for name, rgb in generated_fundus()]
    rows += [row_of("skimage fundus" if is_fundus else "non-fundus", name, rgb, is_fundus)
             for name, rgb, is_fundus in skimage_images()]
    for pictures in (package_photos(), generated_non_fundus(), vignetted_photos()):
        rows += [row_of("non-fundus", name, rgb, False) for name, rgb in pictures]
    return rows


def calibration_report(rows: list[dict], unreadable: list[str]) -> dict:
    """False rejects per group, the real photos' and the non-fundus pictures' statistics, the rejected real photos."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        groups[row["group"]].append(row)
    real = [r for r in rows if r["group"] not in ("generated fundus", "skimage fundus", "non-fundus")]
    negatives = groups["non-fundus"]
    return {
        "false_reject": {g: {"photos": len(rs), "rejected": sum(not r["accepted"] for r in rs),
                             "rate": sum(not r["accepted"] for r in rs) / len(rs),
                             "reasons": dict(Counter(r["reason"].split(" (")[0] for r in rs if not r["accepted"]))}
                         for g, rs in groups.items() if g != "non-fundus"},
        "real_photos": {"photos": len(real), "rejected": sum(not r["accepted"] for r in real), "unreadable": unreadable},
        "non_fundus": [{"name": r["name"], "accepted": r["accepted"], "reason": r["reason"]} for r in negatives],
        "percentiles_real": percentiles(real),
        "variants_real": dict(Counter(r["variant"] or "none" for r in real)),
        "percentiles_non_fundus_fov_found": percentiles([r for r in negatives if r["fov_found"]]),
        "rejected_real": [(r["name"], r["reason"]) for r in real if not r["accepted"]][:50],
    }


def print_report(report: dict, negatives: list[dict]) -> None:
    """The report as tables; ``negatives``: the non-fundus pictures' rows, with their statistics."""
    print("False rejects (fundus photos the check refuses):")
    for group, row in report["false_reject"].items():
        reasons = "; ".join(f"{k}: {v}" for k, v in row["reasons"].items())
        print(f"  {group:<22} {row['rejected']:>4} / {row['photos']:<5} {row['rate']:7.2%}  {reasons}")
    total = report["real_photos"]
    if total["photos"]:
        print(f"  {'all real photos':<22} {total['rejected']:>4} / {total['photos']:<5} "
              f"{total['rejected'] / total['photos']:7.2%}")
    for line in total["unreadable"]:
        print(f"  unreadable: {line}")
    print("\nWhere the field of real photos was found: " + "; ".join(f"{k}: {v}" for k, v in report["variants_real"].items()))
    for title, key in (("all real photos", "percentiles_real"),
                       ("non-fundus images with a field found", "percentiles_non_fundus_fov_found")):
        print(f"\nStatistics, {title}:")
        for stat, qs in report[key].items():
            print(f"  {stat:<10} " + "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"n {v}"
                                                for k, v in qs.items()))
    print("\nNon-fundus images:")
    for row in negatives:
        stats = " ".join(f"{k}={row[k]:.3f}" for k in STATS if not math.isnan(row[k]))
        print(f"  {'ACCEPTED' if row['accepted'] else 'rejected'}  {row['name']:<36} {row['reason'] or ''}  [{stats}]")
    if report["rejected_real"]:
        print("\nReal photos rejected (first 50):")
        for name, reason in report["rejected_real"]:
            print(f"  {name}: {reason}")


if __name__ == "__main__":
    sys.exit(main())
