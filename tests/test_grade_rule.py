"""Ordinal decisions of the DR graders: cut-offs fitted on validation outputs (train.metrics) and used wherever the
model decides (fundus.tasks.grade_rule reading the config: FundusNet.decide, zoo.predict, compute_metrics)."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import cohen_kappa_score

from fundus.tasks import DEFAULT_GRADE_CUTOFFS, GRADE_REGRESSION, MULTICLASS, expected_grade, grade_rule
from train.metrics import choose_grade_rule, fit_grade_cutoffs, quadratic_kappa


def _shrunk_regression(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A regression that grades too low (value ≈ 0.6 × grade, the pull towards the mean of MSE on skewed data)."""
    rng = np.random.default_rng(seed)
    grades = rng.choice(5, size=n, p=[0.45, 0.12, 0.25, 0.08, 0.10])
    return 0.6 * grades + rng.normal(0, 0.2, n), grades


def test_quadratic_kappa_is_sklearns():
    rng = np.random.default_rng(1)
    for _ in range(50):
        truth, pred = rng.integers(0, 5, 40), rng.integers(0, 5, 40)
        pred[pred == 3] = 4  # a grade absent from one side: weights by rank, as sklearn
        assert quadratic_kappa(pred, truth) == pytest.approx(cohen_kappa_score(truth, pred, weights="quadratic"))
    assert quadratic_kappa([2, 2], [2, 2]) == 1.0 and quadratic_kappa([1, 1], [2, 2]) == 0.0


def test_fitted_cut_offs_beat_the_fixed_ones_on_a_shrunk_regression():
    values, grades = _shrunk_regression()
    cuts, before, after = fit_grade_cutoffs(values, grades)
    fixed = quadratic_kappa(GRADE_REGRESSION.decide(values), grades)
    assert before == pytest.approx(fixed) and fixed < 0.85
    assert after > 0.95 and after == pytest.approx(quadratic_kappa(GRADE_REGRESSION.decide(values, cutoffs=cuts),
                                                                   grades))
    assert np.all(np.diff(cuts) > 0)
    assert np.allclose(cuts, [0.3, 0.9, 1.5, 2.1], atol=0.12)  # the midpoints between 0.6 × neighbouring grades
    # On photos the fit never saw, the fitted cut-offs still beat the fixed ones.
    new_values, new_grades = _shrunk_regression(seed=5)
    assert (quadratic_kappa(GRADE_REGRESSION.decide(new_values, cutoffs=cuts), new_grades)
            > quadratic_kappa(GRADE_REGRESSION.decide(new_values), new_grades) + 0.1)


def test_a_fit_that_does_not_help_keeps_the_start():
    grades = np.array([0, 1, 2, 3, 4] * 20)
    cuts, before, after = fit_grade_cutoffs(grades.astype(float), grades)  # already perfect at 0.5 … 3.5
    assert cuts == list(DEFAULT_GRADE_CUTOFFS) and before == after == 1.0
    with pytest.raises(ValueError, match="as many values"):
        fit_grade_cutoffs(np.zeros(3), np.zeros(2))


def test_classifier_rule_chosen_by_validation_kappa():
    # A grader whose probabilities lean towards grade 0 (class weights, skewed data): the argmax says "No DR"
    # for most grade-1/2 photos, while the expected grade still orders the photos by their grade.
    rng = np.random.default_rng(2)
    grades = rng.integers(0, 5, 600)
    centre = 0.55 * grades + rng.normal(0, 0.3, len(grades))
    logits = -((np.arange(5)[None, :] - centre[:, None]) ** 2) / 0.8
    rule = choose_grade_rule(logits, grades)
    assert rule.expected_cutoffs and rule.kappa_expected > rule.kappa_argmax + 0.05
    decided = MULTICLASS.decide(logits, expected_cutoffs=rule.expected_cutoffs)
    assert quadratic_kappa(decided, grades) == pytest.approx(rule.kappa_expected)
    assert rule.to_dict()["rule"] == "expected grade"
    # A grader whose argmax is already right: the paper's rule stays (a tie keeps the argmax).
    sharp = np.eye(5)[grades] * 10.0
    kept = choose_grade_rule(sharp, grades)
    assert kept.expected_cutoffs == [] and kept.kappa_argmax == 1.0


def test_expected_grade_numpy_and_torch_agree():
    p = np.array([[0.1, 0.2, 0.6, 0.05, 0.05], [1.0, 0, 0, 0, 0]])
    assert np.allclose(expected_grade(p), [1.75, 0.0])
    assert torch.allclose(expected_grade(torch.tensor(p)), torch.tensor([1.75, 0.0], dtype=torch.float64))
    logits = np.log(p + 1e-12)
    cuts = [0.5, 1.8, 2.5, 3.5]  # 1.75 does not exceed 1.8: grade 1, where the argmax says 2
    assert MULTICLASS.decide(logits).tolist() == [2, 0]
    assert MULTICLASS.decide(logits, expected_cutoffs=cuts).tolist() == [1, 0]
    assert MULTICLASS.decide(torch.tensor(logits), expected_cutoffs=cuts).tolist() == [1, 0]


def _model(task: str, **config):
    import zoo

    torch.manual_seed(0)
    return zoo.create_model("simple_cnn", paper="", task=task, input_size=48, pretrained=False,
                            labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"], **config).eval()


def test_the_model_decides_by_its_configs_rule_everywhere(tmp_path):
    import zoo
    from zoo.evaluation.metrics import compute_metrics
    from zoo.model import decision_rule

    values = torch.tensor([[0.2], [0.45], [1.0], [2.0], [3.2]])
    regression = _model("grade-regression", grade_cutoffs=[0.4, 0.9, 1.9, 3.0])
    assert regression.decide(values).tolist() == [0, 1, 2, 3, 4]  # fixed cut-offs: [0, 0, 1, 2, 3]
    assert "0.4, 0.9, 1.9, 3" in decision_rule(regression.config)
    rule = grade_rule(regression.config)
    m = compute_metrics("grade-regression", values.numpy(), np.arange(5), regression.config.labels,
                        grade_cutoffs=rule["cutoffs"], expected_cutoffs=rule["expected_cutoffs"])
    assert m["accuracy"] == 1.0

    logits = torch.log(torch.tensor([[0.1, 0.2, 0.6, 0.05, 0.05]]))
    classifier = _model("multiclass")
    assert classifier.config.expected_grade_cutoffs == [] and classifier.decide(logits).tolist() == [2]
    classifier.config.expected_grade_cutoffs = [0.5, 1.8, 2.5, 3.5]
    assert classifier.decide(logits).tolist() == [1]
    assert "expected grade" in decision_rule(classifier.config)
    rule = grade_rule(classifier.config)
    m = compute_metrics("multiclass", logits.numpy(), np.array([1]), classifier.config.labels,
                        grade_cutoffs=rule["cutoffs"], expected_cutoffs=rule["expected_cutoffs"])
    assert m["accuracy"] == 1.0
    # The rule travels with the saved model: config.json holds it, and zoo.load + zoo.predict decide by it.
    classifier.save_pretrained(tmp_path / "grader")
    assert json.loads((tmp_path / "grader" / "config.json").read_text())["expected_grade_cutoffs"] == [0.5, 1.8,
                                                                                                       2.5, 3.5]
    loaded = zoo.load(tmp_path / "grader")
    assert loaded.config.expected_grade_cutoffs == [0.5, 1.8, 2.5, 3.5]
    from fundus import make_fundus, preprocess

    photo = make_fundus(96, seed=0)[0]
    with torch.no_grad():
        raw = loaded(preprocess(photo, loaded.config).tensor)
    decided = MULTICLASS.decide(raw, expected_cutoffs=[0.5, 1.8, 2.5, 3.5]).item()
    assert loaded.decide(raw).item() == decided
    assert zoo.predict(loaded, [photo])[0]["predicted"] == loaded.config.labels[decided]
    loaded.config.expected_grade_cutoffs = [-4.0, -3.0, -2.0, -1.0]  # every expected grade (≥ 0) exceeds them all
    assert zoo.predict(loaded, [photo])[0]["predicted"] == "Proliferative DR"
    loaded.config.expected_grade_cutoffs = []
    assert zoo.predict(loaded, [photo])[0]["predicted"] == loaded.config.labels[int(raw.argmax())]


def test_recipe_fits_the_decision_into_the_config():
    from train.recipes import get_recipe

    values, grades = _shrunk_regression(300)
    args = SimpleNamespace(quiet=True, fixed_decision=False)
    recipe = get_recipe("ellg")
    model = _model("grade-regression")
    recipe.fit_grade_decision(args, model, SimpleNamespace(val_outputs=values[:, None], val_targets=grades))
    assert model.config.grade_cutoffs != list(DEFAULT_GRADE_CUTOFFS)
    assert recipe.decision_fit["kappa_fitted"] > recipe.decision_fit["kappa_start"]
    fixed = _model("grade-regression")
    recipe.fit_grade_decision(SimpleNamespace(quiet=True, fixed_decision=True), fixed,
                              SimpleNamespace(val_outputs=values[:, None], val_targets=grades))
    assert fixed.config.grade_cutoffs == list(DEFAULT_GRADE_CUTOFFS)
