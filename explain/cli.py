"""``python -m explain``: explain one photo, or evaluate localisation over an annotated data set.

    python -m explain MODEL IMAGE [--target predicted] [--methods cam,gradcam,guided-gradcam,gmsm]
                      [--theta 128] [--tau 0.6] [--t 1.0] --out DIR
    python -m explain evaluate MODEL --data DIR --format idrid-seg|yolo --lesions HE,EX[,MA,SE] [--json]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from explain.explainer import ALL_METHODS, Explainer, canonical_method
from explain.metrics import DEFAULT_TAUS, LocalisationSummary, boxes_to_mask, centred_gaussian, uniform_map
from explain.overlay import draw_boxes, overlay, panel_grid, save_png
from explain.regions import attention_crop, lesion_mask

DEFAULT_CLI_METHODS = "cam,gradcam,guided-gradcam,gmsm"
# YOLO class names (diaretdb1-boxes retinal.names and common variants) -> lesion codes.
YOLO_LESION_CODES = {
    "hard_exudates": "EX", "hard_exudate": "EX", "exudates": "EX",
    "haemorrhage": "HE", "haemorrhages": "HE", "hemorrhage": "HE", "hemorrhages": "HE",  # incl. MA in DIARETDB1
    "microaneurysms": "MA", "microaneurysm": "MA",
    "soft_exudates": "SE", "soft_exudate": "SE", "cotton_wool_spots": "SE",
}
BASELINES = ("baseline-gaussian", "baseline-uniform")


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names -> canonical names (ValueError on an unknown one)."""
    names = [canonical_method(part) for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--methods must name at least one method")
    return list(dict.fromkeys(names))


def parse_target(text: str, labels: list[str]):
    """"predicted" | "all-predicted" | an index | a label name | a comma list of those."""
    text = text.strip()
    if text in ("predicted", "all-predicted"):
        return text
    items = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part.lstrip("-").isdigit():
            items.append(int(part))
        elif part in labels:
            items.append(labels.index(part))
        else:
            raise ValueError(f"target {part!r} is neither an index nor one of the labels {labels}")
    if not items:
        raise ValueError("empty --target")
    return items[0] if len(items) == 1 else items


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain",
        description="Explain one fundus photo: maps (.npy), overlays and a panel (PNG), predictions and timings. "
                    "Use 'python -m explain evaluate --help' for localisation metrics over a data set.")
    parser.add_argument("model", help="anything zoo.load accepts: a shipped name, a local folder, a hub repo id")
    parser.add_argument("image", help="a fundus photo (JPEG/PNG/TIFF)")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (default), 'all-predicted' (integrated), a class index or label, or a comma list")
    parser.add_argument("--methods", default=DEFAULT_CLI_METHODS,
                        help=f"comma list from {', '.join(ALL_METHODS)} (default {DEFAULT_CLI_METHODS})")
    parser.add_argument("--theta", type=float, default=None, help="attention-crop threshold θ ∈ [0, 255] (paper 000 eq. 5)")
    parser.add_argument("--tau", type=float, default=None, help="lesion-mask threshold τ ∈ [0, 1] (paper 004 eq. 4)")
    parser.add_argument("--t", type=float, default=None, help="GMSM gate t (paper 004 eq. 2)")
    parser.add_argument("--alpha", type=float, default=0.5, help="overlay heat-map weight (default 0.5)")
    parser.add_argument("--colormap", default="jet", help="OpenCV colormap name (default jet)")
    parser.add_argument("--on-original", action="store_true", help="also write overlays on the original photo")
    parser.add_argument("--revision", default=None, help="hub revision of MODEL")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain evaluate",
        description="Localisation of each method against lesion annotations: mean pointing game, energy pointing "
                    "game and best-τ IoU/Dice, with chance baselines; writes a plotly HTML report of IoU vs τ.")
    parser.add_argument("model", help="anything zoo.load accepts")
    parser.add_argument("--data", required=True, type=Path, help="data set root folder")
    parser.add_argument("--format", required=True, choices=("idrid-seg", "yolo"), help="annotation layout")
    parser.add_argument("--lesions", default="HE,EX", help="comma list of lesion codes: MA, HE, EX, SE (default HE,EX)")
    parser.add_argument("--methods", default=DEFAULT_CLI_METHODS, help=f"comma list (default {DEFAULT_CLI_METHODS})")
    parser.add_argument("--target", default="predicted", help="target as in 'python -m explain' (default predicted)")
    parser.add_argument("--t", type=float, default=None, help="GMSM gate t (default the model's)")
    parser.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in pixels (default 15)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--report", type=Path, default=Path("explain-evaluate.html"), help="plotly HTML report path")
    parser.add_argument("--json", action="store_true", help="print one JSON object {method: {lesion: {...}}}")
    parser.add_argument("--revision", default=None, help="hub revision of MODEL")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "evaluate":
        args = _evaluate_parser().parse_args(argv[1:])
        return run_evaluate(args)
    args = _explain_parser().parse_args(argv)
    return run_explain(args)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


def run_explain(args: argparse.Namespace) -> int:
    """The single-photo command (see ``_explain_parser``)."""
    import zoo
    from fundus import load_image, preprocess

    timings = {}
    start = time.perf_counter()
    try:
        methods = parse_methods(args.methods)
        model = zoo.load(args.model, revision=args.revision, device="cpu")
        target = parse_target(args.target, list(model.config.labels))
    except (ValueError, OSError) as error:
        return _fail(str(error))
    timings["load model"] = time.perf_counter() - start
    config = model.config
    theta = config.theta if args.theta is None else args.theta
    tau = config.tau if args.tau is None else args.tau
    start = time.perf_counter()
    try:
        rgb = load_image(args.image)
    except (ValueError, OSError) as error:
        return _fail(f"cannot read {args.image}: {error}")
    pre = preprocess(rgb, config)
    timings["preprocess"] = time.perf_counter() - start
    for warning in pre.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    start = time.perf_counter()
    try:
        explanation = Explainer(model).explain(pre.tensor, target, fov_mask=pre.fov_mask, methods=methods)
    except (ValueError, TypeError) as error:
        return _fail(str(error))
    timings["explain (one pass)"] = time.perf_counter() - start
    start = time.perf_counter()
    maps = explanation.maps(t=args.t)
    timings["maps"] = time.perf_counter() - start

    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    written = []
    tiles, titles = [pre.image], ["photo"]
    for name, saliency in maps.items():
        np.save(out / f"{name}.npy", saliency)
        picture = overlay(pre.image, saliency, args.alpha, args.colormap, mask=pre.fov_mask)
        written += [out / f"{name}.npy", save_png(out / f"{name}_overlay.png", picture)]
        tiles.append(picture)
        titles.append(name)
        if args.on_original:
            on_original = pre.to_original(saliency, rgb.shape)
            written.append(save_png(out / f"{name}_overlay_original.png", overlay(rgb, on_original, args.alpha, args.colormap)))
    crop_source = maps.get("guided_gradcam")
    if crop_source is not None:
        crop = attention_crop(crop_source, theta=theta, image=pre.image)
        tiles.append(draw_boxes(pre.image, [crop.box], colour=(0, 255, 0)))
        titles.append(f"crop θ={theta:g}")
        written.append(save_png(out / "attention_crop.png", crop.enlarged))
    mask_source = maps.get("gmsm", maps.get("gradcam"))
    if mask_source is not None:
        lesions = lesion_mask(mask_source, tau=tau, fov_mask=pre.fov_mask)
        tiles.append(draw_boxes(pre.image, [p.box for p in lesions.patches], colour=(255, 255, 0), thickness=1))
        titles.append(f"lesions τ={tau:g}")
    tile = max(256, pre.image.shape[0])  # readable titles even for small inputs
    written.append(save_png(out / "panel.png", panel_grid(tiles, titles, columns=4, tile=tile)))

    labels = list(config.labels)
    print(f"model: {config.name} ({config.arch}, {config.task})")
    for label, value in explanation.predictions():
        print(f"  {label}: {value:.4f}")
    explained = [labels[i] if config.task != "grade-regression" and i < len(labels) else str(i) for i in explanation.targets[0]]
    print(f"explained target(s): {', '.join(explained)}")
    for method, reason in explanation.unavailable.items():
        print(f"  {method} unavailable: {reason}")
    for step, seconds in timings.items():
        print(f"time {step}: {seconds * 1000:.1f} ms")
    print(f"wrote {len(written)} files to {out}")
    return 0


def lesion_truth(sample, lesion: str, fmt: str, pre) -> np.ndarray:
    """The lesion's ground truth in the model's frame (``Preprocessed.to_model``: the photo's crop + resize).

    IDRiD masks are read from their TIFFs (a missing file means the lesion is absent); YOLO boxes
    (normalised to the photo) are rasterised at the photo's size first.
    """
    height, width = pre.original_shape[:2]
    if fmt == "idrid-seg":
        path = (sample.masks or {}).get(lesion)
        if path is None:
            return np.zeros(pre.fov_mask.shape, bool)
        from fundus.datasets.idrid_seg import load_mask

        full = load_mask(path)
    else:
        boxes = [box[1:] for box in sample.boxes or [] if YOLO_LESION_CODES.get(box[0].lower()) == lesion]
        full = boxes_to_mask(boxes, (height, width))
    # A low area threshold keeps thin lesions (microaneurysms) after downscaling.
    return pre.to_model(full, threshold=0.25)


def run_evaluate(args: argparse.Namespace) -> int:
    """The data-set command (see ``_evaluate_parser``)."""
    from tqdm import tqdm

    import zoo
    from fundus import load_image, preprocess
    from fundus.datasets import load_dataset

    try:
        methods = parse_methods(args.methods)
        lesions = [code.strip().upper() for code in args.lesions.split(",") if code.strip()]
        unknown = [code for code in lesions if code not in ("MA", "HE", "EX", "SE")]
        if unknown or not lesions:
            raise ValueError(f"--lesions takes MA, HE, EX, SE; got {args.lesions!r}")
        model = zoo.load(args.model, revision=args.revision, device="cpu")
        target = parse_target(args.target, list(model.config.labels))
        dataset = load_dataset(args.format, args.data)
    except (ValueError, OSError) as error:
        return _fail(str(error))
    samples = dataset.samples[: args.limit] if args.limit else dataset.samples
    explainer = Explainer(model)
    summary = LocalisationSummary(taus=DEFAULT_TAUS, tolerance=args.tolerance)
    skipped = 0
    for sample in tqdm(samples, desc="evaluate", unit="image", file=sys.stderr):
        try:
            rgb = load_image(sample.image)
        except (ValueError, OSError) as error:
            print(f"skipping {sample.image}: {error}", file=sys.stderr)
            skipped += 1
            continue
        pre = preprocess(rgb, model.config)
        maps = explainer.explain(pre.tensor, target, fov_mask=pre.fov_mask, methods=methods).maps(t=args.t)
        shape = pre.fov_mask.shape
        maps["baseline-gaussian"] = centred_gaussian(shape, fov_mask=pre.fov_mask)
        maps["baseline-uniform"] = uniform_map(shape, fov_mask=pre.fov_mask)
        for lesion in lesions:
            truth = lesion_truth(sample, lesion, args.format, pre)
            for name, saliency in maps.items():
                summary.add(name, lesion, saliency, truth, pre.fov_mask)
    result = summary.result()
    write_report(summary, args.report, title=f"{model.config.name} on {args.data.name} ({args.format})")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'method':<20} {'lesion':<6} {'images':>6} {'PG':>6} {'EPG':>6} {'IoU':>6} {'Dice':>6} {'best τ':>6}")
        for method, per_lesion in result.items():
            for lesion, row in per_lesion.items():
                print(f"{method:<20} {lesion:<6} {row['images']:>6} {row['pointing_game']:>6.3f} "
                      f"{row['energy_pointing_game']:>6.3f} {row['best_iou']:>6.3f} {row['best_dice']:>6.3f} {row['best_tau']:>6.2f}")
        print(f"report: {args.report}" + (f"; {skipped} unreadable images skipped" if skipped else ""))
    return 0


def write_report(summary: LocalisationSummary, path: Path, title: str) -> Path:
    """Plotly HTML: mean IoU vs τ per method, one panel per lesion type (plotly.js inlined: works offline)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    curves = summary.curves()
    lesions = sorted({lesion for _, lesion in curves})
    figure = make_subplots(rows=1, cols=max(1, len(lesions)), subplot_titles=lesions or ["no lesions found"])
    for (method, lesion), iou in sorted(curves.items()):
        figure.add_trace(
            go.Scatter(x=list(summary.taus), y=list(iou), mode="lines+markers", name=method, legendgroup=method,
                       showlegend=lesion == lesions[0], line={"dash": "dot"} if method in BASELINES else {}),
            row=1, col=lesions.index(lesion) + 1)
    figure.update_xaxes(title_text="τ (paper 004 eq. 4)")
    figure.update_yaxes(title_text="mean IoU", range=[0, 1])
    figure.update_layout(title=title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.write_html(str(path), include_plotlyjs=True)
    return path
