"""``python -m explain``: explain fundus photos, or evaluate localisation over an annotated data set.

    python -m explain MODEL IMAGE [IMAGE ...] [--target predicted] [--methods cam,gradcam,guided-gradcam,gmsm]
                      [--theta 128] [--tau 0.6] [--t 1.0] [--alpha 0.5] [--colormap jet] [--no-outlines] --out DIR
                      [--overwrite]
    python -m explain evaluate MODEL [MODEL ...] --data DIR --format idrid-seg|yolo --lesions HE,EX[,MA,SE] [--json]
                      [--split all|train|val|test] [--tau TAU] [--html REPORT.html | --out DIR]
                      [--table DIR] [--road-percentiles 20,40,60,80|none] [--write-config MODEL_FOLDER ...]

Each photo's outputs in ``--out`` are prefixed with its name (``eye_cam.npy``, ``eye_panel.png``,
``eye_prediction.json`` …), so photos never overwrite each other. A folder that is not empty is refused (exit status 2)
unless ``--overwrite`` is given: then each explained photo's earlier outputs are removed before its new ones are
written, so no stale file of an earlier run (an ``eye_attention_crop.png`` this run does not draw) sits among them. The pictures are drawn by the one pipeline
(``explain.pipeline``) the web apps use: ``eye_panel.png`` is the app's panel download for the same model,
target, methods and controls. The view's flags (``--theta``, ``--tau``, ``--t``, ``--alpha``, ``--colormap``,
``--outlines``) are built from ``explain.controls``. A photo must pass the fundus check
(``zoo.fundus_check``) first: one that is not a fundus photograph, or cannot be read, gets no
prediction and no maps, the reason on stderr, and the exit status is 3 at the end (0 when every photo
was explained; 2 for a bad argument or model). ``evaluate`` writes its HTML report only where asked.

``evaluate --split test`` (or train, val) scores the photos ``python -m zoo evaluate --split test`` evaluates: the
project's per-source split by patient (``fundus.datasets.train_val_test_split``, stratified by the photos' targets in
the model's labels, through ``fundus.datasets.labelled.labelled_photos``). Where the model's labels say nothing about the data set's
photos (a DR grader on lesion boxes: ``zoo evaluate`` has nothing to score there) the same split is stratified by the
data set's own labels. Where the photos carry the optic disc (``optic_disc`` boxes in a YOLO layout, IDRiD's OD masks),
every method with τ region tools (GMSM's lesion patches, Guided Grad-CAM's outlines) and the baselines also get the
share of their τ lesion patches whose centroid lies on the disc, and the share of photos with such a patch.

Beside the methods, ``evaluate`` scores the trivial maps (uniform over the field of view, a centred Gaussian) and a
map drawn from the photo alone (``explain.spot_filter``); per (model, method, lesion) it reports the energy pointing
game, its ratio to the best trivial map, the pointing game and the PR-AUC of the map's pixels, and per (model,
method) ROAD (``explain.faithfulness``). ``--table DIR`` writes them as ``localisation.json`` / ``.csv`` / ``.md``
(``explain.localisation_table``); ``--write-config FOLDER`` stores the row of the model loaded from that folder in
its ``config.json`` (``ModelConfig.localisation``) and card, which the app's panels then quote. A DR grader's maps
explain its predicted grade (``--target predicted``); the lesion types are the data set's masks or boxes.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from explain.controls import CONTROLS
from explain.explainer import Explainer
from explain.faithfulness import ROAD_PERCENTILES
from explain.methods import canonical_method, method_names, panel_methods
from explain.metrics import (DEFAULT_TAUS, OPTIC_DISC, LocalisationSummary, boxes_to_mask, centred_gaussian,
                             uniform_map)
from explain.overlay import overlay, save_png
from explain.targets import Classes, Decided, Predicted, Target
from fundus.datasets.labels import lesion_code
from fundus.datasets.registry import LESION_MASKS, annotated_formats, format_of
from fundus.datasets.splits import SPLIT_SEED, TEST_FRACTION, VAL_FRACTION
from fundus.tasks import task_of

DEFAULT_CLI_METHODS = ",".join(m.replace("_", "-") for m in panel_methods("main"))
# YOLO class names of the optic disc (idrid-grading-boxes and diaretdb1-boxes: class 0 optic_disc).
OPTIC_DISC_NAMES = ("optic_disc", "optic disc", "opticdisc", "od")
TAU_REGIONS = frozenset({"lesions", "outlines"})  # region tools drawn at τ (GMSM's lesion patches, the outlines)
BASELINES = ("baseline-gaussian", "baseline-uniform")
SPLITS = ("all", "train", "val", "test")
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
    parser.add_argument("--out", required=True, type=Path,
                        help="output folder: new or empty, unless --overwrite is given")
    parser.add_argument("--overwrite", action="store_true",
                        help="write into a --out folder that is not empty: each explained photo's earlier outputs "
                             "(same name prefix) are removed first; other files stay")
    return parser


def _evaluate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m explain evaluate",
        description="Localisation of each method of each model against lesion annotations: mean pointing game, "
                    "energy pointing game (and its ratio to the best trivial map), PR-AUC and best-τ IoU/Dice, "
                    "beside the trivial maps and an image-only spot filter; ROAD faithfulness per method; a "
                    "localisation table with --table, the model's config and card with --write-config; a plotly "
                    "HTML report of IoU vs τ with --html or --out.")
    parser.add_argument("models", nargs="+", metavar="MODEL", help="anything zoo.load accepts; several: one table")
    parser.add_argument("--data", required=True, type=Path, help="data set root folder")
    parser.add_argument("--format", required=True, choices=annotated_formats(),
                        help="a format with lesion masks or boxes (python -m fundus.datasets lists the formats)")
    parser.add_argument("--lesions", default="HE,EX", help="comma list of lesion codes: MA, HE, EX, SE (default HE,EX)")
    parser.add_argument("--methods", default=DEFAULT_CLI_METHODS, help=f"comma list (default {DEFAULT_CLI_METHODS})")
    parser.add_argument("--target", default="predicted", help="target as in 'python -m explain' (default predicted)")
    parser.add_argument("--t", type=float, default=None, help="GMSM gate t (default the model's)")
    parser.add_argument("--tolerance", type=int, default=15, help="pointing-game tolerance in pixels (default 15)")
    parser.add_argument("--split", default="all", choices=SPLITS,
                        help="all (default) | train | val | test: the photos python -m zoo evaluate --split scores "
                             "(each source split by patient as training splits it)")
    parser.add_argument("--val-fraction", type=float, default=VAL_FRACTION, help="with --split train/val/test")
    parser.add_argument("--test-fraction", type=float, default=TEST_FRACTION, help="with --split train/val/test")
    parser.add_argument("--seed", type=int, default=SPLIT_SEED, help="with --split train/val/test")
    parser.add_argument("--tau", type=float, default=None,
                        help="τ of the lesion patches scored on the optic disc (default the model's)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N photos (of the --split part)")
    parser.add_argument("--html", "--report", dest="html", type=Path, default=None,
                        help="write the plotly HTML report (IoU vs τ) to this path (--report: the same)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"write the HTML report into this folder as {REPORT_NAME} (when --html is not given)")
    parser.add_argument("--json", action="store_true",
                        help=f"print one JSON object {{method: {{lesion: {{...}}, '{OPTIC_DISC}': {{...}}}}}} "
                             "({model name: that} for several models)")
    parser.add_argument("--table", type=Path, default=None,
                        help="write the localisation table (every model, method and lesion: EPG, × best trivial map, "
                             "PG, PR-AUC, ROAD) into this folder as localisation.json, .csv and .md")
    parser.add_argument("--road-percentiles", default=",".join(str(p) for p in ROAD_PERCENTILES),
                        help="ROAD's removal percentiles (default %(default)s; 'none': no ROAD, it costs a few "
                             "sparse solves per map and photo)")
    parser.add_argument("--write-config", action="append", type=Path, default=[], metavar="MODEL_FOLDER",
                        help="store the localisation row of the model loaded from MODEL_FOLDER (one of the MODELs) "
                             "in its config.json and README.md card; repeat for several")
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

    problem = out_folder_problem(args.out, args.overwrite)
    if problem:  # before the model is loaded: a second run must not mix its files with the first's
        return _fail(problem)
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


def out_folder_problem(out: Path, overwrite: bool) -> str | None:
    """Why ``--out`` cannot be written to, or None: it is a file, or a folder with files in it and no
    ``--overwrite`` (the files of two runs would mix)."""
    if out.exists() and not out.is_dir():
        return f"--out {out} is a file, not a folder"
    if not overwrite and out.is_dir() and any(out.iterdir()):
        return (f"--out {out} is not empty: choose a new or empty folder, or pass --overwrite to replace the "
                "earlier outputs of these photos")
    return None


def output_names(prefix: str) -> set[str]:
    """Every file name this command may write for a photo with this prefix (any method, any flag)."""
    names = {f"{prefix}_attention_crop.png", f"{prefix}_panel.png", f"{prefix}_prediction.json"}
    for method in method_names():
        names |= {f"{prefix}_{method}.npy", f"{prefix}_{method}_overlay.png", f"{prefix}_{method}_overlay_original.png"}
    return names


def remove_earlier_outputs(out: Path, prefix: str) -> None:
    """Remove an earlier run's outputs for this prefix (``--overwrite``), so none of them is left among the new."""
    for name in output_names(prefix):
        (out / name).unlink(missing_ok=True)


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
    from explain.pipeline import analyse, with_content_distance
    from explain.views import render

    start = time.perf_counter()
    rgb, check = checked_photo(image)  # the fundus check comes before any prediction
    timings["check"] = time.perf_counter() - start
    analysis = analyse(rgb, model, target, methods=methods, request=args.target)
    with_content_distance(analysis, rgb, check)  # the verdict by zoo.predict's and the app's rule
    timings["preprocess"] = analysis.timings["preprocess"]
    timings["explain (one pass)"] = analysis.timings["explain"]
    for warning in analysis.pre.warnings:
        print(f"warning: {image}: {warning}", file=sys.stderr)
    start = time.perf_counter()
    params = view_params(args, model.config)
    view = render(analysis, params, panels=tuple(methods))  # as the app draws them, in the order given
    timings["maps + pictures"] = time.perf_counter() - start

    prefix = output_prefix(image, prefixes)
    if args.overwrite:
        remove_earlier_outputs(out, prefix)
    written = write_pictures(analysis, view, params, rgb, out, prefix, on_original=args.on_original)
    record = photo_record(model, image, analysis, view, params, check, methods, args)
    record["files"] = [path.name for path in written] + [f"{prefix}_prediction.json"]
    json_path = out / f"{prefix}_prediction.json"
    json_path.write_text(json.dumps(record, indent=1, default=str) + "\n")
    written.append(json_path)
    print_summary(model.config, image, analysis.explanation, record["explained_targets"])
    return written


def checked_photo(image) -> tuple[np.ndarray, Any]:
    """The photo and its fundus check (``explain.pipeline.load_fundus_photo``).

    Raises:
        PhotoSkipped: unreadable, or not a fundus photograph.
    """
    from explain.pipeline import load_fundus_photo
    from fundus import NotFundusError

    try:
        return load_fundus_photo(image)
    except NotFundusError as error:
        raise PhotoSkipped(str(error)) from None
    except (ValueError, OSError) as error:
        raise PhotoSkipped(f"{image}: cannot read it: {error}") from None


def write_pictures(analysis, view, params, rgb: np.ndarray, out: Path, prefix: str, *,
                   on_original: bool) -> list[Path]:
    """Each method's map (.npy) and panel (the app's overlay; ``on_original``: also over the original photo), the
    enlarged θ crop when there is one, and the panel grid last."""
    written: list[Path] = []
    for name, saliency in analysis.maps(params.t).items():
        np.save(out / f"{prefix}_{name}.npy", saliency)
        written += [out / f"{prefix}_{name}.npy", save_png(out / f"{prefix}_{name}_overlay.png", view.panels[name])]
        if on_original:
            on_photo = analysis.pre.to_original(saliency, rgb.shape)
            written.append(save_png(out / f"{prefix}_{name}_overlay_original.png",
                                    overlay(rgb, on_photo, params.alpha, params.colormap)))
    if "crop_box" in view.regions:
        written.append(save_png(out / f"{prefix}_attention_crop.png", view.crop))
    written.append(save_png(out / f"{prefix}_panel.png", view.grid()))
    return written


def photo_record(model, image, analysis, view, params, check, methods, args) -> dict[str, Any]:
    """The photo's JSON record (without its file list): the prediction as ``python -m zoo predict --json`` writes
    it, the explained targets, the parameters, the regions, what was unavailable and the fundus check."""
    from explain.pipeline import unlike_training_warning
    from zoo.predict import _result as prediction_of  # the same record as `python -m zoo predict --json`

    config, explanation = model.config, analysis.explanation
    labels = list(config.labels)
    explained = [labels[i] if not task_of(config.task).regression and i < len(labels) else str(i)
                 for i in explanation.targets[0]]
    prediction = prediction_of(model, explanation.outputs[0].detach().float().cpu(), str(image), analysis.pre.warnings)
    if analysis.unlike_training is not None:  # as python -m zoo predict reports it
        prediction["unlike_training"] = analysis.unlike_training
    caution = unlike_training_warning(analysis.unlike_training)
    if caution:
        prediction["warnings"].append(caution)
        print(f"warning: {image}: {caution}", file=sys.stderr)
    return {
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
        "files": [],
        "not_for_clinical_use": True,
    }


def print_summary(config, image, explanation, explained: list[str]) -> None:
    """The photo, the model, its outputs, the explained targets and the unavailable methods, on stdout."""
    print(f"photo: {image}")
    print(f"model: {config.name} ({config.arch}, {config.task})")
    for label, value in explanation.predictions():
        print(f"  {label}: {value:.4f}")
    print(f"explained target(s): {', '.join(explained)}")
    for method, reason in explanation.unavailable.items():
        print(f"  {method} unavailable: {reason}")


def lesion_truth(sample, lesion: str, fmt: str, pre) -> np.ndarray:
    """The lesion's ground truth in the model's frame (``Preprocessed.to_model``: the photo's crop + resize).

    IDRiD masks are read from their TIFFs (a missing file means the lesion is absent); YOLO boxes
    (normalised to the photo) are rasterised at the photo's size first.
    """
    height, width = pre.original_shape[:2]
    if format_of(fmt).annotation == LESION_MASKS:
        path = (sample.masks or {}).get(lesion)
        if path is None:
            return np.zeros(pre.fov_mask.shape, bool)
        from fundus.datasets.idrid_seg import load_mask

        full = load_mask(path)
    else:
        boxes = [box[1:] for box in sample.boxes or [] if lesion_code(box[0]) == lesion]  # YOLO class names
        full = boxes_to_mask(boxes, (height, width))
    # A low area threshold keeps thin lesions (microaneurysms) after downscaling.
    return pre.to_model(full, threshold=0.25)


def optic_disc_truth(sample, fmt: str, pre) -> np.ndarray | None:
    """The optic disc in the model's frame (its ``optic_disc`` boxes, or IDRiD's OD mask, through the photo's crop +
    resize); None when the photo has no disc annotation."""
    if format_of(fmt).annotation == LESION_MASKS:
        path = (sample.masks or {}).get("OD")
        if path is None:
            return None
        from fundus.datasets.idrid_seg import load_mask

        return pre.to_model(load_mask(path))
    boxes = [box[1:] for box in sample.boxes or [] if box[0].strip().lower() in OPTIC_DISC_NAMES]
    return pre.to_model(boxes_to_mask(boxes, pre.original_shape[:2])) if boxes else None


def split_samples(args: argparse.Namespace, dataset, config) -> tuple[list, str]:
    """The photos of ``--split`` (in the data set's order) and how the part was drawn.

    train / val / test are the photos ``python -m zoo evaluate --split`` scores (``labelled_photos``: each
    source split by patient, stratified by the photos' targets in the model's labels). Where no photo has a target
    in the model's labels (``zoo evaluate`` scores nothing there), the same split is stratified by the data set's
    own labels.

    Raises:
        ValueError: invalid fractions.
    """
    if args.split == "all":
        return list(dataset.samples), "all photos"
    from fundus.datasets import train_val_test_split
    from fundus.datasets.labelled import labelled_photos
    from fundus.datasets.labels import sample_target

    fractions = dict(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed)
    if not any(sample_target(s, dataset, config.labels, config.task) is not None for s in dataset.samples):
        part = train_val_test_split(dataset.samples, **fractions)[args.split]
        chosen = {Path(s.image) for s in part}
        how = "by the data set's own labels (the model's labels do not apply to its photos)"
    else:
        photos = labelled_photos([args.data], [args.format], config.labels, config.task, split=args.split,
                                 **fractions)
        chosen = {Path(photo.image) for photo in photos}
        how = "as python -m zoo evaluate"
    return ([s for s in dataset.samples if Path(s.image) in chosen],
            f"the {args.split} part (per source, by patient: val {args.val_fraction:g}, test {args.test_fraction:g}, "
            f"seed {args.seed}; {how})")


def run_evaluate(args: argparse.Namespace) -> int:
    """The data-set command (see ``_evaluate_parser``): each model in turn over the same data set."""
    import zoo
    from explain.localisation_table import table_rows, write_config, write_table
    from fundus.datasets import load_dataset

    try:
        methods = parse_methods(args.methods)
        lesions = parse_lesions(args.lesions)
        percentiles = parse_percentiles(args.road_percentiles)
        models = [(source, zoo.load(source, revision=args.revision, device="cpu")) for source in args.models]
        for _, model in models:
            parse_target(args.target, list(model.config.labels))
            tau = float(model.config.tau if args.tau is None else args.tau)
            if not 0 <= tau <= 1:
                raise ValueError(f"--tau must be in [0, 1], got {tau}")
        written = {folder: config_model(folder, models) for folder in args.write_config}
        dataset = load_dataset(args.format, args.data)
    except (ValueError, OSError) as error:
        return _fail(str(error))
    rows, results, notes = [], {}, []
    for index, (source, model) in enumerate(models):
        try:
            summary, road, described, skipped = evaluate_model(model, dataset, args, methods, lesions, percentiles)
        except ValueError as error:  # invalid split fractions, a target the model cannot explain
            return _fail(str(error))
        name = model.config.name
        result = results[name] = summary.result()
        # the format whose facts apply (yolo on a diaretdb1-boxes folder is diaretdb1-boxes): the card names the data set
        model_rows = table_rows(name, result, road, data=args.data.name, fmt=dataset.format, split=args.split)
        rows += model_rows
        notes.append(f"{name}: {described}")
        report = report_path(args, name if len(models) > 1 else None)
        if report is not None:  # only where asked: never into the working directory by default
            write_report(summary, report, title=f"{name} on {args.data.name} ({args.format}, {args.split})",
                         note=described)
        for folder in (f for f, chosen in written.items() if chosen == index):
            print(f"wrote the localisation row of {name} into {write_config(folder, config_entry_of(model_rows))}",
                  file=sys.stderr)
        if not args.json:
            print_model_result(f"model {name} ({source}): {described}", result, road, report, skipped)
    if args.table is not None:
        road_text = f"ROAD: pytorch-grad-cam's ROADCombined at percentiles {', '.join(map(str, percentiles))}" \
            if percentiles else "ROAD not measured"
        paths = write_table(rows, args.table, note=f"{args.data.name} ({args.format}), {args.split} split. "
                                                  + " ".join(notes) + f" {road_text}.")
        print(f"localisation table: {', '.join(str(p) for p in paths)}", file=sys.stderr)
    if args.json:
        print(json.dumps(next(iter(results.values())) if len(models) == 1 else results))
    else:
        from explain.localisation_table import markdown_table

        print(markdown_table(rows))
    return 0


def parse_lesions(text: str) -> list[str]:
    """--lesions: a comma list of lesion codes among MA, HE, EX, SE."""
    lesions = [code.strip().upper() for code in text.split(",") if code.strip()]
    unknown = [code for code in lesions if code not in ("MA", "HE", "EX", "SE")]
    if unknown or not lesions:
        raise ValueError(f"--lesions takes MA, HE, EX, SE; got {text!r}")
    return lesions


def print_model_result(heading: str, result: dict, road: dict, report: Path | None, skipped: int) -> None:
    """One model's localisation table, ROAD scores, report path and skipped photos, on stdout."""
    print(heading)
    print(result_table(result))
    print("ROAD (higher: more faithful): " + ", ".join(f"{m} {v:.3f}" for m, v in road.items() if v is not None)
          if road else "ROAD not measured (--road-percentiles none)")
    print("; ".join([f"report: {report}" if report is not None else "no HTML report (--html PATH or --out DIR)"]
                    + ([f"{skipped} unreadable images skipped"] if skipped else [])))
    print()


def parse_percentiles(text: str) -> tuple[int, ...]:
    """--road-percentiles: a comma list of integers in (0, 100), or 'none' (no ROAD)."""
    if text.strip().lower() in ("none", ""):
        return ()
    values = tuple(int(part) for part in text.split(",") if part.strip())
    if not values or any(not 0 < v < 100 for v in values):
        raise ValueError(f"--road-percentiles takes integers in (0, 100) or 'none', got {text!r}")
    return values


def config_model(folder: Path, models: list) -> int:
    """Which of the loaded (source, model) pairs ``--write-config FOLDER`` means: the one loaded from that folder,
    else the one of the same config name.

    Raises:
        ValueError: no such folder, or no single model that matches it.
    """
    from zoo.config import ModelConfig

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise ValueError(f"--write-config {folder}: no config.json there")
    same = [i for i, (source, _) in enumerate(models) if Path(source).is_dir() and Path(source).resolve() == folder.resolve()]
    if not same:
        name = ModelConfig.load(folder / "config.json").name
        same = [i for i, (_, model) in enumerate(models) if model.config.name == name]
    if len(same) != 1:
        raise ValueError(f"--write-config {folder}: it is not (or not just one) of the models evaluated")
    return same[0]


def config_entry_of(model_rows: list[dict]) -> dict:
    """``localisation_table.config_entry`` with the methods' titles."""
    from explain.localisation_table import config_entry
    from explain.methods import get_method
    from explain.spot_filter import SPOT_FILTER

    titles = {name: get_method(name).title for name in method_names()}
    titles[SPOT_FILTER] = "spot filter (photo only, no model)"
    return config_entry(model_rows, titles)


def report_path(args: argparse.Namespace, model_name: str | None) -> Path | None:
    """Where the HTML report goes (None: nowhere); with several models (``model_name``) one report each."""
    path = args.html if args.html is not None else (args.out / REPORT_NAME if args.out is not None else None)
    if path is None or model_name is None:
        return path
    safe = re.sub(r"[^\w.-]+", "_", model_name)
    return path.with_name(f"{path.stem}-{safe}{path.suffix}")


def evaluate_model(model, dataset, args: argparse.Namespace, methods: list[str], lesions: list[str],
                   percentiles: tuple[int, ...]) -> tuple[LocalisationSummary, dict[str, float], str, int]:
    """One model over the ``--split`` photos: (the localisation summary of every method, trivial map and the spot
    filter; the mean ROAD per map, empty without ``percentiles``; which photos; how many were unreadable).

    Raises:
        ValueError: invalid split fractions, or a target the model cannot explain.
    """
    from tqdm import tqdm

    from explain.faithfulness import road_scores
    from explain.methods import get_method
    from explain.spot_filter import SPOT_FILTER, spot_map
    from fundus import load_image, preprocess

    samples, part = split_samples(args, dataset, model.config)
    samples = samples[: args.limit] if args.limit else samples
    target = parse_target(args.target, list(model.config.labels))
    tau = float(model.config.tau if args.tau is None else args.tau)
    on_disc = [m for m in methods if TAU_REGIONS & get_method(m).regions] + list(BASELINES)
    explainer = Explainer(model)
    summary = LocalisationSummary(taus=DEFAULT_TAUS, tolerance=args.tolerance)
    road: dict[str, list[float]] = {}
    skipped = 0
    for sample in tqdm(samples, desc=model.config.name, unit="photo", file=sys.stderr):
        try:
            rgb = load_image(sample.image)
        except (ValueError, OSError) as error:
            print(f"skipping {sample.image}: {error}", file=sys.stderr)
            skipped += 1
            continue
        pre = preprocess(rgb, model.config)
        explanation = explainer.explain(pre.tensor, target, fov_mask=pre.fov_mask, methods=methods)
        maps = explanation.maps(t=args.t)
        shape = pre.fov_mask.shape
        maps["baseline-gaussian"] = centred_gaussian(shape, fov_mask=pre.fov_mask)
        maps["baseline-uniform"] = uniform_map(shape, fov_mask=pre.fov_mask)
        maps[SPOT_FILTER] = spot_map(pre.image, pre.fov_mask)
        for lesion in lesions:
            truth = lesion_truth(sample, lesion, args.format, pre)
            for name, saliency in maps.items():
                summary.add(name, lesion, saliency, truth, pre.fov_mask)
        disc = optic_disc_truth(sample, args.format, pre)
        if disc is not None:
            for name in (m for m in on_disc if m in maps):
                summary.add_optic_disc(name, maps[name], disc, tau=tau, fov_mask=pre.fov_mask)
        if percentiles:  # the uniform map has no order to remove pixels by: no ROAD for it
            faithful = {name: saliency for name, saliency in maps.items() if name != "baseline-uniform"}
            for name, score in road_scores(model, pre.tensor, faithful, explanation.targets[0],
                                           percentiles=percentiles).items():
                road.setdefault(name, []).append(score)
    scored = len(samples) - skipped
    described = f"{scored} photo{'' if scored == 1 else 's'}: {part}"
    return summary, {name: float(np.mean(scores)) for name, scores in road.items()}, described, skipped


LESION_COLUMNS = ("method", "lesion", "images", "PG", "EPG", "IoU", "Dice", "best τ")
DISC_COLUMNS = ("method", "τ", "photos", "patches", "on disc", "patch share", "photo share")


def result_rows(result: dict) -> tuple[list[tuple], list[tuple]]:
    """``LocalisationSummary.result`` as table rows: (the lesion rows, the optic-disc rows), in ``LESION_COLUMNS`` /
    ``DISC_COLUMNS`` order, numbers formatted."""
    def share(value) -> str:
        return "—" if value is None else f"{value:.3f}"

    lesion_rows, disc_rows = [], []
    for method, rows in result.items():
        for lesion, row in rows.items():
            if lesion == OPTIC_DISC:
                disc_rows.append((method, f"{row['tau']:.2f}", row["photos"], row["patches"], row["patches_on_disc"],
                                  share(row["patch_share"]), share(row["photo_share"])))
            else:
                lesion_rows.append((method, lesion, row["images"], *(f"{row[k]:.3f}" for k in (
                    "pointing_game", "energy_pointing_game", "best_iou", "best_dice")), f"{row['best_tau']:.2f}"))
    return lesion_rows, disc_rows


def result_table(result: dict) -> str:
    """The text output: one line per (method, lesion), then the optic-disc measure where the photos carry the disc."""
    lesion_rows, disc_rows = result_rows(result)
    lines = [_text_row(LESION_COLUMNS, 6)] + [_text_row(row, 6) for row in lesion_rows]
    if disc_rows:
        lines += ["", "optic disc: τ lesion patches whose centroid lies on the disc (patch share: of all patches; "
                      "photo share: photos with at least one)", _text_row(DISC_COLUMNS, 11)]
        lines += [_text_row(row, 11) for row in disc_rows]
    return "\n".join(lines)


def _text_row(cells, width: int) -> str:
    first, *rest = (str(c) for c in cells)
    return f"{first:<20} " + " ".join(f"{c:>{width}}" for c in rest)


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


def write_report(summary: LocalisationSummary, path: Path, title: str, note: str = "") -> Path:
    """Write the HTML report: ``report_figure`` (plotly.js inlined: works offline), then the tables of the text
    output (pointing game, energy pointing game, best IoU / Dice per method and lesion, baselines included; the
    optic-disc measure). ``note``: a line under the title (which photos)."""
    import html

    def table(columns, rows) -> str:
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    lesion_rows, disc_rows = result_rows(summary.result())
    parts = [f"<h1>{html.escape(title)}</h1>", f"<p>{html.escape(note)}</p>" if note else "",
             report_figure(summary, title).to_html(full_html=False, include_plotlyjs=True),
             "<h2>Pointing game (PG), energy pointing game (EPG), best-τ IoU and Dice</h2>",
             table(LESION_COLUMNS, lesion_rows)]
    if disc_rows:
        parts += ["<h2>Optic disc</h2><p>τ lesion patches (paper 004 eq. 4) whose centroid lies on the optic disc: "
                  "patch share of all patches, photo share of the photos with at least one.</p>",
                  table(DISC_COLUMNS, disc_rows)]
    style = ("body{font-family:sans-serif;margin:1em 2em}table{border-collapse:collapse;margin:.5em 0 1.5em}"
             "th,td{border:1px solid #ccc;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
                    f"<style>{style}</style></head><body>{''.join(parts)}</body></html>\n", encoding="utf-8")
    return path
