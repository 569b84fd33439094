"""Flip test-time augmentation (zoo.evaluation.flip_tta): what the validation check in scripts/flip_tta_check.py
measures."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from fundus import make_fundus
from zoo.evaluation.flip_tta import flip_averaged, flip_tta_kappa


def _grader():
    torch.manual_seed(0)
    return zoo.create_model("simple_cnn", paper="", task="multiclass", input_size=48, pretrained=False,
                            labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]).eval()


@torch.no_grad()
def test_flip_averaging_makes_a_grader_mirror_symmetric():
    model = _grader()
    x = torch.rand(4, 3, 48, 48)
    mirrored = torch.flip(x, dims=[3])
    assert not torch.allclose(model(x), model(mirrored), atol=1e-4)  # the plain model is not symmetric
    assert torch.allclose(flip_averaged(model, x), flip_averaged(model, mirrored), atol=1e-5)


def test_flip_tta_kappa_grades_the_photos_both_ways():
    model = _grader()
    photos = [make_fundus(96, seed=i)[0] for i in range(6)]
    truth = [0, 1, 2, 3, 4, 0]
    result = flip_tta_kappa(model, photos, truth, batch_size=4)
    assert result["n_photos"] == 6 and 0.0 <= result["agreement"] <= 1.0
    assert -1.0 <= result["kappa"] <= 1.0 and -1.0 <= result["kappa_flip_tta"] <= 1.0
    # A photo and its mirror image get the same flip-averaged grades, so the same kappa.
    mirrored = flip_tta_kappa(model, [np.ascontiguousarray(p[:, ::-1]) for p in photos], truth, batch_size=4)
    assert mirrored["kappa_flip_tta"] == pytest.approx(result["kappa_flip_tta"])
