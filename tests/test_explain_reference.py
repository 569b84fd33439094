"""The engine's Grad-CAM, Grad-CAM++, GMSM (t = 0) and guided backprop equal pytorch-grad-cam's.

pytorch-grad-cam runs on deep copies: its GuidedBackpropReLUModel replaces the model's ReLUs."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from pytorch_grad_cam import GradCAM, GradCAMPlusPlus, GuidedBackpropReLUModel
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from explain import Explainer


def normalised(array: np.ndarray) -> np.ndarray:
    array = array - array.min()
    return array / (1e-7 + array.max())


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=4).eval()


@pytest.fixture(scope="module")
def image():
    torch.manual_seed(1)
    return torch.randn(1, 3, 64, 64)


@pytest.mark.parametrize("target", [0, 3])
def test_gradcam_gradcampp_gmsm_match_pytorch_grad_cam(resnet, image, target):
    expl = Explainer(resnet, target_layer="layer4", low_layer="layer2", cam="linear", cam_classifier="fc").explain(
        image, target=target)
    maps = expl.maps(t=0.0)
    reference = copy.deepcopy(resnet)
    cls = [ClassifierOutputTarget(target)]
    gradcam = GradCAM(reference, [reference.layer4])(image, cls)[0]
    gradcam_pp = GradCAMPlusPlus(reference, [reference.layer4])(image, cls)[0]
    two_layers = GradCAMPlusPlus(reference, [reference.layer2, reference.layer4])(image, cls)[0]
    assert np.allclose(maps["gradcam"], normalised(gradcam), atol=1e-5)
    assert np.allclose(maps["gradcam_pp"], normalised(gradcam_pp), atol=1e-5)
    # GMSM with t = 0 is the mean of two ordinary Grad-CAM++ maps (paper 004 eq. 2-3).
    assert np.allclose(maps["gmsm"], normalised(two_layers), atol=1e-5)
    # The gate (eq. 2) changes the map once t rises above part of the raw saliency Σ_k w_k A_k.
    raw_high = torch.einsum("k,khw->hw", expl.gradcam_pp_weights["high"][0, 0], expl.activations["high"][0])
    gated = expl.maps(t=float(raw_high.max()) - 1e-3)["gmsm"]
    assert not np.allclose(gated, maps["gmsm"], atol=1e-3)


def test_guided_backprop_matches_pytorch_grad_cam(resnet, image):
    expl = Explainer(resnet, target_layer="layer4").explain(image, target=2, methods=["guided_backprop"])
    reference = GuidedBackpropReLUModel(copy.deepcopy(resnet), device="cpu")(image.clone(), 2)  # (H, W, 3)
    ours = expl.guided_gradients[0, 0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, reference, rtol=1e-4, atol=1e-7)
    assert np.abs(reference).max() > 0
    # ...and it is not the plain gradient: the guided rule was really applied.
    x = image.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(resnet(x)[0, 2], x)
    assert not np.allclose(ours, plain[0].permute(1, 2, 0).numpy(), atol=1e-6)


class FunctionalReluNet(nn.Module):
    """Calls F.relu / torch.relu_ / Tensor.relu functionally (like torchvision Inception blocks)."""

    def __init__(self, modules: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.conv3 = nn.Conv2d(8, 6, 3, padding=1)
        self.fc = nn.Linear(6, 3)
        self.modules_ = modules
        self.relus = nn.ModuleList([nn.ReLU(), nn.ReLU(), nn.ReLU()]) if modules else None

    def forward(self, x):
        if self.modules_:
            x = self.relus[2](self.conv3(self.relus[1](self.conv2(self.relus[0](self.conv1(x))))))
        else:
            x = F.relu(self.conv1(x), inplace=True)
            x = torch.relu_(self.conv2(x))
            x = self.conv3(x).relu()
        return self.fc(x.mean(dim=(2, 3)))


def test_guided_rule_reaches_functional_and_inplace_relus():
    torch.manual_seed(3)
    functional = FunctionalReluNet(modules=False).eval()
    with_modules = FunctionalReluNet(modules=True).eval()
    with_modules.load_state_dict(functional.state_dict(), strict=False)
    image = torch.randn(1, 3, 16, 16)
    ours = Explainer(functional, target_layer="conv3").explain(image, target=1, methods=["guided_backprop"])
    reference = GuidedBackpropReLUModel(copy.deepcopy(with_modules), device="cpu")(image.clone(), 1)
    assert np.allclose(ours.guided_gradients[0, 0].permute(1, 2, 0).numpy(), reference, rtol=1e-4, atol=1e-7)
