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
import shlex
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fundus.datasets.labels import no_disease_index
from fundus.tasks import MULTILABEL, grade_rule, task_of
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


def card_metrics(task: str, labels: list[str], outputs: np.ndarray, targets: np.ndarray,
                 cutoffs: Sequence[float], thresholds: Sequence[float] | None = None,
                 expected_cutoffs: Sequence[float] | None = None) -> tuple[dict, dict | None]:
    """(the card's numbers, the confusion matrix) of one split, from ``zoo.evaluation.metrics.compute_metrics``
    (``cutoffs`` / ``expected_cutoffs``: the model's grade rule, ``fundus.tasks.grade_rule``)."""
    from zoo.evaluation.metrics import compute_metrics, is_grading

    grading = is_grading(task, labels)
    m = compute_metrics(task, outputs, targets, labels, thresholds=thresholds, grade_cutoffs=cutoffs, grading=grading,
                        expected_cutoffs=expected_cutoffs)
    if task_of(task) is MULTILABEL:
        out = {f"auc_{k}": v for k, v in m["auc_per_class"].items() if v is not None}
        aucs = list(out.values())
        if aucs:  # none where no label has both classes here (e.g. only healthy eyes)
            out["auc_mean"] = float(np.mean(aucs))
        out["n_images"] = m["n_images"]
        return out, None
    out = {k: m[k] for k in _CARD_KEYS if m.get(k) is not None}
    # One-vs-rest AUC per grade, as the multi-label cards give per label (paper 003's Table 1 reports these).
    out.update({f"auc_{k}": v for k, v in m["auc_per_class"].items() if v is not None})
    return out, {"labels": list(labels), "matrix": m["confusion_matrix"]}


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


def _recipe_of(cfg: Any):
    argv = shlex.split(cfg.reproduce.split(" && ")[0])
    if argv[:3] != ["python", "-m", "train"]:
        raise ValueError(f"this model was not trained by `python -m train` (its command: {cfg.reproduce!r})")
    from train.recipes import get_recipe

    recipe = get_recipe(argv[3])
    return recipe, recipe.parse_args(argv[4:])


def ship(args: argparse.Namespace) -> dict[str, Any]:
    """Ship ``args.run`` to ``args.out``; returns the measured metrics."""
    import torch

    import zoo
    from fundus.datasets.labelled import labelled_photos

    run, out = Path(args.run), Path(args.out)
    split_file = run / "training" / "split.json"
    if not split_file.is_file():
        raise FileNotFoundError(f"{split_file} not found: is {run} the --out folder of a `python -m train` run?")
    model = zoo.load(str(run), device="cpu").eval()
    cfg = model.config
    recipe, rargs = _recipe_of(cfg)
    test = json.loads(split_file.read_text()).get("test", [])
    if not test:
        raise ValueError(f"{run} has no test part (trained with --test-fraction 0): nothing to measure")
    by_image = {str(s.image): s for s in recipe.labelled(recipe.load_samples(rargs), rargs)}
    missing = [x["image"] for x in test if x["image"] not in by_image]
    if missing:
        raise FileNotFoundError(f"{len(missing)} test photos of {run} not found, e.g. {missing[0]}")
    photos = [(Path(x["image"]), by_image[x["image"]].target, by_image[x["image"]].source) for x in test]
    trained_on = {source for _, _, source in photos}
    test_part = dict(split="test", val_fraction=rargs.val_fraction, test_fraction=rargs.test_fraction, seed=rargs.seed)
    for data, fmt in args.also_test:
        photos += [(it.image, it.label, it.source)
                   for it in labelled_photos([Path(data)], [fmt], cfg.labels, cfg.task, **test_part)]

    name = args.name or out.name
    cfg.name = name
    if args.description:
        cfg.description = args.description
    if args.t is not None:
        cfg.t = float(args.t)
    if args.theta is not None:
        cfg.theta = int(args.theta)
    command = ["python", "-m", "train", "ship", str(args.run), "--out", str(args.out)]
    if args.name:
        command += ["--name", args.name]
    if args.t is not None:
        command += ["--t", f"{args.t:g}"]
    if args.theta is not None:
        command += ["--theta", str(args.theta)]
    for data, fmt in args.also_test:
        command += ["--also-test", data, fmt]
    for other, data, fmt in args.leave_out:
        command += ["--leave-out", other, data, fmt]
    for other, label in args.compare:
        command += ["--compare", other, label]
    cfg.reproduce = f"{cfg.reproduce.split(' && ')[0]} && {shlex.join(command)}"
    cfg.selection = args.selection or cfg.selection
    cfg.limitations = list(args.limits) or cfg.limitations
    validation = {k: _card_row(v, cfg.task) for k, v in cfg.metrics.items() if k.startswith("validation")}
    cfg.ood = {}
    for other, label in args.compare:
        validation[f"validation, ablation: {label}"] = _validation_of(Path(other), run)
    model.save_pretrained(out, dtype=torch.float16)
    if args.ood_photos > 0:
        fit_unlike_training(model, out, json.loads(split_file.read_text()), args)
        model.save_pretrained(out, dtype=torch.float16)

    outputs, features = end_to_end(out, [p for p, _, _ in photos], progress=not args.quiet)
    distance = _distances(model, features)
    no_finding = _no_finding(model, outputs)
    nan = np.nan
    targets = np.stack([np.atleast_1d(np.asarray(t if t is not None else nan, np.float32)) for _, t, _ in photos])
    multilabel = task_of(cfg.task) is MULTILABEL
    task_targets = targets if multilabel else targets[:, 0]
    sources = [s for _, _, s in photos]
    thresholds = cfg.thresholds if multilabel else None
    labels = list(cfg.labels)
    metrics: dict[str, Any] = {}
    confusion: dict[str, Any] = {}
    pooled = np.array([s in trained_on for s in sources])
    rule = grade_rule(cfg)
    metrics["test"], cm = card_metrics(cfg.task, labels, outputs[pooled], task_targets[pooled], rule["cutoffs"],
                                       thresholds, rule["expected_cutoffs"])
    _add_unlike_training_share(metrics["test"], distance, pooled, cfg)
    _add_healthy_eyes_without_finding(metrics["test"], no_finding, task_targets, pooled, cfg)
    for source in sorted(set(sources)):
        keep = np.array([s == source for s in sources])
        key = f"test: {source}" + ("" if source in trained_on else " (not trained on)")
        metrics[key], cm = card_metrics(cfg.task, labels, outputs[keep], task_targets[keep], rule["cutoffs"],
                                        thresholds, rule["expected_cutoffs"])
        _add_unlike_training_share(metrics[key], distance, keep, cfg)
        _add_healthy_eyes_without_finding(metrics[key], no_finding, task_targets, keep, cfg)
        if cm is not None:
            confusion[key] = cm
    for other, data, fmt in args.leave_out:
        without = zoo.load(str(other), device="cpu").eval()
        items = labelled_photos([Path(data)], [fmt], without.config.labels, without.config.task, **test_part)
        if any(it.source in set(without.config.datasets) for it in items):
            raise ValueError(f"--leave-out {other} was trained on {data}")
        out_without, _ = end_to_end(Path(other), [it.image for it in items], progress=not args.quiet)
        y = np.array([it.label for it in items], np.float32)
        key = f"test: {items[0].source}, the same recipe trained without it"
        other_rule = grade_rule(without.config)
        metrics[key], cm = card_metrics(cfg.task, labels, out_without, y, other_rule["cutoffs"], thresholds,
                                        other_rule["expected_cutoffs"])
        if cm is not None:
            confusion[key] = cm
    cfg.metrics = {**metrics, "test_split": f"each data set's test patients ({rargs.test_fraction:.0%}, seed "
                                            f"{rargs.seed}), measured once on this fp16 file from the photo files",
                   **validation}
    cfg.confusion = confusion
    model.save_pretrained(out, dtype=torch.float16)  # again, with the measured numbers in config and card
    root = (args.data_root or _data_root([*rargs.data, *(Path(d) for d, _ in args.also_test)])).resolve()
    (out / PREDICTIONS).write_text(json.dumps({
        "note": "raw outputs of this folder's model on its test photos (paths relative to the data root)",
        "task": cfg.task, "labels": labels, "trained_on": sorted(trained_on),
        "photos": [{"path": str(Path(p).resolve().relative_to(root)), "source": s,
                    "target": [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(targets[k])],
                    "output": [round(float(v), 5) for v in outputs[k]]} for k, (p, _, s) in enumerate(photos)],
    }, indent=1) + "\n")
    logs = sorted((run / "training").rglob("metrics.csv"), key=lambda f: f.stat().st_mtime)  # ELLG: one per phase
    (out / "training_log.txt").write_text(f"{cfg.reproduce}\n" + "".join(
        f"\n# {f.parent.relative_to(run)}\n{f.read_text()}" for f in logs))
    stale = out / "heldout_predictions.json"  # the older ship format's outputs (validation photos)
    stale.unlink(missing_ok=True)
    return cfg.metrics


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
