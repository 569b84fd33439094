"""The method registry: what each method declares, only the passes the asked-for methods need, LayerCAM against
pytorch-grad-cam, and the target objects."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from pytorch_grad_cam import LayerCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

import explain.capture_kinds as capture_kinds
from explain import (ALL_METHODS, AllPredicted, Classes, Decided, Explainer, Method, PerImage, Predicted, get_method,
                     panel_methods, register, registered)
from explain.methods import NEEDS, _REGISTRY, canonical_method, needs_of
from test_explain import explainer_for, images, resnet18, tiny
from test_explain_reference import normalised


def test_every_method_declares_name_title_needs_and_panel():
    assert tuple(m.name for m in registered()) == ALL_METHODS
    assert panel_methods("main") == ("cam", "gradcam", "guided_gradcam", "gmsm")
    assert panel_methods("optional") == ("layercam",)
    for method in registered():
        assert method.name and method.title and method.needs <= NEEDS and method.help, method
    assert get_method("gmsm").params[0].name == "t" and get_method("gmsm").params[0].config == "t"
    assert needs_of(["cam", "gradcam"]) == {"cam_weights", "high_gradients"}
    assert "input_gradients" in needs_of(["guided_gradcam"]) and "low_gradients" in needs_of(["gmsm"])
    assert canonical_method("Guided-Grad-CAM") == "guided_gradcam" and canonical_method("LayerCAM") == "layercam"
    with pytest.raises(ValueError, match="unknown method"):
        canonical_method("lime")


def counted_backwards(monkeypatch) -> list[list[tuple]]:
    """The inputs' shapes of every backward the engine runs (one list per row_gradients call)."""
    calls: list[list[tuple]] = []
    original = capture_kinds.row_gradients

    def counted(out, inputs, selectors, retain_graph):
        calls.append([tuple(t.shape) for t in inputs])
        return original(out, inputs, selectors, retain_graph)

    monkeypatch.setattr(capture_kinds, "row_gradients", counted)
    return calls


def test_only_the_passes_the_methods_need_run(monkeypatch):
    calls = counted_backwards(monkeypatch)
    explainer = explainer_for(tiny())
    x = images()
    cam_gradcam = explainer.explain(x, target=1, methods=["cam", "gradcam"])
    assert len(calls) == 1 and cam_gradcam.guided_gradients is None  # no guided backward to the input
    assert set(cam_gradcam.gradients) == {"high"} and "low" not in cam_gradcam.activations
    assert set(cam_gradcam.maps()) == {"cam", "gradcam"}
    calls.clear()
    explainer.explain(x, target=1, methods=["cam"])
    assert calls == []  # CAM needs no backward at all
    explainer.explain(x, target=[0, 1], methods=["guided_gradcam"])
    assert len(calls) == 2 and calls[1] == [tuple(x.shape)]  # layer gradients, then the guided pass to the input
    calls.clear()
    explainer.explain(x, target=1, methods=["gmsm"])
    assert len(calls) == 1 and len(calls[0]) == 2  # high and low layer in one backward, nothing to the input


def test_the_maps_do_not_depend_on_which_other_methods_were_asked_for():
    explainer = explainer_for(resnet18())
    x = images()
    everything = explainer.explain(x, target=[1, 3]).maps(t=0.2)
    for name in ALL_METHODS:
        alone = explainer.explain(x, target=[1, 3], methods=[name]).maps(t=0.2)
        assert list(alone) == [name] and np.array_equal(alone[name], everything[name]), name


def test_layercam_matches_pytorch_grad_cam():
    model = resnet18()
    x = images()
    for target in (0, 3):
        ours = explainer_for(model).explain(x, target=target, methods=["layercam"]).maps()["layercam"]
        reference = copy.deepcopy(model)
        theirs = LayerCAM(reference, [reference.layer4])(x, [ClassifierOutputTarget(target)])[0]
        assert np.allclose(ours, normalised(theirs), atol=1e-5), target


def test_a_registered_method_is_explained_without_other_changes(monkeypatch):
    monkeypatch.setattr("explain.methods._REGISTRY", dict(_REGISTRY))

    @register
    class Activation(Method):  # the high layer's mean activation: needs nothing beyond the forward
        name = "mean_activation"
        title = "Mean activation"
        panel = "optional"
        help = "The high layer's mean activation."

        def compute(self, selection, **params):
            from explain.methods.formulas import layer_map

            return layer_map(selection.activations("high").mean(dim=1), selection.size)

    assert "mean_activation" in panel_methods("optional") and needs_of(["mean_activation"]) == frozenset()
    maps = explainer_for(tiny()).explain(images(), target=1, methods=["mean_activation"]).maps()
    assert maps["mean_activation"].shape == (64, 64) and maps["mean_activation"].max() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="new name"):
        register(Activation)


def test_target_objects_and_the_older_conventions_agree():
    model = tiny()
    explainer = explainer_for(model)
    x = images(2)
    assert explainer.explain(x, Classes((2, 0))).targets == explainer.explain(x, [2, 0]).targets == [[2, 0], [2, 0]]
    assert explainer.explain(x, PerImage((1, [2, 3]))).targets == explainer.explain(x, (1, [2, 3])).targets
    assert explainer.explain(x, Predicted()).targets == explainer.explain(x, "predicted").targets
    assert explainer.explain(x, AllPredicted()).targets == explainer.explain(x, "all-predicted").targets
    with pytest.raises(ValueError, match="out of range"):
        explainer.explain(x, Classes((9,)))
    with pytest.raises(TypeError):
        Classes((1.5,))
    with pytest.raises(TypeError, match="zoo model"):
        explainer.explain(x, Decided())


def test_decided_is_resolved_on_the_explanations_own_pass():
    zoo = pytest.importorskip("zoo")
    from explain.targets import decided_targets

    torch.manual_seed(0)
    model = zoo.create_model("efficientnet_lite0", paper="001", pretrained=False, input_size=64).eval()
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))
    try:
        x = images()
        expl = Explainer(model).explain(x, Decided(), methods=["gradcam"])
        assert forwards == [1]  # the decision came from the explanation's own forward pass
        assert expl.targets[0] == decided_targets(model, x)
    finally:
        handle.remove()
    assert Decided().decided_only and not Predicted().decided_only


def test_gate_parameter_is_checked():
    expl = explainer_for(tiny()).explain(images(), target=1, methods=["gmsm", "gradcam"])
    with pytest.raises(ValueError, match="t must be in"):
        expl.maps(t=-1.0)
    with pytest.raises(ValueError, match="no prepared method takes"):
        expl.maps(sigma=2.0)
    assert not np.array_equal(expl.maps(t=0.0)["gmsm"], expl.maps(t=1e9)["gmsm"])


def test_gradcam_pp_weights_stay_finite_on_signed_activations():
    """Chattopadhay's closed form has a pole at 2g² + ΣA·g³ = 0, reachable when a layer's activations sum below 0
    (EfficientNet's linear-bottleneck outputs): g = 1, ΣA = -2 - 1e-6 makes the denominator exactly 0."""
    from explain.methods.formulas import grad_cam_pp_weights

    activations = torch.full((1, 2, 2, 2), (-2.0 - 1e-6) / 4, dtype=torch.float64)
    activations[0, 1] = 1.0  # a post-ReLU channel: Chattopadhay's α = g² / (2g² + ΣA·g³)
    grads = torch.ones((1, 2, 2, 2), dtype=torch.float64)
    grads[0, 1, 0, 0] = -3.0  # negative gradients add nothing (ReLU(g) = 0), and must not make 0 × inf
    weights = grad_cam_pp_weights(activations, grads)
    assert torch.isfinite(weights).all()
    assert weights[0, 0].item() == pytest.approx(4 * 0.5)  # ΣA clamped at 0: α = 1/2 in each of the 4 cells
    assert weights[0, 1].item() == pytest.approx(3 / (2 + 4.0))  # ΣA = 4: α = 1 / (2 + 4) where g = 1, as written
