"""Paper 002's eye-disease label space (Normal, Diabetes, Glaucoma, Cataract) read from every source, and the
two recipes that train it: ``odir --labels`` and ``rfmid-ensemble --labels`` (the paper 000 ensemble)."""
from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fundus import make_fundus

LABELS = ["Normal", "Diabetes", "Glaucoma", "Cataract"]
NAN = float("nan")


def _write(path: Path, seed: int, size: int = 64) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(make_fundus(size, seed=seed)[0]).save(path)


def _targets(ds) -> dict[str, list[float]]:
    from fundus.datasets.labels import sample_target

    return {Path(s.image).name: sample_target(s, ds, LABELS, "multilabel").tolist() for s in ds}


def _same(a: list[float], b: list[float]) -> bool:
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def test_odir_class_folders_say_one_diagnosis_and_leave_dr_unknown_for_diseased_eyes(tmp_path):
    from fundus.datasets import load_dataset

    for i, cls in enumerate(("normal", "glaucoma", "cataract")):
        _write(tmp_path / "odir-ngc" / cls / f"{i}_left.jpg", i)
    got = _targets(load_dataset("imagefolder", tmp_path / "odir-ngc", "all"))
    assert _same(got["0_left.jpg"], [1, 0, 0, 0])  # a normal eye has no disease at all
    assert _same(got["1_left.jpg"], [0, NAN, 1, 0])  # glaucoma: not cataract (one class per eye), DR not graded
    assert _same(got["2_left.jpg"], [0, NAN, 0, 1])


def test_dr_grades_say_diabetes_and_normal_only(tmp_path):
    from fundus.datasets import load_dataset

    root = tmp_path / "eyepacs"
    rows = ["image,level"]
    for i, level in enumerate((0, 1, 4)):
        _write(root / "train" / f"{10 + i}_left.jpeg", i)
        rows.append(f"{10 + i}_left,{level}")
    (root / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    got = _targets(load_dataset("eyepacs", root, "train"))
    # Glaucoma and cataract are not graded in a DR screening set: unknown, whatever the DR grade.
    assert _same(got["10_left.jpeg"], [1, 0, NAN, NAN])
    assert _same(got["11_left.jpeg"], [0, 1, NAN, NAN]) and _same(got["12_left.jpeg"], [0, 1, NAN, NAN])


def test_hrf_suffixes_and_official_odir_columns_map_by_name(tmp_path):
    from types import SimpleNamespace

    from fundus.datasets import load_dataset
    from fundus.datasets.labels import is_diagnosis_space, sample_target

    for i, suffix in enumerate(("h", "dr", "g")):
        _write(tmp_path / "hrf" / "images" / f"0{i + 1}_{suffix}.jpg", i)
    got = _targets(load_dataset("hrf", tmp_path / "hrf"))
    assert _same(got["01_h.jpg"], [1, 0, 0, 0])
    assert _same(got["02_dr.jpg"], [0, 1, 0, NAN]) and _same(got["03_g.jpg"], [0, 0, 1, NAN])
    # ODIR-5K's official N D G C A H M O columns, in another order than the model's.
    odir = SimpleNamespace(labels=list("NDGCAHMO"), task="multilabel")
    row = np.array([0, 1, 0, 1, 0, 0, 0, 1], np.float32)
    assert sample_target(SimpleNamespace(label=row), odir, ["Cataract", "Normal", "Diabetes"], "multilabel").tolist() \
        == [1, 0, 1]
    assert is_diagnosis_space(LABELS) and is_diagnosis_space(list("NDGC"))
    assert not is_diagnosis_space(["Diabetes", "Glaucoma"])  # without Normal
    assert not is_diagnosis_space(["Normal", "N"])  # twice the same diagnosis
    assert not is_diagnosis_space(["BP/MA", "HM", "HEX", "CWS", "healthy"])  # paper 001's lesions


def test_recipes_take_the_diagnosis_labels_and_reject_others(tmp_path):
    from train.recipes import get_recipe

    base = ["--data", str(tmp_path), "--format", "imagefolder"]
    for name in ("odir", "rfmid-ensemble"):
        recipe = get_recipe(name)
        recipe.parse_args([*base, "--labels", *LABELS])
        assert list(recipe.labels) == LABELS
        with pytest.raises(SystemExit):
            get_recipe(name).parse_args([*base, "--labels", "Diabetes", "Glaucoma"])
    assert len(get_recipe("odir").labels) == 8 and len(get_recipe("rfmid-ensemble").labels) == 28  # defaults
    pair = get_recipe("rfmid-ensemble")
    args = pair.parse_args([*base, "--labels", *LABELS, "--arch", "efficientnet_lite0+efficientnet_lite0+efficientnet_lite1"])
    assert pair.architectures(args) == ("efficientnet_lite0", "efficientnet_lite0", "efficientnet_lite1")


def _odir_ngc_fixture(root: Path, per_class: int = 6) -> Path:
    seed = 0
    for cls in ("normal", "glaucoma", "cataract"):
        for p in range(per_class):
            seed += 1
            _write(root / cls / f"{seed}_left.jpg", seed, size=72)
    return root


@pytest.mark.slow
def test_ensemble_on_frozen_features_with_a_reused_stage1_and_its_ablation(tmp_path, monkeypatch):
    """Paper 000's pipeline on the diagnosis labels: G1 Lite0 / G2 Lite1 trained on cached frozen features, the
    attention crops from a reused stage-1 model, and the card's ablation rows from the same validation photos."""
    import zoo
    from train.recipes import get_recipe

    monkeypatch.setenv("FCZ_CACHE_DIR", str(tmp_path / "cache"))
    data = _odir_ngc_fixture(tmp_path / "odir-ngc")
    common = ["--data", str(data), "--format", "imagefolder", "--labels", *LABELS, "--no-pretrained",
              "--input-size", "64", "--epochs", "1", "--batch-size", "4", "--workers", "0", "--quiet",
              "--frozen-blocks", "4", "--cached-views", "2", "--val-fraction", "0.25", "--test-fraction", "0.2"]
    stage1 = tmp_path / "stage1"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_recipe("odir").main([*common, "--arch", "efficientnet_lite0", "--out", str(stage1)]) == 0
        out = tmp_path / "ensemble"
        assert get_recipe("rfmid-ensemble").main([
            *common, "--arch", "efficientnet_lite0+efficientnet_lite0+efficientnet_lite1", "--folds", "2",
            "--frozen-epochs", "1", "--theta", "60", "--stage1-model", str(stage1), "--camera-augment",
            "--out", str(out)]) == 0
    from train import augment as aug
    from train.recipes.rfmid_ensemble import RfmidEnsembleRecipe

    recipe = RfmidEnsembleRecipe()
    op = recipe.training_augment(recipe.parse_args(["--data", "x", "--format", "imagefolder", "--camera-augment"]))
    assert isinstance(op.ops[-1], aug.CameraShift) and len(op.ops[0].ops) == 4  # stage 2's four, then CameraShift
    config = json.loads((out / "config.json").read_text())
    assert config["labels"] == LABELS and config["arch"] == "fusion_ensemble"
    runs = sorted(p.name for p in (out / "training").iterdir() if p.is_dir())
    assert runs == ["fold0-g1-efficientnet_lite0", "fold0-g2-efficientnet_lite1", "fold1-g1-efficientnet_lite0",
                    "fold1-g2-efficientnet_lite1"]  # no stage-1 training: it was reused
    assert "reused" in config["description"]
    # Crops attend to diseases only: never more than the diseased training photos, none of a normal eye.
    import re

    n_crops = int(re.search(r"(\d+) Guided Grad-CAM attention crops", config["description"]).group(1))
    train_photos = json.loads((out / "training" / "split.json").read_text())["train"]
    n_normal = sum("/normal/" in x["image"] for x in train_photos)
    assert f"{n_normal} photos without a disease label" in config["description"]
    assert n_crops <= len(train_photos) - n_normal
    ablation = {k: v for k, v in config["metrics"].items() if k.startswith("validation, ablation")}
    assert len(ablation) == 6  # 2 folds × 2 structures alone, then each structure's bagged mean
    assert any("G2 efficientnet_lite1 fold 1 alone" in k for k in ablation)
    assert all("f1_micro" in v for v in ablation.values())
    model = zoo.load(str(out), device="cpu")
    assert [m.config.arch for m in model.g2] == ["efficientnet_lite1"] * 2
    # The split is the same per source as the stage-1 run's (seeded by patient): the test photos never trained.
    split = json.loads((out / "training" / "split.json").read_text())
    assert split == json.loads((stage1 / "training" / "split.json").read_text())


def test_a_stage1_model_with_other_labels_is_refused(tmp_path, monkeypatch):
    import zoo
    from train.recipes import get_recipe

    recipe = get_recipe("rfmid-ensemble")
    args = recipe.parse_args(["--data", str(tmp_path), "--format", "imagefolder", "--labels", *LABELS,
                              "--arch", "efficientnet_lite0", "--input-size", "64", "--stage1-model", "dr-lesions"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        config = recipe.build_arch(args, "efficientnet_lite0", "x").config
    with pytest.raises(SystemExit, match="has labels"):
        recipe.load_stage1(args, config)
    assert zoo.load("dr-lesions").config.labels != LABELS


def test_focal_loss_leaves_unknown_labels_out():
    import torch

    from train.losses import focal_loss

    logits = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.5, -2.0]])
    targets = torch.tensor([[1.0, NAN, 0.0], [0.0, 1.0, NAN]])
    known = torch.isfinite(targets)
    # The mean over the known entries = the mean of the per-entry losses of those entries alone.
    per_entry = torch.stack([focal_loss(logits[i:i + 1, j:j + 1], targets[i:i + 1, j:j + 1], reduction="sum")
                             for i, j in known.nonzero().tolist()])
    assert torch.isclose(focal_loss(logits, targets), per_entry.mean())
    assert torch.isfinite(focal_loss(logits, targets, reduction="none")).all()
    full = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 1.0]])
    assert torch.isclose(focal_loss(logits, full), focal_loss(logits, full, reduction="none").mean())


def test_sensitivity_and_specificity_are_undefined_where_a_label_is_never_known():
    from zoo.evaluation.metrics import compute_metrics

    logits = np.array([[2.0, -1.0, 0.3, -2.0], [-1.0, 2.0, -0.5, -1.0], [1.0, -2.0, -1.0, 1.0]])
    targets = np.array([[1, 0, NAN, NAN], [0, 1, NAN, NAN], [1, 0, NAN, NAN]])  # a DR screening set
    m = compute_metrics("multilabel", logits, targets, LABELS)
    assert m["sensitivity"]["Glaucoma"] is None and m["specificity"]["Cataract"] is None
    assert m["auc_per_class"]["Glaucoma"] is None
    assert m["sensitivity"]["Diabetes"] == 1.0 and m["specificity"]["Normal"] == 1.0


def test_shipped_validation_rows_of_a_multilabel_model_keep_the_test_rows_numbers():
    from train.ship import _card_row

    row = {"auc_Normal": 0.8, "auc_macro": 0.85, "f1_micro": 0.7, "loss": 0.4, "sensitivity_Glaucoma": 0.0,
           "specificity_Cataract": 0.0, "accuracy": 0.5}
    assert _card_row(row, "multilabel") == {"auc_Normal": 0.8, "auc_macro": 0.85, "f1_micro": 0.7, "loss": 0.4}
    assert _card_row(row, "multiclass") == row and _card_row("a text row", "multilabel") == "a text row"


def test_healthy_eye_specificity_counts_eyes_whose_answer_holds_no_disease():
    import torch

    import zoo
    from train.ship import _add_healthy_eyes_without_finding, _no_finding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("efficientnet_lite0", task="multilabel", labels=LABELS, pretrained=False, input_size=64)
    logit = float(torch.logit(torch.tensor(0.9)))
    outputs = np.array([[logit, -logit, -logit, -logit],   # healthy, says Normal only
                        [logit, logit, -logit, -logit],    # healthy, Normal and DR over: a tie in margin keeps DR
                        [-logit, -logit, -logit, -logit],  # healthy, nothing over any threshold: no finding
                        [-logit, logit, -logit, -logit]])  # DR eye: not counted
    targets = np.array([[1, 0, NAN, NAN], [1, 0, NAN, NAN], [1, 0, 0, 0], [0, 1, NAN, NAN]], np.float32)
    row = {}
    _add_healthy_eyes_without_finding(row, _no_finding(model, outputs), targets, np.ones(4, bool), model.config)
    assert row["healthy_eyes_without_finding"] == pytest.approx(2 / 3)


def test_help_shows_each_default_once():
    import contextlib
    import io

    from train.recipes import get_recipe

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        get_recipe("odir").parse_args(["--help"])
    text = " ".join(out.getvalue().split())
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "(default: 50)" in text  # paper 002's epochs, from argparse
    # A flag whose help already says its default gets no second one from argparse.
    assert "without official splits) (default" not in text and "or huggingface.co) (default" not in text
