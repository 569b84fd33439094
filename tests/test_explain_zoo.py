"""Every zoo architecture: all methods, the region tools, the model untouched, no hooks left.

Random init and small inputs (fixed-input nets at their smallest size): the test is about mechanics."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from explain import ALL_METHODS, Explainer, attention_crop, extra_method, lesion_mask

zoo = pytest.importorskip("zoo")

# (arch, paper, input side fed to the net, config overrides)
CASES = [
    ("vgg16", "000", 64, {}),
    ("resnet50", "003", 64, {}),
    ("resnet50_fcn", "001", 64, {}),
    ("vgg13_bn", "002", 64, {}),
    ("inception_v3", "003", 96, {}),  # GAP head: any side ≥ 75 works; torchvision blocks call F.relu
    ("inception_resnet_v2", "003", 96, {}),
    ("efficientnet_lite0", "003", 64, {}),
    ("fusion_ensemble", "000", 64, {"arch_kwargs": {"folds": 1}}),  # VGG19 + ResNet50, one fold each
    ("simple_cnn", "002", 64, {"input_size": 64}),
    ("dr_detection_net", "004", 192, {"input_size": 192}),  # paper 004's grade-regression net
]


def no_hooks(model) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks for m in model.modules())


@pytest.mark.slow
@pytest.mark.parametrize("arch,paper,side,overrides", CASES, ids=[c[0] for c in CASES])
def test_every_zoo_architecture(arch, paper, side, overrides):
    torch.manual_seed(0)
    model = zoo.create_model(arch, paper=paper, pretrained=False, **overrides).eval()
    config = model.config
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types = [type(m) for m in model.modules()]
    yy, xx = np.mgrid[:side, :side]
    fov = (yy - side / 2) ** 2 + (xx - side / 2) ** 2 < (0.45 * side) ** 2
    expl = Explainer(model).explain(torch.randn(1, 3, side, side), target="predicted", fov_mask=fov)
    maps = expl.maps(t=0.0)
    expected = set(ALL_METHODS) - set(expl.unavailable)
    assert set(maps) == expected
    if config.cam is None:
        assert expl.unavailable["cam"] == config.cam_reason and config.cam_reason
    else:
        assert "cam" in maps
    for name, saliency in maps.items():
        assert saliency.shape == (side, side) and np.isfinite(saliency).all(), name
        assert saliency.min() >= 0 and saliency.max() <= 1 + 1e-6 and not saliency[~fov].any(), name
    assert maps["guided_backprop"].max() == pytest.approx(1.0, abs=1e-5)  # a real gradient reached the input
    if config.task == "grade-regression":
        assert expl.targets == [[0]]
    crop = attention_crop(maps["guided_backprop"], theta=config.theta)
    assert crop.mask.shape == (side, side)
    lesion_mask(maps["gmsm"], tau=config.tau, fov_mask=fov)
    assert no_hooks(model) and all(p.grad is None for p in model.parameters())
    assert [type(m) for m in model.modules()] == types
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_extra_method_through_pytorch_grad_cam_restores_the_model():
    torch.manual_seed(0)
    model = zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64)  # training mode
    x = torch.randn(1, 3, 64, 64)
    maps = extra_method(model, "HiResCAM", x, target=1)
    assert maps.shape == (1, 64, 64) and maps.max() == pytest.approx(1.0, abs=1e-5) and maps.min() >= 0
    eigen = extra_method(model, "eigen-cam", torch.cat([x, x.flip(3)]), target=[0, 1])
    assert eigen.shape == (2, 64, 64) and not np.allclose(eigen[0], eigen[1])
    assert model.training and all(p.grad is None for p in model.parameters()) and no_hooks(model)
    with pytest.raises(ValueError, match="unknown extra method"):
        extra_method(model, "lime", x)
    with pytest.raises(ValueError, match="a registered method"):  # ours: one name, one implementation
        extra_method(model, "LayerCAM", x)
    with pytest.raises(ValueError, match="batch size"):
        extra_method(model, "hirescam", x, target=[0, 1])
