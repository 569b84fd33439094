"""``fundus.tasks``: each task's probabilities, decisions, default metric and target menu, alike for numpy arrays
(evaluation, training metrics) and torch tensors (the model)."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from fundus.tasks import (ALL_PREDICTED, DEFAULT_GRADE_CUTOFFS, GRADE_REGRESSION, MULTICLASS, MULTILABEL, PREDICTED,
                          SINGLE_LABEL_TASKS, TASKS, class_target, task_of)
from train.metrics import default_metric

LESIONS = ["BP/MA", "HM", "HEX", "CWS", "healthy"]
GRADES = ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]


def test_task_of_knows_the_three_config_names_only():
    assert TASKS == ("multiclass", "multilabel", "grade-regression")
    assert [task_of(name) for name in TASKS] == [MULTICLASS, MULTILABEL, GRADE_REGRESSION]
    assert task_of(MULTILABEL) is MULTILABEL
    assert SINGLE_LABEL_TASKS == ("multiclass", "grade-regression")
    with pytest.raises(ValueError, match="task must be one of"):
        task_of("regression")
    assert [task_of(n).num_outputs(GRADES) for n in TASKS] == [5, 5, 1]


def test_probabilities_per_task_agree_between_numpy_and_torch():
    logits = np.array([[2.0, -1.0, 0.5], [0.0, 0.0, 0.0], [800.0, 0.0, -800.0]])
    soft = MULTICLASS.probabilities(logits)
    assert soft.dtype == np.float64 and np.allclose(soft.sum(1), 1.0)
    assert np.allclose(soft[1], 1 / 3) and soft[2, 0] == pytest.approx(1.0)  # no overflow at large logits
    assert np.allclose(soft, MULTICLASS.probabilities(torch.tensor(logits)).numpy())
    sig = MULTILABEL.probabilities(logits[:2])
    assert np.allclose(sig, 1 / (1 + np.exp(-logits[:2])))
    assert np.allclose(sig, MULTILABEL.probabilities(torch.tensor(logits[:2])).numpy())
    values = torch.tensor([[1.7], [-0.2]], dtype=torch.float16)
    assert GRADE_REGRESSION.probabilities(values) is values  # the value itself, dtype kept
    assert np.array_equal(GRADE_REGRESSION.probabilities([[1.7]]), [[1.7]])
    assert MULTILABEL.probabilities(torch.zeros(1, 2, dtype=torch.float16)).dtype == torch.float16


def test_multiclass_decides_the_most_probable_class():
    logits = np.array([[0.1, 2.0, -1.0], [3.0, 2.9, 0.0]])
    assert MULTICLASS.decide(logits).tolist() == [1, 0]
    assert MULTICLASS.decide(torch.tensor(logits)).tolist() == [1, 0]


def test_multilabel_decides_each_label_at_its_threshold():
    p = np.array([[0.30, 0.70, 0.10], [0.55, 0.45, 0.90]])
    logits = np.log(p / (1 - p))
    assert MULTILABEL.decide(logits).tolist() == [[False, True, False], [True, False, True]]  # 0.5 each
    strict = [0.2, 0.8, 0.95]
    assert MULTILABEL.decide(logits, thresholds=strict).tolist() == [[True, False, False], [True, False, False]]
    assert MULTILABEL.decide(torch.tensor(logits), thresholds=strict).tolist() == \
        MULTILABEL.decide(logits, thresholds=strict).tolist()
    with pytest.raises(ValueError, match="2 multilabel thresholds for 3 outputs"):
        MULTILABEL.decide(logits, thresholds=[0.5, 0.5])


def test_the_no_disease_label_and_the_disease_labels_exclude_each_other():
    # healthy (index 4) and HM both over 0.5: the one further above its threshold in log-odds stands.
    p = np.array([[0.1, 0.6, 0.1, 0.1, 0.9], [0.1, 0.95, 0.1, 0.1, 0.6], [0.1, 0.1, 0.1, 0.1, 0.9]])
    logits = np.log(p / (1 - p))
    decided = MULTILABEL.decide(logits, no_disease=4)
    assert decided.tolist() == [[False, False, False, False, True], [False, True, False, False, False],
                                [False, False, False, False, True]]
    assert MULTILABEL.decide(torch.tensor(logits), no_disease=4).tolist() == decided.tolist()
    assert MULTILABEL.decide(logits)[0].tolist() == [False, True, False, False, True]  # without: both stand


def test_grade_regression_counts_the_cut_offs_the_value_exceeds():
    values = np.array([[0.5], [1.5], [1.51], [3.9], [-0.2]])  # on a cut-off: the lower grade
    assert GRADE_REGRESSION.decide(values).tolist() == [0, 1, 2, 4, 0]
    assert GRADE_REGRESSION.decide(torch.tensor(values, dtype=torch.float32)).tolist() == [0, 1, 2, 4, 0]
    assert GRADE_REGRESSION.decide(values, cutoffs=[1.0, 2.0]).tolist() == [0, 1, 1, 2, 0]
    assert "0.5, 1.5, 2.5, 3.5" in GRADE_REGRESSION.decision_rule(GRADES, DEFAULT_GRADE_CUTOFFS)


def test_default_metric_per_task_is_the_papers_score():
    assert [task_of(n).default_metric for n in TASKS] == ["accuracy", "f1_micro", "quadratic_kappa"]
    assert [default_metric(n).name for n in TASKS] == ["accuracy", "f1_micro", "quadratic_kappa"]
    grades = np.array([0, 1, 2, 4])
    assert default_metric("grade-regression")(np.array([[0.2], [1.2], [2.4], [3.6]]), grades) == 1.0
    assert default_metric("multiclass")(np.eye(5)[[0, 1, 2, 3]] * 4, grades) == 0.75


def test_target_menu_offers_what_each_task_can_explain():
    assert MULTILABEL.target_menu(LESIONS)[0] == ("all predicted labels (integrated)", ALL_PREDICTED)
    assert [value for _, value in MULTILABEL.target_menu(LESIONS)[1:]] == [class_target(i) for i in range(5)]
    assert MULTICLASS.target_menu(GRADES)[:2] == [("the predicted class", PREDICTED), ("No DR", "class:0")]
    assert GRADE_REGRESSION.target_menu(GRADES) == [("the predicted grade", PREDICTED)]  # one output cell only


def test_predicted_cells_per_task():
    probs = torch.tensor([0.2, 0.9, 0.6, 0.1])
    assert MULTICLASS.predicted_cells(probs) == [1]
    assert MULTICLASS.predicted_cells(probs, every=True) == [1, 2, 0, 3]
    assert MULTILABEL.predicted_cells(probs) == [1, 2]  # over 0.5, most probable first
    assert MULTILABEL.predicted_cells(probs, [0.95, 0.95, 0.95, 0.95]) == [1]  # none over: the top one
    assert GRADE_REGRESSION.predicted_cells(torch.tensor([2.7])) == [0]


def test_numpy_input_does_not_import_torch():
    code = ("import sys, numpy as np; from fundus.tasks import TASKS, task_of; "
            "[task_of(n).decide(np.zeros((2, 3))) for n in TASKS]; "
            "[task_of(n).probabilities(np.zeros((2, 3))) for n in TASKS]; print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
