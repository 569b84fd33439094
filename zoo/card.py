"""Model cards (the hub repo's README.md): YAML metadata + intended use, data, metrics, reproduction."""
from __future__ import annotations

import numbers
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData

from fundus.datasets.labels import DR_ONLY, is_dr_grader, spelled_out, what_it_answers
from fundus.tasks import FINDING_FLOOR, MULTILABEL, task_of
from zoo.architectures.registry import map_grid_text
from zoo.config import GRADCAM_IS_CAM, ModelConfig
from zoo.fundus_check_reference import shipped_reference
from zoo.localisation import card_lines
from zoo.papers import PAPERS

LIBRARY_NAME = "fundus-cam-zoo"


def _metric_rows(metrics: dict) -> list[tuple[str, str, float]]:
    """(split, metric, value) rows from ``{"accuracy": 0.9}`` or ``{"validation": {"accuracy": 0.9}}``."""
    rows = []
    for key, value in metrics.items():
        if isinstance(value, bool):
            continue
        if isinstance(value, numbers.Real):
            rows.append(("", str(key), float(value)))
        elif isinstance(value, dict):
            rows += [(str(key), str(k), float(v)) for k, v in value.items()
                     if isinstance(v, numbers.Real) and not isinstance(v, bool)]
    return rows


def _dataset_of(split: str, datasets: list[str]) -> str:
    """The data set a metric split is about: the one its name mentions (e.g. "held-out, idrid-seg-dev only"),
    else all the model's data sets."""
    named = [d for d in datasets if d in (split or "")]
    return named[0] if len(named) == 1 else " + ".join(datasets) or "unspecified"


def card_data(config: ModelConfig) -> ModelCardData:
    """The card's YAML metadata (license, library, pipeline tag, datasets, tags, model-index)."""
    results = []
    for split, metric, value in _metric_rows(config.metrics):
        dataset = _dataset_of(split, config.datasets)
        results.append(EvalResult(task_type="image-classification", dataset_type=dataset, dataset_name=dataset,
                                  dataset_split=split or None, metric_type=metric, metric_value=value))
    tags = ["fundus", "retina", "ophthalmology", "explainability", "grad-cam", config.arch, config.task]
    if config.paper:
        tags.append(f"paper-{config.paper}")
    return ModelCardData(
        license="other",
        license_name="fundus-cam-zoo-research-only",
        library_name=LIBRARY_NAME,
        pipeline_tag="image-classification",
        datasets=list(config.datasets) or None,
        tags=tags,
        model_name=config.name if results else None,  # only model-index needs it
        eval_results=results or None,
    )


def _grid_line(config: ModelConfig) -> list[str]:
    try:
        grid = map_grid_text(config)
    except ValueError:  # an architecture this installation does not know
        return []
    if not grid:
        return []
    dilated = (f" (output stride {config.output_stride}: the last stages dilated instead of strided)"
               if config.output_stride != 32 else "")
    return [f"- map grid: {grid}{dilated}; the maps are upsampled from it to the input size"]


def _paper_comparison(config: ModelConfig) -> list[str]:
    """The paper's own per-label numbers beside this model's on the same data set's test split, where both exist."""
    paper = PAPERS.get(config.paper)
    reported = paper.reported if paper else None
    ours = config.metrics.get(f"test: {reported.dataset}", {}) if reported else {}
    if not ours or not any(f"{reported.metric}_{label}" in ours for label in reported.values):
        return []
    lines = ["", f"Paper {config.paper}'s reported {reported.metric.upper()} ({reported.where}) beside this model's "
                 f"on the {reported.dataset} test split (a different split and photo size: a guide, not a tie):", "",
             "| | " + " | ".join(reported.values) + " |", "|---" * (len(reported.values) + 1) + "|",
             f"| paper {config.paper} | " + " | ".join(f"{v:.2f}" for v in reported.values.values()) + " |"]
    ours_row = [ours.get(f"{reported.metric}_{label}") for label in reported.values]
    lines.append("| this model | " + " | ".join("-" if v is None else f"{v:.2f}" for v in ours_row) + " |")
    return lines


def card_text(config: ModelConfig) -> str:
    """The card's Markdown body."""
    lines = [f"# {config.name}", "", summary(config), ""]
    if config.description:
        lines += [config.description, ""]
    lines += _use_and_model_lines(config) + _data_lines(config) + _metrics_lines(config)
    if config.localisation:
        lines += ["", *card_lines(config.localisation)]
    if config.limitations:
        lines += ["", "## Known limits", ""] + [f"- {item}" for item in config.limitations]
    lines += _reproduce_and_usage_lines(config)
    return "\n".join(lines)


def _use_and_model_lines(config: ModelConfig) -> list[str]:
    """The intended use and the model's facts: architecture, paper, labels, input, explanation layers, weights."""
    paper = PAPERS.get(config.paper)
    return [
        f"A `{config.arch}` model of the Fundus CAM Zoo for {task_of(config.task).description} of retinal fundus "
        "photographs.",
        "",
        "## Intended use",
        "",
        "Research and teaching: explainable classification of colour fundus photographs with class activation "
        "maps (CAM, Grad-CAM, Guided Grad-CAM, GMSM).",
        "",
        "**Not for clinical use.** This model is not a medical device; it must not be used to diagnose, "
        "screen or treat anyone.",
        "",
        "## Model",
        "",
        f"- architecture: `{config.arch}` {('(arch_kwargs ' + repr(config.arch_kwargs) + ')') if config.arch_kwargs else ''}".rstrip(),
        f"- paper: {config.paper} — {paper.title}" if paper else "- paper: none",
        f"- task: {config.task}; labels: {', '.join(spelled_out(label) for label in config.labels)}",
        f"- input: {config.input_size}×{config.input_size} RGB, mean {list(config.mean)}, std {list(config.std)}; "
        f"field-of-view crop {config.preprocessing.fov_crop}, CLAHE {config.preprocessing.clahe}, "
        f"local average colour subtraction {config.preprocessing.graham}",
        f"- explanation layers: target `{config.target_layer}`, low `{config.low_layer}`; plain CAM: "
        + (f"{config.cam}" if config.cam else f"undefined ({config.cam_reason})"),
        *_grid_line(config),
        f"- initial weights (pretrained status): {config.pretrained}",
        *([f"- {GRADCAM_IS_CAM}"] if config.gradcam_is_cam else []),
        *([f"- findings: a label is a finding when its probability reaches its threshold, and never below "
           f"{FINDING_FLOOR:.0%} whatever the threshold (`fundus.tasks.FINDING_FLOOR`); the metrics below use the "
           "thresholds as fitted"] if task_of(config.task) is MULTILABEL else []),
        "",
    ]


def _data_lines(config: ModelConfig) -> list[str]:
    """The training data sets and the data's and the weights' licences."""
    lines = ["## Training data and licence", ""]
    if config.datasets:
        lines.append(f"- data sets: {', '.join(config.datasets)}")
        lines.append(f"- data licence: {config.data_license or 'not recorded'}")
    else:
        lines.append("- none recorded: these weights are untrained or their training data was not recorded.")
    return lines + [
        "- weights licence: research use only, subject to the training data's licence above"
        + (" and the Apache-2.0 EfficientNet-Lite ImageNet weights" if "efficientnet-lite" in config.pretrained else ""),
        "",
    ]


def _metrics_lines(config: ModelConfig) -> list[str]:
    """The metrics table, how the model was chosen, the unlike-training indicator, the confusion matrices and the
    paper's reported numbers beside ours."""
    lines = ["## Metrics", ""]
    rows = _metric_rows(config.metrics)
    if rows:
        lines += ["| split | metric | value |", "|---|---|---|"]
        lines += [f"| {split or '-'} | {metric} | {value:.4g} |" for split, metric, value in rows]
    else:
        lines.append("No metrics recorded.")
    if config.selection:
        lines += ["", f"How this model was chosen: {config.selection}"]
    if config.ood:
        lines += ["", f"Unlike-training indicator (`zoo.ood`): a photo whose {config.ood['method']} at "
                      f"`{config.ood['layer']}` exceeds {config.ood['threshold']:.3g} (the {config.ood['quantile']:.0%} "
                      f"quantile of validation photos; fitted on {config.ood['fitted_on']}) is flagged \"unlike the "
                      "training photos\"; `unlike_training_share` above is the share of each source's test photos "
                      "flagged.", *content_reference_lines(config)]
    for split, cm in config.confusion.items():
        labels = cm["labels"]
        lines += ["", f"Confusion matrix, {split} (rows: true, columns: predicted):", "",
                  "| true \\ predicted | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
        lines += [f"| {label} | " + " | ".join(str(v) for v in row) + " |" for label, row in zip(labels, cm["matrix"])]
    return lines + _paper_comparison(config)


def _reproduce_and_usage_lines(config: ModelConfig) -> list[str]:
    """The command that trained (and shipped) the model, and how to load it."""
    lines = ["", "## How to reproduce", ""]
    lines += (["```bash", config.reproduce, "```"] if config.reproduce else ["No training command recorded."])
    return lines + [
        "",
        "## How to use",
        "",
        "```python",
        "import zoo",
        f'model = zoo.load("{config.name}")  # or a local folder / hub repo id',
        "print(zoo.predict(model, [\"fundus.jpg\"]))",
        "```",
        "",
    ]


def content_reference_lines(config: ModelConfig) -> list[str]:
    """The unlike-training indicator's second, model-independent distance and what it flags (as measured when it
    was fitted), for a model trained on the photos it describes; [] otherwise."""
    reference = shipped_reference()
    if reference is None or not reference.applies_to(config):
        return []
    measured = reference.about.get("measured", {})
    held_out = measured.get("held_out_flagged_two_fold")
    kinds = measured.get("lookalikes_flagged", {})
    line = ("A second distance, independent of this model, flags a photo too: the fundus check's content features "
            "(ImageNet EfficientNet-Lite0, pooled over the whole photo) against real fundus photos "
            f"(`zoo.fundus_check_reference`: Mahalanobis under a probabilistic-PCA covariance, threshold "
            f"{reference.threshold:.3g}, the {reference.quantile:.0%} quantile of held-out real photos); "
            "`flagged_by` says which distance flagged a photo. The field-of-view crop and Graham preprocessing can make "
            "a picture that is not a fundus photo look ordinary to this model; the content distance sees what it shows.")
    if held_out and kinds:
        flagged = ", ".join(f"{kind} {n}/{total}" for kind, (n, total) in kinds.items())
        line += (f" Measured on ../shared/data when it was fitted: it flags {held_out[0] / held_out[1]:.1%} of held-out "
                 f"real fundus photos ({held_out[0]:,} of {held_out[1]:,}, each half with the threshold set on the other) "
                 f"and these lookalikes (real photos that are not colour fundus photos): {flagged}.")
    return ["", line]


def summary(config: ModelConfig) -> str:
    """The card's first paragraph in plain words: what the model answers and what it cannot do, before the details
    and the metrics."""
    text = (f"**What it answers:** {what_it_answers(config.labels)} from one colour fundus photograph "
            f"({', '.join(spelled_out(label) for label in config.labels)}). A research model, not for clinical use.")
    return f"{text} {DR_ONLY}" if is_dr_grader(config.labels) else text


def make_card(config: ModelConfig) -> ModelCard:
    """The full model card for a config."""
    return ModelCard(f"---\n{card_data(config).to_yaml()}\n---\n\n{card_text(config)}")


def write_card(config: ModelConfig, path: str | Path) -> Path:
    """Write the model card to ``path`` (a README.md)."""
    path = Path(path)
    make_card(config).save(path)
    return path
