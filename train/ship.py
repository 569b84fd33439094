"""``python -m train ship RUN --out assets/NAME``: a recipe-trained run → a shipped model.

The one path from training to ``assets/``: the run's model (``python -m train RECIPE … --out RUN``) is
saved in fp16, reloaded by ``zoo.load`` and measured **end to end from the photo files** on the run's test
patients (``RUN/training/split.json``: each data set's test part, never trained on nor used for a
choice), per data set and pooled; ``--also-test DATA FORMAT`` adds the test part of a data set the run did
not train on (how far the model transfers to a camera it never saw). The card gets the metrics, a
confusion matrix per data set, how the model was chosen, its limits and the exact commands; the
per-photo outputs go to ``test_predictions.json`` (the tests recompute the card's numbers from them).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fundus.datasets.labels import no_disease_index
from fundus.tasks import MULTILABEL, grade_rule, task_of
from train.reproduce import command_line, training_of
from zoo.helpformat import DefaultsHelpFormatter

PREDICTIONS = "test_predictions.json"
_CARD_KEYS = ("quadratic_kappa", "accuracy", "auc_macro", "auc_any_dr", "auc_referable_dr", "n_images")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m train ship", description=__doc__.split("\n\n")[0],
                                formatter_class=DefaultsHelpFormatter)
    p.add_argument("run", type=Path, help="out folder of a `python -m train RECIPE` run")
    p.add_argument("--out", type=Path, required=True, help="the shipped model's folder, e.g. assets/dr-grading")
    p.add_argument("--name", default=None, help="model name (default: the folder name of --out)")
    p.add_argument("--t", type=float, default=None, help="the model's default GMSM gate t (default: the run's)")
    p.add_argument("--theta", type=int, default=None,
                   help="the model's default θ for the attention crop (paper 000 eq. 5); pick one that gives a "
                        "visible crop on typical photos (default: the run's)")
    p.add_argument("--also-test", nargs=2, action="append", default=[], metavar=("DATA", "FORMAT"),
                   help="also measure on this data set's test part (the project's per-source split)")
    p.add_argument("--leave-out", nargs=3, action="append", default=[], metavar=("RUN", "DATA", "FORMAT"),
                   help="a run of the same recipe trained without DATA: its numbers on DATA's test part go in the card "
                        "(how far the model transfers to a camera it never saw)")
    p.add_argument("--compare", nargs=2, action="append", default=[], metavar=("RUN", "LABEL"),
                   help="another run of the same data and split (an ablation, e.g. without attention crops): its "
                        "validation metrics go in the card as 'validation, ablation: LABEL'")
    p.add_argument("--ood-photos", type=int, default=300,
                   help="training photos (a seeded sample) that fit the unlike-training reference (zoo.ood); its "
                        "threshold is the --ood-quantile of the validation photos' distances; 0: no indicator")
    p.add_argument("--ood-quantile", type=float, default=0.99, help="validation distance quantile for the threshold")
    p.add_argument("--description", default="", help="the card's summary (default: the run's)")
    p.add_argument("--selection", default="", help="how this model was chosen (for the card)")
    p.add_argument("--limit", action="append", default=[], dest="limits", metavar="TEXT",
                   help="a known limit for the card (repeatable)")
    p.add_argument("--data-root", type=Path, default=None,
                   help="paths in test_predictions.json are relative to this (default: the data sets' parent)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def card_row_and_confusion(cfg: Any, outputs: np.ndarray, targets: np.ndarray,
                           rule_of: Any = None) -> tuple[dict, dict | None]:
    """(the card's row, the confusion matrix) of one split from ``zoo.evaluation.metrics.compute_metrics``, with
    ``cfg``'s labels and thresholds and the grade rule of ``rule_of`` (default ``cfg``; ``fundus.tasks.grade_rule``);
    no matrix for a multi-label model."""
    from zoo.evaluation.metrics import compute_metrics, is_grading

    multilabel = task_of(cfg.task) is MULTILABEL
    labels, rule = list(cfg.labels), grade_rule(rule_of or cfg)
    m = compute_metrics(cfg.task, outputs, targets, labels, thresholds=cfg.thresholds if multilabel else None,
                        grade_cutoffs=rule["cutoffs"], grading=is_grading(cfg.task, labels),
                        expected_cutoffs=rule["expected_cutoffs"])
    if multilabel:
        row = {f"auc_{k}": v for k, v in m["auc_per_class"].items() if v is not None}
        aucs = list(row.values())
        if aucs:  # none where no label has both classes here (e.g. only healthy eyes)
            row["auc_mean"] = float(np.mean(aucs))
        row["n_images"] = m["n_images"]
        return row, None
    row = {k: m[k] for k in _CARD_KEYS if m.get(k) is not None}
    # One-vs-rest AUC per grade, as the multi-label cards give per label (paper 003's Table 1 reports these).
    row.update({f"auc_{k}": v for k, v in m["auc_per_class"].items() if v is not None})
    return row, {"labels": labels, "matrix": m["confusion_matrix"]}


def end_to_end(folder: Path, images: Sequence[Path], progress: bool = True, desc: str = "test photos, end to end",
               layer: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw outputs of the shipped file (reloaded by ``zoo.load``) on the original photos, and the pooled
    features of ``layer`` (default the target layer; ``zoo.ood``)."""
    import torch
    from tqdm.auto import tqdm

    import zoo
    from fundus import load_image, preprocess
    from zoo.ood import pooled_features

    model = zoo.load(str(folder), device="cpu").eval()
    outs = []
    with torch.no_grad(), pooled_features(model, layer or model.config.target_layer) as features:
        for image in tqdm(images, desc=desc, disable=not progress):
            outs.append(model(preprocess(load_image(image), model.config).tensor)[0].float().numpy())
    if not outs:
        return np.zeros((0, model.config.num_outputs), np.float32), np.zeros((0, 0), np.float32)
    return np.stack(outs), torch.cat(features).numpy()


# The flags the reproduce line records, in this order, where they differ from their defaults: what the shipped
# numbers depend on. The card's own texts (--description, --selection, --limit), --data-root and --quiet are not.
RECORDED_FLAGS = ("--name", "--t", "--theta", "--also-test", "--leave-out", "--compare", "--ood-photos",
                  "--ood-quantile")


@dataclass
class Run:
    """Step 1's result: a ``python -m train RECIPE`` run as ship reads it."""

    folder: Path
    model: Any  # the run's FundusNet, fp32
    recipe: Any  # the train.recipes.Recipe that trained it
    flags: argparse.Namespace  # the recipe's flags, parsed again from config.training
    training: dict[str, Any]  # config.training (train.reproduce)
    split: dict[str, list[dict[str, str]]]  # training/split.json

    @property
    def test_part(self) -> dict[str, Any]:
        """``labelled_photos`` keywords for a data set's test part, as this run split its data sets."""
        return dict(split="test", val_fraction=self.flags.val_fraction, test_fraction=self.flags.test_fraction,
                    seed=self.flags.seed)


@dataclass
class PhotoSet:
    """Step 2's result: the photos measured, each with its target and data set."""

    paths: list[Path]
    targets: list[Any]
    sources: list[str]
    trained_on: set[str]  # the run's data sets (the others come from --also-test)


@dataclass
class Measured:
    """Step 3's result: the card's test rows, their confusion matrices and the raw outputs behind them."""

    metrics: dict[str, Any]
    confusion: dict[str, Any]
    outputs: np.ndarray
    targets: np.ndarray  # (N, K) float, NaN where unknown


def ship(args: argparse.Namespace) -> dict[str, Any]:
    """Ship ``args.run`` to ``args.out``: load → test photos → measure → write; returns the measured metrics."""
    run = load_run(Path(args.run))
    photos = photos_to_measure(run, args.also_test)
    validation = describe_shipment(run, args)
    save_with_reference(run, args)
    measured = measure(run, photos, args)
    write_shipment(run, photos, measured, validation, args)
    return run.model.config.metrics


def load_run(folder: Path) -> Run:
    """Step 1: the run's model, the recipe and flags that trained it (``config.training``) and its split.

    Raises:
        FileNotFoundError: ``folder`` is not the out folder of a ``python -m train`` run.
        ValueError: the model was not trained by a recipe, or the run kept no test part.
    """
    import zoo
    from train.recipes import get_recipe

    split_file = folder / "training" / "split.json"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} not found: is {folder} the --out folder of a `python -m train` run?")
    model = zoo.load(str(folder), device="cpu").eval()
    training = training_of(model.config)
    recipe = get_recipe(training["recipe"])
    split = json.loads(split_file.read_text())
    if not split.get("test"):
        raise ValueError(f"{folder} has no test part (trained with --test-fraction 0): nothing to measure")
    return Run(folder, model, recipe, recipe.parse_args(training["args"]), training, split)


def photos_to_measure(run: Run, also_test: Sequence[Sequence[str]]) -> PhotoSet:
    """Step 2: the run's test photos with their targets (as its recipe labels them), then each ``--also-test`` data
    set's test part.

    Raises:
        FileNotFoundError: a test photo of the run is no longer where the run found it.
    """
    from fundus.datasets.labelled import labelled_photos

    recipe, flags, cfg = run.recipe, run.flags, run.model.config
    by_image = {str(s.image): s for s in recipe.labelled(recipe.load_samples(flags), flags)}
    missing = [x["image"] for x in run.split["test"] if x["image"] not in by_image]
    if missing:
        raise FileNotFoundError(f"{len(missing)} test photos of {run.folder} not found, e.g. {missing[0]}")
    own = [by_image[x["image"]] for x in run.split["test"]]
    photos = PhotoSet([Path(s.image) for s in own], [s.target for s in own], [s.source for s in own],
                        {s.source for s in own})
    for data, fmt in also_test:
        for item in labelled_photos([Path(data)], [fmt], cfg.labels, cfg.task, **run.test_part):
            photos.paths.append(item.image)
            photos.targets.append(item.label)
            photos.sources.append(item.source)
    return photos


def describe_shipment(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    """The config's name, card texts and training facts for the shipped model; returns its validation rows (the
    run's, then each ``--compare`` run's as an ablation row).

    Raises:
        ValueError: a ``--compare`` run did not validate on the same patients.
    """
    cfg = run.model.config
    cfg.name = args.name or Path(args.out).name
    if args.description:
        cfg.description = args.description
    if args.t is not None:
        cfg.t = float(args.t)
    if args.theta is not None:
        cfg.theta = int(args.theta)
    cfg.training = {**run.training, "ship": ship_arguments(args)}
    cfg.reproduce = command_line(cfg.training)
    cfg.selection = args.selection or cfg.selection
    cfg.limitations = list(args.limits) or cfg.limitations
    validation = {k: _card_row(v, cfg.task) for k, v in cfg.metrics.items() if k.startswith("validation")}
    for other, label in args.compare:
        validation[f"validation, ablation: {label}"] = _validation_of(Path(other), run.folder)
    return validation


def ship_arguments(args: argparse.Namespace) -> list[str]:
    """The ship step's arguments as the reproduce line gives them: the run, ``--out``, then each of
    ``RECORDED_FLAGS`` that differs from its default (an appended flag once per value)."""
    parser = build_parser()
    words = [str(args.run), "--out", str(args.out)]
    for flag in RECORDED_FLAGS:
        dest = flag[2:].replace("-", "_")
        value = getattr(args, dest)
        if value == parser.get_default(dest):
            continue
        for item in value if isinstance(value, list) else [value]:
            words += [flag, *(_flag_text(v) for v in (item if isinstance(item, (list, tuple)) else [item]))]
    return words


def _flag_text(value: Any) -> str:
    # 0.5, not 0.5000: the shortest text that reads back as the same number
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def save_with_reference(run: Run, args: argparse.Namespace) -> None:
    """The model in fp16 in ``--out``, with its unlike-training reference fitted through that file (none with
    ``--ood-photos 0``)."""
    import torch

    model, out = run.model, Path(args.out)
    model.config.ood = {}
    model.save_pretrained(out, dtype=torch.float16)
    if args.ood_photos > 0:
        fit_unlike_training(model, out, run.split, args)
        model.save_pretrained(out, dtype=torch.float16)


def measure(run: Run, photos: PhotoSet, args: argparse.Namespace) -> Measured:
    """Step 3: the shipped file on the test photos end to end: the card's rows pooled over the run's data sets and
    per data set (with the share flagged unlike training and, for multi-label models, healthy eyes without a
    finding), then each ``--leave-out`` run on the data set it was trained without."""
    model, cfg = run.model, run.model.config
    outputs, features = end_to_end(Path(args.out), photos.paths, progress=not args.quiet)
    distance, no_finding = _distances(model, features), _no_finding(model, outputs)
    targets = np.stack([np.atleast_1d(np.asarray(t if t is not None else np.nan, np.float32))
                        for t in photos.targets])
    task_targets = targets if task_of(cfg.task) is MULTILABEL else targets[:, 0]
    measured = Measured({}, {}, outputs, targets)
    parts = [("test", np.array([s in photos.trained_on for s in photos.sources]))]
    parts += [(f"test: {source}" + ("" if source in photos.trained_on else " (not trained on)"),
               np.array([s == source for s in photos.sources])) for source in sorted(set(photos.sources))]
    for key, keep in parts:
        row, matrix = card_row_and_confusion(cfg, outputs[keep], task_targets[keep])
        _add_unlike_training_share(row, distance, keep, cfg)
        _add_healthy_eyes_without_finding(row, no_finding, task_targets, keep, cfg)
        measured.metrics[key] = row
        if matrix is not None and key != "test":
            measured.confusion[key] = matrix
    for other, data, fmt in args.leave_out:
        key, row, matrix = measure_left_out(run, Path(other), Path(data), fmt, args)
        measured.metrics[key] = row
        if matrix is not None:
            measured.confusion[key] = matrix
    return measured


def measure_left_out(run: Run, other: Path, data: Path, fmt: str,
                     args: argparse.Namespace) -> tuple[str, dict, dict | None]:
    """A run of the same recipe trained without ``data``: its card row and confusion matrix on ``data``'s test part.

    Raises:
        ValueError: ``other`` was trained on ``data``.
    """
    import zoo
    from fundus.datasets.labelled import labelled_photos

    without = zoo.load(str(other), device="cpu").eval()
    items = labelled_photos([data], [fmt], without.config.labels, without.config.task, **run.test_part)
    if any(it.source in set(without.config.datasets) for it in items):
        raise ValueError(f"--leave-out {other} was trained on {data}")
    outputs, _ = end_to_end(other, [it.image for it in items], progress=not args.quiet)
    targets = np.array([it.label for it in items], np.float32)
    row, matrix = card_row_and_confusion(run.model.config, outputs, targets, rule_of=without.config)
    return f"test: {items[0].source}, the same recipe trained without it", row, matrix


def write_shipment(run: Run, photos: PhotoSet, measured: Measured, validation: dict[str, Any],
                   args: argparse.Namespace) -> None:
    """Step 4: the measured numbers into config and card (saved again), the per-photo outputs
    (``test_predictions.json``) and the training log."""
    import torch

    cfg, out, flags = run.model.config, Path(args.out), run.flags
    cfg.metrics = {**measured.metrics, "test_split": f"each data set's test patients ({flags.test_fraction:.0%}, "
                                                     f"seed {flags.seed}), measured once on this fp16 file from the "
                                                     "photo files", **validation}
    cfg.confusion = measured.confusion
    run.model.save_pretrained(out, dtype=torch.float16)
    root = (args.data_root or _data_root([*flags.data, *(Path(d) for d, _ in args.also_test)])).resolve()
    (out / PREDICTIONS).write_text(json.dumps({
        "note": "raw outputs of this folder's model on its test photos (paths relative to the data root)",
        "task": cfg.task, "labels": list(cfg.labels), "trained_on": sorted(photos.trained_on),
        "photos": [{"path": str(Path(p).resolve().relative_to(root)), "source": s,
                    "target": [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(measured.targets[k])],
                    "output": [round(float(v), 5) for v in measured.outputs[k]]}
                   for k, (p, s) in enumerate(zip(photos.paths, photos.sources))],
    }, indent=1) + "\n")
    logs = sorted((run.folder / "training").rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)  # ELLG: a phase each
    (out / "training_log.txt").write_text(f"{cfg.reproduce}\n" + "".join(
        f"\n# {f.parent.relative_to(run.folder)}\n{f.read_text()}" for f in logs))
    (out / "heldout_predictions.json").unlink(missing_ok=True)  # the older ship format's outputs (validation photos)


def fit_unlike_training(model: Any, out: Path, split: dict[str, list[dict[str, str]]], args: argparse.Namespace) -> None:
    """The unlike-training indicator (``zoo.ood``): the reference from a seeded sample of the run's training
    photos, the threshold from its validation photos, both through the shipped file end to end."""
    from zoo.ood import fit_reference

    train = [Path(x["image"]) for x in split["train"]]
    rng = np.random.default_rng(0)
    sample = [train[i] for i in sorted(rng.choice(len(train), min(args.ood_photos, len(train)), replace=False))]
    val = [Path(x["image"]) for x in split["val"]]
    _, train_features = end_to_end(out, sample, progress=not args.quiet, desc="unlike-training reference")
    _, val_features = end_to_end(out, val, progress=not args.quiet, desc="unlike-training threshold")
    fit_reference(model, train_features, val_features, quantile=args.ood_quantile,
                  note=f"{len(sample)} training photos (seeded sample) / {len(val)} validation photos")
    for buffer in model.feature_reference.buffers():  # as the fp16 file will hold them
        buffer.copy_(buffer.half().float())


def _distances(model: Any, features: np.ndarray) -> np.ndarray | None:
    import torch

    from zoo.ood import reference_of

    reference = reference_of(model)
    return None if reference is None else reference.distance(torch.from_numpy(features)).numpy()


def _add_unlike_training_share(row: dict[str, Any], distance: np.ndarray | None, keep: np.ndarray, cfg: Any) -> None:
    """The share of these test photos the unlike-training indicator flags (about 1 - quantile for photos like
    the training ones; more for a source the model never saw)."""
    if distance is not None and keep.any():
        row["unlike_training_share"] = float((distance[keep] > cfg.ood["threshold"]).mean())


def _no_finding(model: Any, outputs: np.ndarray) -> np.ndarray | None:
    """Per photo: the model's decided answer (``FundusNet.decide``, the app's rule) holds no disease label;
    None for a model without a no-disease label."""
    import torch

    k = no_disease_index(model.config.labels) if task_of(model.config.task) is MULTILABEL else None
    if k is None:
        return None
    decided = model.decide(torch.from_numpy(np.asarray(outputs, np.float32))).numpy()
    return ~np.delete(decided, k, axis=1).any(1)


def _add_healthy_eyes_without_finding(row: dict[str, Any], no_finding: np.ndarray | None, targets: np.ndarray,
                                      keep: np.ndarray, cfg: Any) -> None:
    """Specificity per eye: of the healthy eyes (the no-disease label is 1), the share whose answer holds no
    lesion or disease label at all."""
    if no_finding is None:
        return
    healthy = keep & (np.nan_to_num(targets[:, no_disease_index(cfg.labels)], nan=0.0) == 1)
    if healthy.any():
        row["healthy_eyes_without_finding"] = float(no_finding[healthy].mean())


def _card_row(row: Any, task: str) -> Any:
    """A run's validation row with the numbers the test rows have: for multi-label models the AUCs and the
    micro F1 (per-label sensitivity at the 0.5 threshold was stored as 0 where a label was never known, by runs
    before compute_metrics said None)."""
    if task_of(task) is not MULTILABEL or not isinstance(row, dict):
        return row
    return {k: v for k, v in row.items() if k.startswith("auc") or k in ("f1_micro", "loss", "n_images")}


def _validation_of(other: Path, run: Path) -> dict[str, float]:
    """The pooled validation metrics of ``other``, a run on the same validation patients as ``run``.

    Raises:
        ValueError: the two runs did not split the photos the same way.
    """
    split = json.loads((run / "training" / "split.json").read_text())
    theirs = json.loads((other / "training" / "split.json").read_text()) \
        if (other / "training" / "split.json").is_file() else None
    if theirs is None or [x["image"] for x in theirs["val"]] != [x["image"] for x in split["val"]]:
        raise ValueError(f"--compare {other}: not the same validation patients as {run}")
    other_config = json.loads((other / "config.json").read_text())
    return _card_row(other_config["metrics"]["validation"], other_config["task"])


def _data_root(folders: Sequence[Path]) -> Path:
    """The data sets' common parent (e.g. ../shared/data): stored paths then read data-set/…/photo."""
    import os

    return Path(os.path.commonpath([str(Path(f).resolve().parent) for f in folders]))


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        metrics = ship(args)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in metrics.items() if isinstance(v, dict)}, indent=1))
    print(f"shipped to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
