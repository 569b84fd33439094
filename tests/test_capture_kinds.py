"""The capture kinds behind the one pass: every need has one, and a method that needs a new kind of capture
declares it (``explain.capture_kinds``) without any change to ``Explainer.explain``."""
from __future__ import annotations

import pytest
import torch

import explain.capture_kinds as capture_kinds
from explain import Method, register
from explain.capture_kinds import CaptureKind, Collected, capture_kind, kinds_for, row_gradients
from explain.methods import NEEDS, _REGISTRY
from test_explain import explainer_for, images, tiny

PLAIN = "plain_input_gradients"


def test_every_need_has_one_capture_kind():
    for need in NEEDS:
        (kind,) = kinds_for({need})
        assert need in kind.needs
    assert [type(k).__name__ for k in kinds_for(NEEDS)] == ["LayerGradients", "GuidedInputGradients", "CamWeights"]
    with pytest.raises(ValueError, match="no capture kind serves"):
        kinds_for({"attention_rollout"})
    with pytest.raises(ValueError, match="taken"):
        capture_kind(type("Again", (CaptureKind,), {"needs": frozenset({"cam_weights"})}))


def test_a_new_kind_of_capture_is_declared_not_edited_into_explain(monkeypatch):
    monkeypatch.setattr(capture_kinds, "_KINDS", dict(capture_kinds._KINDS))
    monkeypatch.setattr("explain.methods._REGISTRY", dict(_REGISTRY))
    monkeypatch.setattr("explain.methods.NEEDS", NEEDS | {PLAIN})  # what the registry accepts
    monkeypatch.setattr("explain.methods.base.NEEDS", NEEDS | {PLAIN})

    @capture_kind
    class PlainInputGradients(CaptureKind):
        needs, graph, order = frozenset({PLAIN}), True, 40

        def collect(self, settings, run, needs, retain_graph):
            grads = row_gradients(run.outputs, [run.inputs], run.selectors, retain_graph)[0]
            return Collected({"captured": {PLAIN: grads.detach()}})

    @register
    class Saliency(Method):  # Simonyan et al.: the largest absolute input gradient over the colour channels
        name, title, needs, panel, help = "plain_saliency", "Saliency", frozenset({PLAIN}), "optional", "|∂y/∂x|"

        def compute(self, selection, **params):
            grads = selection.explanation.captured[PLAIN][selection.rows, selection.image]
            return grads.abs().amax(dim=1)

    model, x = tiny(), images()
    expl = explainer_for(model).explain(x, target=1, methods=["plain_saliency", "guided_gradcam"])
    assert expl.methods == ("plain_saliency", "guided_gradcam") and not expl.unavailable
    x_in = x.clone().requires_grad_(True)
    (expected,) = torch.autograd.grad(model(x_in)[0, 1], x_in)
    assert torch.allclose(expl.captured[PLAIN][0, 0], expected[0], atol=1e-6)
    assert expl.guided_gradients is not None and not torch.allclose(expl.guided_gradients[0], expl.captured[PLAIN][0])
    saliency = expl.maps()["plain_saliency"]
    assert saliency.shape == (64, 64) and saliency.max() == pytest.approx(1.0)
