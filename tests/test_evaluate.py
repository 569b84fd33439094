"""``zoo.evaluation``: metrics against scikit-learn and hand counts, the data-set-to-label mapping, and
``python -m zoo evaluate`` on a tiny saved model (with an unreadable photo and an ensemble)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import cohen_kappa_score, f1_score, roc_auc_score

import zoo
from fundus import load_image, make_fundus, preprocess
from fundus.datasets import load_dataset
from fundus.datasets.labels import sample_target
from zoo.evaluation.cli import main
from zoo.evaluation.metrics import compute_metrics

GRADES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
LESIONS = ["BP/MA", "HM", "HEX", "CWS", "healthy"]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_multiclass_metrics_match_sklearn_and_hand_counts():
    rng = np.random.default_rng(0)
    y = np.array([0, 0, 1, 1, 2, 2, 3, 4, 4, 0])
    logits = rng.normal(size=(10, 5)) + np.eye(5)[y] * 1.5
    m = compute_metrics("multiclass", logits, y, GRADES)
    pred = logits.argmax(1)
    assert m["accuracy"] == pytest.approx((pred == y).mean())
    assert m["f1_macro"] == pytest.approx(f1_score(y, pred, average="macro", labels=range(5), zero_division=0))
    assert m["f1_micro"] == pytest.approx(f1_score(y, pred, average="micro"))
    assert m["quadratic_kappa"] == pytest.approx(cohen_kappa_score(y, pred, weights="quadratic"))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert m["auc_per_class"]["Mild"] == pytest.approx(roc_auc_score(y == 1, probs[:, 1]))
    negatives = y != 0
    assert m["specificity"]["No DR"] == pytest.approx((pred[negatives] != 0).mean())
    assert m["sensitivity"]["No DR"] == pytest.approx((pred[y == 0] == 0).mean())
    assert m["n_images"] == 10 and np.array(m["confusion_matrix"]).sum() == 10
    assert compute_metrics("multiclass", logits, y, ["a", "b", "c", "d", "e"])["quadratic_kappa"] is None


def test_multilabel_metrics_leave_unknown_labels_out():
    logits = np.array([[3.0, -3, 2], [-3, 3, -2], [3, 3, -3], [-3, -3, 3]])
    targets = np.array([[1, 0, 1], [0, 1, np.nan], [1, 0, 0], [0, 0, 1]], dtype=float)
    m = compute_metrics("multilabel", logits, targets, ["a", "b", "c"], thresholds=[0.5, 0.5, 0.5])
    # Only one wrong known entry: photo 3 predicts b, truth 0. The NaN is not counted.
    assert m["confusion_matrix"]["b"] == [[2, 1], [0, 1]]
    assert m["confusion_matrix"]["c"] == [[1, 0], [0, 2]]  # 3 known entries for c
    assert m["accuracy"] == pytest.approx(3 / 4)  # exact match, unknown entries count as matching
    assert m["precision_micro"] == pytest.approx(5 / 6) and m["recall_micro"] == pytest.approx(1.0)
    assert m["auc_per_class"]["c"] == pytest.approx(1.0)
    # A strict threshold turns the FP into a TN.
    strict = compute_metrics("multilabel", logits, targets, ["a", "b", "c"], thresholds=[0.5, 0.99, 0.5])
    assert strict["confusion_matrix"]["b"] == [[3, 0], [1, 0]]
    with pytest.raises(ValueError, match="must be \\(N, 3\\)"):
        compute_metrics("multilabel", logits[:, :2], targets, ["a", "b", "c"])


def test_sample_target_maps_masks_boxes_and_healthy_folders():
    class DS:
        def __init__(self, labels, task):
            self.labels, self.task = labels, task

    class S:
        def __init__(self, label):
            self.label = label

    idrid = DS(["MA", "HE", "EX", "SE"], "multilabel")
    got = sample_target(S(np.array([1, 0, 1, 0], np.float32)), idrid, LESIONS, "multilabel")
    assert got.tolist() == [1, 0, 1, 0, 0]
    assert sample_target(S(np.zeros(4, np.float32)), idrid, LESIONS, "multilabel").tolist() == [0, 0, 0, 0, 1]
    yolo = DS(["optic_disc", "hard_exudates", "haemorrhage"], "multilabel")
    boxed = sample_target(S(np.array([1, 1, 0], np.float32)), yolo, LESIONS, "multilabel")
    assert np.isnan(boxed[[0, 3]]).all() and boxed[[1, 2, 4]].tolist() == [0, 1, 0]  # MA, CWS unknown
    unknown_health = sample_target(S(np.array([1, 0, 0], np.float32)), yolo, LESIONS, "multilabel")
    assert np.isnan(unknown_health[4])  # no lesion boxed, but MA and CWS were never annotated
    grades = DS(GRADES, "multiclass")
    assert sample_target(S(0), grades, LESIONS, "multilabel").tolist() == [0, 0, 0, 0, 1]
    moderate = sample_target(S(2), grades, LESIONS, "multilabel")  # DR: not healthy, lesions unknown
    assert np.isnan(moderate[:4]).all() and moderate[4] == 0
    # Mild DR is "microaneurysms only" (ICDR) — unless the data set marks maculopathy (exudates).
    assert sample_target(S(1), grades, LESIONS, "multilabel").tolist() == [1, 0, 0, 0, 0]
    mild_macula = S(1)
    mild_macula.meta = {"maculopathy": True}
    got = sample_target(mild_macula, grades, LESIONS, "multilabel")
    assert got[[0, 1, 4]].tolist() == [1, 0, 0] and np.isnan(got[[2, 3]]).all()
    assert sample_target(S(3), grades, GRADES, "multiclass") == 3
    assert sample_target(S(3), grades, GRADES, "grade-regression") == 3.0
    assert sample_target(S(1), DS(["healthy", "DR", "glaucoma"], "multiclass"), GRADES, "multiclass") is None


@pytest.fixture
def tiny_grader(tmp_path):
    torch.manual_seed(0)
    model = zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64, name="tiny-grader")
    folder = model.save_pretrained(tmp_path / "model")
    return model.eval(), Path(folder)


def _imagefolder(root: Path) -> list[tuple[Path, int]]:
    photos = []
    for p, (folder, grade) in enumerate([("1 - No DR", 0), ("1 - No DR", 0), ("4 - Moderate DR without maculopathy", 2),
                                          ("6 - Severe DR without maculopathy", 3), ("8 - PDR without maculopathy", 4)]):
        path = root / folder / f"Patient{p:03d}_L.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(make_fundus(80, seed=p)[0]).save(path)
        photos.append((path, grade))
    (root / "1 - No DR" / "Patient009_R.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")  # unreadable
    return photos


def test_cli_json_on_a_tiny_model_counts_unreadable_photos(tiny_grader, tmp_path, capsys):
    model, folder = tiny_grader
    photos = _imagefolder(tmp_path / "data")
    report = tmp_path / "report.html"
    assert main([str(folder), "--data", str(tmp_path / "data"), "--format", "imagefolder", "--preset", "srahim-dr600",
                 "--json", "--report", str(report)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n_images"] == 5 and result["n_unreadable"] == 1
    with torch.no_grad():
        logits = torch.cat([model(preprocess(load_image(p), model.config).tensor) for p, _ in photos]).numpy()
    y = np.array([g for _, g in photos])
    assert result["accuracy"] == pytest.approx((logits.argmax(1) == y).mean())
    expected_kappa = cohen_kappa_score(y, logits.argmax(1), weights="quadratic") \
        if len(set(logits.argmax(1)) | set(y)) > 1 else 1.0
    assert result["quadratic_kappa"] == pytest.approx(expected_kappa)
    assert set(result["auc_per_class"]) == set(GRADES) and "f1_macro" in result
    assert "plotly" in report.read_text()[:400000].lower()
    assert main([str(folder), "--data", str(tmp_path / "data"), "--format", "hrf"]) == 2  # wrong layout: an error


def test_cli_evaluates_each_ensemble_member_and_the_fusion(tmp_path, capsys):
    from zoo.architectures.fusion import assemble

    torch.manual_seed(0)
    members = [zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64,
                                head="gap_linear") for _ in range(2)]
    ensemble = assemble([members[0]], [members[1]], name="tiny-fusion")
    folder = ensemble.save_pretrained(tmp_path / "ens")
    _imagefolder(tmp_path / "data")
    assert main([str(folder), "--data", str(tmp_path / "data"), "--format", "srahim-dr600", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["members"]) == 2 and result["fusion"] == {"lam": 0.6, "sigma": 0.4}
    assert all(m["n_images"] == 5 for m in result["members"].values())
    accs = [m["accuracy"] for m in result["members"].values()]
    assert all(0 <= a <= 1 for a in accs) and 0 <= result["accuracy"] <= 1


def test_split_val_matches_patient_split(tiny_grader, tmp_path, capsys):
    _, folder = tiny_grader
    _imagefolder(tmp_path / "data")
    main([str(folder), "--data", str(tmp_path / "data"), "--format", "srahim-dr600", "--split", "val", "--json"])
    val = json.loads(capsys.readouterr().out)
    main([str(folder), "--data", str(tmp_path / "data"), "--format", "srahim-dr600", "--split", "train", "--json"])
    train = json.loads(capsys.readouterr().out)
    main([str(folder), "--data", str(tmp_path / "data"), "--format", "srahim-dr600", "--split", "test", "--json"])
    test = json.loads(capsys.readouterr().out)
    parts = (val, train, test)  # fundus.datasets.train_val_test_split: every photo in exactly one part
    assert sum(p["n_images"] + p["n_unreadable"] for p in parts) == 6
    assert all(p["n_images"] + p["n_unreadable"] >= 1 for p in parts)
    ds = load_dataset("imagefolder", tmp_path / "data", "all", preset="srahim-dr600")
    assert len(ds) == 6


def test_regression_grades_by_cutoffs_like_the_model_decides():
    values = np.array([[0.5], [1.5], [1.51], [3.9], [-0.2]])  # a value on a cut-off keeps the lower grade
    m = compute_metrics("grade-regression", values, np.array([0, 1, 2, 4, 0]), GRADES)
    assert m["accuracy"] == 1.0 and m["quadratic_kappa"] == 1.0
    model = zoo.create_model("efficientnet_lite0", paper="004", task="grade-regression", pretrained=False, input_size=64)
    assert model.decide(torch.tensor(values, dtype=torch.float32)).tolist() == [0, 1, 2, 4, 0]
