"""After training: the out folder becomes a hub repo, with the run's report beside it.

``out/`` gets ``config.json`` + ``model.safetensors`` + ``README.md`` (``zoo`` writes the card from the
config: measured validation metrics, data sets and their licence, the exact command in
``config.reproduce``); ``out/training/`` keeps ``metrics.csv`` (per epoch), ``report.html`` (loss and
metric curves, ROC per class, confusion matrix), ``validation.json`` and ``args.json``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fundus.datasets.registry import format_of
from fundus.tasks import MULTILABEL, grade_rule, task_of
from train.loop import FitResult
from train.run_data import PreparedData, describe_args
from zoo.evaluation.figures import confusion_figure, roc_figure
from zoo.evaluation.metrics import compute_metrics
from zoo.evaluation.report import write_html

HEADLINE = ("accuracy", "f1_micro", "f1_macro", "precision_macro", "recall_macro", "auc_macro",
            "quadratic_kappa", "auc_per_class", "sensitivity", "specificity")


def curves_figure(history: Sequence[dict[str, Any]]):
    """Plotly figure: train/validation loss and metric per epoch."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("loss", "metric"))
    epochs = [row["epoch"] for row in history]
    keys = sorted({k for row in history for k in row})
    for key in keys:
        if key.endswith("_loss") or key in ("train_loss", "val_loss"):
            col = 1
        elif key.startswith(("train_", "val_")):
            col = 2
        else:
            continue
        ys = [row.get(key) for row in history]
        fig.add_trace(go.Scatter(x=epochs, y=ys, mode="lines+markers", name=key), row=1, col=col)
    fig.update_xaxes(title_text="epoch")
    fig.update_layout(title="Training curves")
    return fig


def write_training_report(path: Path, history: Sequence[dict[str, Any]], task: str, outputs: np.ndarray,
                          targets: np.ndarray, labels: Sequence[str], metrics: dict[str, Any], title: str) -> Path:
    """The run's plotly HTML report: curves, ROC per class, confusion matrix, headline numbers."""
    summary = {k: metrics.get(k) for k in HEADLINE if k in metrics}
    figures = [curves_figure(history)]
    if len(outputs):
        figures += [roc_figure(task, outputs, targets, labels), confusion_figure(metrics)]
    return write_html(path, figures, title, summary)


def flat_metrics_row(metrics: dict[str, Any], val_loss: float | None = None) -> dict[str, float]:
    """A ``compute_metrics`` result as one flat row of numbers for the model card: headline numbers, then per-class
    AUC/sensitivity/specificity (``train.ship.card_row_and_confusion`` makes the shipped model's test rows)."""
    flat: dict[str, float] = {k: float(metrics[k]) for k in HEADLINE
                              if isinstance(metrics.get(k), (int, float)) and metrics.get(k) is not None}
    for key in ("auc_per_class", "sensitivity", "specificity"):
        prefix = "auc" if key == "auc_per_class" else key
        for label, value in (metrics.get(key) or {}).items():
            if value is not None:
                flat[f"{prefix}_{label}"] = float(value)
    if val_loss is not None and np.isfinite(val_loss):
        flat["loss"] = float(val_loss)
    return flat


def dataset_names(args: Any) -> list[str]:
    """Human names of the data sets used: the folder names (e.g. srahim-dr600, idrid-seg-dev)."""
    return [Path(d).resolve().name or str(d) for d in args.data]


def licences(args: Any) -> str:
    """Licences of the data sets: each one's format's fact (``fundus.datasets.registry``), "unknown" where it states
    none."""
    out = []
    for root, name, fmt in zip(args.data, dataset_names(args), args.formats):
        licence = format_of(fmt, root, preset=args.preset).licence
        out.append(f"{name}: {licence or 'unknown, see the data set'}")
    return "; ".join(dict.fromkeys(out))


def publish_run(recipe: Any, args: Any, model: Any, result: FitResult, data: PreparedData) -> Path:
    """Write the hub repo into ``args.out`` and push it when ``--push-to-hub`` is given.

    ``recipe`` is the ``train.recipes.Recipe`` that trained the model (its name, paper, description and
    ``test_samples`` are read; this module never imports the recipes).

    Returns:
        The out folder.
    """
    out = Path(args.out)
    training = out / "training"
    training.mkdir(parents=True, exist_ok=True)
    cfg = model.config

    def score(outputs: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
        rule = grade_rule(cfg)
        return compute_metrics(cfg.task, outputs, targets, cfg.labels, grade_cutoffs=rule["cutoffs"],
                               expected_cutoffs=rule["expected_cutoffs"],
                               thresholds=cfg.thresholds if task_of(cfg.task) is MULTILABEL else None)

    metrics = score(result.val_outputs, result.val_targets)
    cfg.metrics = {
        # One nested dict = one split in the card's model-index (zoo.card); text keys are not metrics.
        "validation": flat_metrics_row(metrics, result.best_val_loss),
        "validation_split": f"{metrics['n_images']} photos of held-out patients ({args.val_fraction:.0%} of "
                            f"patients, seed {args.seed}); {len(data.train)} training photos; "
                            f"{len(data.unreadable)} unreadable; best epoch {result.best_epoch} "
                            f"(by {getattr(result, 'selected_on', 'val_loss')})",
    }
    sources = [x.source for x in data.val_samples]
    if len(set(sources)) > 1 and len(sources) == len(result.val_outputs):
        # Per data set too: pooled numbers hide a model that fails on one camera.
        for source in sorted(set(sources)):
            keep = np.array([x == source for x in sources])
            per = score(result.val_outputs[keep], result.val_targets[keep])
            cfg.metrics[f"validation: {source}"] = flat_metrics_row(per, None)
    cfg.datasets = dataset_names(args)
    cfg.data_license = licences(args)
    cfg.training, cfg.reproduce = dict(args.training), args.command
    if not cfg.description:
        cfg.description = (f"Recipe `python -m train {recipe.name}` (paper {recipe.paper}; its defaults: "
                           f"{recipe.description}). This model: {cfg.arch} at {cfg.input_size} px, "
                           f"{len(result.history)} epochs logged. Metrics below: validation on "
                           f"{cfg.metrics['validation_split']}.")
    model.save_pretrained(out)
    (training / "validation.json").write_text(json.dumps(metrics, indent=1, default=float) + "\n")
    (training / "args.json").write_text(json.dumps(describe_args(args), indent=1, default=str) + "\n")
    write_data_files(training, data, getattr(recipe, "test_samples", []), cfg)
    write_training_report(training / "report.html", result.history, cfg.task, result.val_outputs,
                          result.val_targets, cfg.labels, metrics, f"{cfg.name}: training report")
    if args.push_to_hub:
        push_folder(out, args.push_to_hub, endpoint=args.hub_endpoint)
    return out


def write_data_files(training: Path, data: PreparedData, test_samples: Sequence[Any], cfg: Any) -> None:
    """``split.json`` (each part's photos, patients and sources), ``data.json`` (counts, data sets, labels) and
    ``unreadable.json`` (when a photo could not be read) into the run's ``training/`` folder."""
    split = {part: [{"image": str(x.image), "patient": x.patient_id, "source": x.source} for x in samples]
             for part, samples in (("train", data.train_samples), ("val", data.val_samples), ("test", test_samples))}
    (training / "split.json").write_text(json.dumps(split, indent=1) + "\n")
    n_generated = sum(1 for n in data.train.names if n.startswith("dcgan:"))
    (training / "data.json").write_text(json.dumps({
        "n_train": len(data.train) - n_generated, "n_generated": n_generated, "n_val": len(data.val),
        "n_test": len(test_samples),
        "n_unreadable": len(data.unreadable), "datasets": cfg.datasets, "labels": list(cfg.labels)}, indent=1) + "\n")
    if data.unreadable:
        (training / "unreadable.json").write_text(json.dumps(data.unreadable, indent=1) + "\n")


def push_folder(folder: Path, repo_id: str, endpoint: str | None = None) -> Any:
    """Upload the hub repo files of ``folder`` (config, weights, card; not training/) via ``zoo.push_to_hub``."""
    import zoo

    return zoo.push_to_hub(folder, repo_id, endpoint=endpoint)
