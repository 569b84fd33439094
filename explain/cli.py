"""``python -m explain``: explain fundus photos, or evaluate localisation over an annotated data set.

    python -m explain MODEL IMAGE [IMAGE ...] [--target predicted] [--methods cam,gradcam,guided-gradcam,gmsm]
                      [--theta 128] [--tau 0.6] [--t 1.0] [--alpha 0.5] [--colormap jet] [--no-outlines] --out DIR
    python -m explain evaluate MODEL --data DIR --format idrid-seg|yolo --lesions HE,EX[,MA,SE] [--json]
                      [--html REPORT.html | --out DIR]

Each photo's outputs in ``--out`` are prefixed with its name (``eye_cam.npy``, ``eye_panel.png``,
``eye_prediction.json`` …), so photos never overwrite each other. The pictures are drawn by the one pipeline
(``explain.pipeline``) the web apps use: ``eye_panel.png`` is the app's panel download for the same model,
target, methods and controls. The view's flags (``--theta``, ``--tau``, ``--t``, ``--alpha``, ``--colormap``,
``--outlines``) are built from ``explain.controls``. A photo must pass the fundus check
(``fundus.check_fundus``) first: one that is not a fundus photograph, or cannot be read, gets no
prediction and no maps, the reason on stderr, and the exit status is 3 at the end (0 when every photo
was explained; 2 for a bad argument or model). ``evaluate`` writes its HTML report only where asked.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import numpy as np

from explain.controls import CONTROLS
from explain.explainer import Explainer
from explain.methods import canonical_method, method_names, panel_methods
from explain.metrics import DEFAULT_TAUS, LocalisationSummary, boxes_to_mask, centred_gaussian, uniform_map
from explain.overlay import overlay, save_png
from explain.targets import Classes, Decided, Predicted, Target

DEFAULT_CLI_METHODS = ",".join(m.replace("_", "-") for m in panel_methods("main"))
# YOLO class names (diaretdb1-boxes retinal.names and common variants) -> lesion codes.
YOLO_LESION_CODES = {
    "hard_exudates": "EX", "hard_exudate": "EX", "exudates": "EX",
    "haemorrhage": "HE", "haemorrhages": "HE", "hemorrhage": "HE", "hemorrhages": "HE",  # incl. MA in DIARETDB1
    "microaneurysms": "MA", "microaneurysm": "MA",
    "soft_exudates": "SE", "soft_exudate": "SE", "cotton_wool_spots": "SE",
}
BASELINES = ("baseline-gaussian", "baseline-uniform")
SKIPPED_STATUS = 3  # some photos were not explained (unreadable, or not fundus photographs)
REPORT_NAME = "explain-evaluate.html"  # the report's name inside ``evaluate --out DIR``


def parse_methods(text: str) -> list[str]:
    """Comma-separated method names -> canonical names (ValueError on an unknown one)."""
    names = [canonical_method(part) for part in text.split(",") if part.strip()]
    if not names:
        raise ValueError("--methods must name at least one method")
    return list(dict.fromkeys(names))


def parse_target(text: str, labels: list[str]) -> Target:
    """--target: "predicted" | "all-predicted" | "decided" | an index | a label name | a comma list of those.

    "all-predicted" is the model's decided disease labels, never a no-disease label (``Decided(False)``);
    "decided" is the app's "all predicted": the decided labels, a no-disease answer included (``Decided()``).
    """
    text = text.strip()
    words = {"predicted": Predicted(), "all-predicted": Decided(keep_no_disease=False), "decided": Decided()}
    if text in words:
        return words[text]
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
    return Classes(tuple(items))


def target_spec(target: Target) -> str:
    """The --target text of a target (the inverse of ``parse_target``).

    Raises:
        ValueError: a target the command line cannot express.
    """
    if isinstance(target, Predicted):
        return "predicted"
    if isinstance(target, Decided):
        return "decided" if target.keep_no_disease else "all-predicted"
    if isinstance(target, Classes):
        return ",".join(str(i) for i in target.indices)
    raise ValueError(f"{target!r} has no --target spelling")


def _explain_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain",
        description="Explain fundus photos: maps (.npy), overlays and a panel (PNG), the prediction (JSON), each "
                    "prefixed with the photo's name; photos that are not fundus photographs are refused. "
                    "Use 'python -m explain evaluate --help' for localisation metrics over a data set.")
    parser.add_argument("model", help="anything zoo.load accepts: a shipped name, a local folder, a hub repo id")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="fundus photos (JPEG/PNG/TIFF)")
    parser.add_argument("--target", default="predicted",
                        help="'predicted' (default), 'all-predicted' (the model's decided disease labels, integrated, "
                             "as the app decides them: never a no-disease label such as healthy, normal, No DR or N), "
                             "'decided' (the app's 'all predicted': a no-disease answer included), a class index or "
                             "label, or a comma list")
    parser.add_argument("--methods", default=DEFAULT_CLI_METHODS,
                        help=f"comma list from {', '.join(method_names())} (default {DEFAULT_CLI_METHODS}): the "
                             "panels, in this order")
    add_control_flags(parser)
    parser.add_argument("--on-original", action="store_true", help="also write overlays on the original photo")
    parser.add_argument("--revision", default=None, help="hub revision of MODEL")
    parser.add_argument("--out", required=True, type=Path, help="output folder")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain evaluate",
        description="Localisation of each method against lesion annotations: mean pointing game, energy pointing "
                    "game and best-τ IoU/Dice, with chance baselines; a plotly HTML report of IoU vs τ with --html "
                    "or --out.")
    parser.add_argument("model", help="anything zoo.load accepts")
    parser.add_argument("--data", required=True, type=Path, help="data set root folder")
    parser.add_argument("--format", required=True, choices=("idrid-seg", "yolo"), help="annotation layout")
    parser.add_argument("--lesions", default="HE,EX", help="comma list of lesion codes: MA, HE, EX, SE (default HE,EX)")
    parser.add_argument("--methods", default=DEFAULT_CLI_METHODS, help=f"comma list (default {DEFAULT_CLI_METHODS})")
    parser.add_argument("--target", default="predicted", help="target as in 'python -m explain' (default predicted)")
    parser.add_argument("--t", type=float, default=None, help="GMSM gate t (default the model's)")
    parser.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in pixels (default 15)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N images")
    parser.add_argument("--html", "--report", dest="html", type=Path, default=None,
                        help="write the plotly HTML report (IoU vs τ) to this path (--report: the same)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the HTML report into this folder as {REPORT_NAME} (when --html is not given)")
    parser.add_argument("--json", action="store_true", help="print one JSON object {method: {lesion: {...}}}")
    parser.add_argument("--revision", default=None, help="hub revision of MODEL")
    return parser


def add_control_flags(parser: argparse.ArgumentParser) -> None:
    """A flag for every view control offered on the command line (``explain.controls``); None: the model's or the
    control's default."""
    for control in CONTROLS:
        if not control.command_line:
            continue
        default = f"the model's {control.config}" if control.config else f"{control.default}"
        if control.type is bool:
            parser.add_argument(f"--{control.name}", action=argparse.BooleanOptionalAction, default=None,
                                help=f"{control.label} (default {default})")
        else:
            parser.add_argument(f"--{control.name}", type=_parsed_by(control), default=None, metavar=control.name.upper(),
                                help=f"{control.label} (default {default})")


def _parsed_by(control):
    def parse(text: str):
        try:
            return control.check(text if control.type is str else float(text))
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None

    parse.__name__ = control.name  # argparse names the type in its messages
    return parse


def view_params(args: argparse.Namespace, config):
    """The view's controls from the flags, the model's defaults where a flag is not given."""
    from explain.views import ViewParams

    given = {c.name: getattr(args, c.name) for c in CONTROLS if c.command_line and getattr(args, c.name) is not None}
    return ViewParams.from_config(config, **given)


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
    """The photo command (see ``_explain_parser``): each photo checked, explained and written apart."""
    import zoo

    start = time.perf_counter()
    try:
        methods = parse_methods(args.methods)
        model = zoo.load(args.model, revision=args.revision, device="cpu")
        target = parse_target(args.target, list(model.config.labels))
    except (ValueError, OSError) as error:
        return _fail(str(error))
    load_seconds = time.perf_counter() - start
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    prefixes: set[str] = set()
    skipped = 0
    for image in args.images:
        timings = {"load model": load_seconds}
        try:
            written = explain_photo(model, image, methods, target, args, out, prefixes, timings)
        except PhotoSkipped as error:
            print(f"warning: skipping {error}", file=sys.stderr)
            skipped += 1
            continue
        except (ValueError, TypeError) as error:  # the model cannot explain this target
            return _fail(str(error))
        for step, seconds in timings.items():
            print(f"time {step}: {seconds * 1000:.1f} ms")
        prefix = written[-1].name[: -len("_prediction.json")]
        print(f"wrote {len(written)} files to {out} ({prefix}_*)")
    if skipped:
        print(f"warning: {len(args.images) - skipped} of {len(args.images)} photos explained; {skipped} skipped",
              file=sys.stderr)
        return SKIPPED_STATUS
    return 0


class PhotoSkipped(Exception):
    """A photo that is not explained (unreadable, or not a fundus photograph); the message says which and why."""


def output_prefix(image: str | Path, taken: set[str]) -> str:
    """The photo's file name without extension, made safe for file names and unique among ``taken``."""
    base = re.sub(r"[^\w.-]+", "_", Path(image).stem).strip("._") or "photo"
    prefix, number = base, 2
    while prefix in taken:
        prefix, number = f"{base}-{number}", number + 1
    taken.add(prefix)
    return prefix


def explain_photo(model, image, methods, target: Target, args, out: Path, prefixes: set[str],
                  timings: dict[str, float]) -> list[Path]:
    """Check, explain and draw one photo through the pipeline; returns the files written (the panel last but one,
    the JSON last).

    Raises:
        PhotoSkipped: unreadable, or not a fundus photograph (nothing is written for it).
        ValueError, TypeError: the model cannot explain the target.
    """
    from explain.pipeline import analyse, load, unlike_training_warning
    from explain.views import render
    from fundus import NotFundusError
    from zoo.predict import _result as prediction_of  # the same record as `python -m zoo predict --json`

    config = model.config
    start = time.perf_counter()
    try:
        rgb, check = load(image)  # the fundus check comes before any prediction
    except NotFundusError as error:
        raise PhotoSkipped(str(error)) from None
    except (ValueError, OSError) as error:
        raise PhotoSkipped(f"{image}: cannot read it: {error}") from None
    timings["check"] = time.perf_counter() - start
    analysis = analyse(rgb, model, target, methods=methods, request=args.target)
    timings["preprocess"] = analysis.timings["preprocess"]
    timings["explain (one pass)"] = analysis.timings["explain"]
    pre, explanation = analysis.pre, analysis.explanation
    for warning in pre.warnings:
        print(f"warning: {image}: {warning}", file=sys.stderr)
    start = time.perf_counter()
    params = view_params(args, config)
    view = render(analysis, params, panels=tuple(methods))  # as the app draws them, in the order given
    timings["maps + pictures"] = time.perf_counter() - start

    prefix = output_prefix(image, prefixes)
    written: list[Path] = []
    for name, saliency in analysis.maps(params.t).items():
        np.save(out / f"{prefix}_{name}.npy", saliency)
        written += [out / f"{prefix}_{name}.npy", save_png(out / f"{prefix}_{name}_overlay.png", view.panels[name])]
        if args.on_original:
            on_original = pre.to_original(saliency, rgb.shape)
            written.append(save_png(out / f"{prefix}_{name}_overlay_original.png",
                                    overlay(rgb, on_original, params.alpha, params.colormap)))
    if "crop_box" in view.regions:
        written.append(save_png(out / f"{prefix}_attention_crop.png", view.crop))
    written.append(save_png(out / f"{prefix}_panel.png", view.grid()))

    labels = list(config.labels)
    explained = [labels[i] if config.task != "grade-regression" and i < len(labels) else str(i)
                 for i in explanation.targets[0]]
    prediction = prediction_of(model, explanation.outputs[0].detach().float().cpu(), str(image), pre.warnings)
    if analysis.unlike_training is not None:  # as python -m zoo predict reports it
        prediction["unlike_training"] = analysis.unlike_training
    caution = unlike_training_warning(analysis.unlike_training)
    if caution:
        prediction["warnings"].append(caution)
        print(f"warning: {image}: {caution}", file=sys.stderr)
    record = {
        "image": str(image),
        "model": {"source": args.model, "revision": args.revision, "name": config.name, "arch": config.arch,
                  "task": config.task},
        "prediction": prediction,
        "explained_targets": explained,
        "parameters": {"target": args.target, "methods": [m for m in methods if m not in explanation.unavailable],
                       **{k: v for k, v in params.record().items() if k not in ("compare", "extras")}},
        "regions": view.regions,
        "unavailable": dict(explanation.unavailable),
        "fundus_check": {"variant": check.variant, **{k: round(float(v), 5) for k, v in check.stats.items()}},
        "files": [path.name for path in written] + [f"{prefix}_prediction.json"],
        "not_for_clinical_use": True,
    }
    json_path = out / f"{prefix}_prediction.json"
    json_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    written.append(json_path)

    print(f"photo: {image}")
    print(f"model: {config.name} ({config.arch}, {config.task})")
    for label, value in explanation.predictions():
        print(f"  {label}: {value:.4f}")
    print(f"explained target(s): {', '.join(explained)}")
    for method, reason in explanation.unavailable.items():
        print(f"  {method} unavailable: {reason}")
    return written


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
    report = args.html if args.html is not None else (args.out / REPORT_NAME if args.out is not None else None)
    if report is not None:  # only where asked: never into the working directory by default
        write_report(summary, report, title=f"{model.config.name} on {args.data.name} ({args.format})")
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{'method':<20} {'lesion':<6} {'images':>6} {'PG':>6} {'EPG':>6} {'IoU':>6} {'Dice':>6} {'best τ':>6}")
        for method, per_lesion in result.items():
            for lesion, row in per_lesion.items():
                print(f"{method:<20} {lesion:<6} {row['images']:>6} {row['pointing_game']:>6.3f} "
                      f"{row['energy_pointing_game']:>6.3f} {row['best_iou']:>6.3f} {row['best_dice']:>6.3f} {row['best_tau']:>6.2f}")
        notes = [f"report: {report}" if report is not None else "no HTML report (--html PATH or --out DIR)"]
        if skipped:
            notes.append(f"{skipped} unreadable images skipped")
        print("; ".join(notes))
    return 0


def report_figure(summary: LocalisationSummary, title: str):
    """Plotly figure: mean IoU vs τ per method, one panel per lesion type.

    Each method keeps one colour in every panel (one legend entry per method, toggling it everywhere);
    chance baselines are dotted. The IoU axis fits the data (IoUs of saliency maps are often < 0.05).
    """
    import plotly.graph_objects as go
    from plotly.colors import qualitative
    from plotly.subplots import make_subplots

    curves = summary.curves()
    lesions = sorted({lesion for _, lesion in curves})
    methods = sorted({method for method, _ in curves}, key=lambda m: (m in BASELINES, m))
    palette = qualitative.Plotly + qualitative.D3
    colours = {method: palette[i % len(palette)] for i, method in enumerate(methods)}
    figure = make_subplots(rows=1, cols=max(1, len(lesions)), subplot_titles=lesions or ["no lesions found"])
    shown: set[str] = set()
    for (method, lesion), iou in sorted(curves.items(), key=lambda kv: (methods.index(kv[0][0]), kv[0][1])):
        line = {"color": colours[method]}
        if method in BASELINES:
            line["dash"] = "dot"
        figure.add_trace(
            go.Scatter(x=list(summary.taus), y=list(iou), mode="lines+markers", name=method, legendgroup=method,
                       showlegend=method not in shown, line=line, marker={"color": colours[method]}),
            row=1, col=lesions.index(lesion) + 1)
        shown.add(method)
    figure.update_xaxes(title_text="τ (paper 004 eq. 4)")
    figure.update_yaxes(title_text="mean IoU", autorange=True, rangemode="tozero")
    figure.update_layout(title=title)
    return figure


def write_report(summary: LocalisationSummary, path: Path, title: str) -> Path:
    """Write ``report_figure`` as HTML (plotly.js inlined: works offline)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    report_figure(summary, title).write_html(str(path), include_plotlyjs=True)
    return path
