"""Explainer mechanics: one pass, no parameter gradients, the model untouched, threads, targets, CAM kinds."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from explain import ALL_METHODS, Explainer, attention_crop, lesion_mask, overlay


class TinyNet(nn.Module):
    """A few-kilobyte CNN for mechanics: module ReLUs (in place), a functional F.relu, BN, GAP + linear head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(inplace=True))
        self.layer2 = nn.Sequential(nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(inplace=True))
        self.layer4 = nn.Conv2d(12, 16, 3, stride=2, padding=1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x):
        x = torch.nn.functional.relu(self.layer4(self.layer2(self.stem(x))), inplace=True)
        return self.fc(x.mean(dim=(2, 3)))


def resnet18(num_classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return torchvision.models.resnet18(num_classes=num_classes).eval()


def tiny(num_classes: int = 4, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyNet(num_classes).eval()
    with torch.no_grad():  # non-trivial BN statistics
        model.stem[1].running_mean.uniform_(-0.5, 0.5)
        model.stem[1].running_var.uniform_(0.5, 2.0)
    return model


def explainer_for(model: nn.Module, **kwargs) -> Explainer:
    """layer4 / layer2 / fc exist in both torchvision's ResNet and TinyNet."""
    return Explainer(model, target_layer="layer4", low_layer="layer2", cam="linear", cam_classifier="fc", **kwargs)


def images(batch: int = 1, size: int = 64, seed: int = 1) -> torch.Tensor:
    torch.manual_seed(seed)
    return torch.randn(batch, 3, size, size)


def no_hooks_left(model: nn.Module) -> bool:
    return all(
        not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
        and not getattr(m, "_backward_pre_hooks", {}) for m in model.modules()
    )


class ScoreMapNet(nn.Module):
    """Paper 001's fully convolutional head: the last conv outputs one score map per class, then GAP."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2))
        self.scores = nn.Conv2d(8, classes, 1)

    def forward(self, x):
        return self.scores(self.features(x)).mean(dim=(2, 3))


def test_all_maps_shape_range_and_one_forward_only():
    model = tiny()
    calls = []
    handle = model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        expl = explainer_for(model).explain(images(), target=1)
        first = expl.maps(t=0.0)
        assert set(first) == set(ALL_METHODS)
        for name, saliency in first.items():
            assert saliency.shape == (64, 64) and saliency.dtype == np.float32, name
            assert saliency.min() >= 0.0 and abs(saliency.max() - 1.0) < 1e-4, name
        # Re-thresholding, overlays and regions reuse the cached tensors: no second forward.
        for t in (0.5, 1.0, 3.0):
            expl.maps(t=t)
        overlay(np.zeros((64, 64, 3), np.uint8), first["gmsm"], alpha=0.3, colormap="viridis")
        attention_crop(first["guided_gradcam"], theta=100)
        lesion_mask(first["gmsm"], tau=0.7)
        assert len(calls) == 1
    finally:
        handle.remove()


def test_model_untouched_no_parameter_gradients_no_hooks_left():
    model = resnet18()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    types_before = [type(m) for m in model.modules()]
    model.fc.weight.grad = torch.full_like(model.fc.weight, 7.0)  # a training loop's pending gradient
    explainer_for(model).explain(images(2), target="predicted").maps()
    assert all(p.grad is None for name, p in model.named_parameters() if name != "fc.weight")
    assert torch.equal(model.fc.weight.grad, torch.full_like(model.fc.weight, 7.0))
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in model.modules()] == types_before
    assert no_hooks_left(model)


def test_no_hooks_left_after_an_exception():
    model = resnet18()
    with pytest.raises(ValueError, match="out of range"):
        explainer_for(model).explain(images(), target=9)  # fails after the forward pass
    with pytest.raises(RuntimeError):
        explainer_for(model).explain(torch.randn(1, 5, 64, 64))  # fails inside the forward pass
    assert no_hooks_left(model)


def test_two_threads_on_one_model_equal_serial_results():
    model = tiny()
    explainer = explainer_for(model)
    inputs = [images(seed=s) for s in (10, 11)]
    serial = [explainer.explain(x, target="predicted").maps() for x in inputs]
    results: dict[int, list] = {0: [], 1: []}
    barrier = threading.Barrier(2)

    def work(index: int) -> None:
        barrier.wait()
        for _ in range(3):
            results[index].append(explainer.explain(inputs[index], target="predicted").maps())

    threads = [threading.Thread(target=work, args=(i,)) for i in (0, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for index in (0, 1):
        assert len(results[index]) == 3
        for got in results[index]:
            for name in serial[index]:
                assert np.allclose(got[name], serial[index][name], atol=1e-5), name
    assert not np.allclose(serial[0]["gradcam"], serial[1]["gradcam"])
    assert no_hooks_left(model)


def test_batched_and_integrated_maps_equal_one_by_one():
    model = tiny()
    explainer = explainer_for(model)
    batch = images(2)
    together = explainer.explain(batch, target=[0, 2])  # two classes for each image, one backward each
    assert together.targets == [[0, 2], [0, 2]]
    for image in (0, 1):
        for cls in (0, 2):
            alone = explainer.explain(batch[image:image + 1], target=cls).maps(t=0.2)
            got = together.maps(t=0.2, image=image, target=cls)
            for name in alone:
                assert np.allclose(got[name], alone[name], atol=1e-5), (image, cls, name)
    # Integrated map (paper 000 / 001 eq. 4): normalised sum of the per-class maps.
    per_class = [together.maps(target=c)["guided_gradcam"] for c in (0, 2)]
    total = per_class[0] + per_class[1]
    expected = (total - total.min()) / (total.max() - total.min())
    assert np.allclose(together.maps()["guided_gradcam"], expected, atol=1e-5)
    with pytest.raises(ValueError, match="was not explained"):
        together.maps(target=1)


def test_targets_predicted_multilabel_fallback_and_per_image():
    model = tiny()
    x = images(2)
    with torch.no_grad():
        probs = torch.sigmoid(model(x))
    high = float(probs.max()) + 0.01
    multilabel = explainer_for(model, task="multilabel", thresholds=[high] * 4)
    top = [int(p.argmax()) for p in probs]
    assert multilabel.explain(x, target="predicted").targets == [[top[0]], [top[1]]]  # none passes: top one
    low = float(probs.min()) - 0.01
    everything = explainer_for(model, task="multilabel", thresholds=[low] * 4).explain(x[:1], target="predicted")
    assert sorted(everything.targets[0]) == [0, 1, 2, 3]
    multiclass = explainer_for(model)
    assert multiclass.explain(x, target="all-predicted").targets[0][0] == top[0]
    assert len(multiclass.explain(x, target="all-predicted").targets[0]) == 4
    assert multiclass.explain(x, target=(1, [2, 3])).targets == [[1], [2, 3]]
    with pytest.raises(ValueError, match="batch size"):
        multiclass.explain(x, target=(1,))
    with pytest.raises(TypeError):
        multiclass.explain(x, target=1.5)
    with pytest.raises(ValueError, match="target must be"):
        multiclass.explain(x, target="everything")
    with pytest.raises(ValueError, match="thresholds for 4 outputs"):
        explainer_for(model, task="multilabel", thresholds=[0.5, 0.5]).explain(x)


def test_cam_linear_equals_gradcam_and_score_map_and_unavailable():
    # With layer -> GAP -> linear, Grad-CAM weights are W[c] / (h·w): CAM and Grad-CAM coincide.
    for model in (tiny(), resnet18()):
        maps = explainer_for(model).explain(images(), target=3).maps()
        assert np.allclose(maps["cam"], maps["gradcam"], atol=1e-5)
    torch.manual_seed(4)
    fcn = ScoreMapNet().eval()
    x = images(size=32)
    expl = Explainer(fcn, target_layer="scores", cam="score_map").explain(x, target=2, methods=["cam", "gradcam"])
    with torch.no_grad():
        score_map = fcn.scores(fcn.features(x))[0, 2].clamp(min=0)[None, None]
    expected = torch.nn.functional.interpolate(score_map / score_map.max(), size=(32, 32), mode="bilinear")[0, 0]
    expected = (expected - expected.min()) / (expected.max() - expected.min())
    assert np.allclose(expl.maps()["cam"], expected.numpy(), atol=1e-5)
    reason = "the head is not GAP + linear"
    none = Explainer(fcn, target_layer="scores", cam=None, cam_reason=reason).explain(x)
    assert none.unavailable == {"cam": reason, "gmsm": none.unavailable["gmsm"]}
    assert "cam" not in none.maps() and "gradcam" in none.maps()


def test_fov_mask_restricts_and_normalises_inside():
    yy, xx = np.mgrid[:64, :64]
    fov = (yy - 32) ** 2 + (xx - 32) ** 2 < 26 ** 2
    maps = explainer_for(tiny()).explain(images(), fov_mask=fov).maps(t=0.0)
    for name, saliency in maps.items():
        assert np.all(saliency[~fov] == 0), name
        assert abs(saliency[fov].max() - 1.0) < 1e-4 and saliency[fov].min() < 1e-4, name
    with pytest.raises(ValueError, match="fov_mask"):
        explainer_for(tiny()).explain(images(), fov_mask=fov[:10])


def test_grade_regression_output_cell():
    model = tiny(num_classes=1)
    expl = explainer_for(model, task="grade-regression").explain(images(2), target="predicted")
    assert expl.targets == [[0], [0]]
    maps = expl.maps(t=0.0, image=1)
    assert set(maps) == set(ALL_METHODS) and all(np.isfinite(v).all() for v in maps.values())


@pytest.mark.slow
def test_inception_v3_functional_relus_are_guided():
    torch.manual_seed(5)
    model = torchvision.models.inception_v3(num_classes=3, aux_logits=False, init_weights=False).eval()
    explainer = Explainer(model, target_layer="Mixed_7c", low_layer="Mixed_5d", cam="linear", cam_classifier="fc")
    x = images(size=96)
    expl = explainer.explain(x, target=1)
    maps = expl.maps(t=0.0)
    assert set(maps) == set(ALL_METHODS)
    x_in = x.clone().requires_grad_(True)
    (plain,) = torch.autograd.grad(model(x_in)[0, 1], x_in)
    guided = expl.guided_gradients[0, 0]
    guided, plain = guided / guided.abs().max(), plain[0] / plain.abs().max()  # random init: tiny gradients
    assert not torch.allclose(guided, plain, atol=1e-3)  # Inception's F.relu(..., inplace=True) was reached
    assert no_hooks_left(model) and all(p.grad is None for p in model.parameters())


def test_argument_errors():
    model = tiny()
    with pytest.raises(ValueError, match="not found"):
        Explainer(model, target_layer="layer9")
    with pytest.raises(ValueError, match="no target layer"):
        Explainer(model)
    with pytest.raises(ValueError, match="cam_classifier"):
        Explainer(model, target_layer="layer4", cam="linear")
    with pytest.raises(TypeError):
        Explainer("resnet", target_layer="layer4")
    with pytest.raises(TypeError):
        explainer_for(model).explain(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ValueError, match="unknown method"):
        explainer_for(model).explain(images(), methods=["lime"])
    wrong_layer = Explainer(model, target_layer="layer2", cam="linear", cam_classifier="fc").explain(images())
    assert "is not (outputs=4, channels=12)" in wrong_layer.unavailable["cam"]


def test_maps_map_back_onto_the_original_photo():
    fundus = pytest.importorskip("fundus")
    rgb, info = fundus.make_fundus(96, seed=1)
    config = SimpleNamespace(input_size=64, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25),
                             preprocessing={"fov_crop": True, "clahe": False, "clahe_clip": 2.0, "clahe_tile": 8})
    pre = fundus.preprocess(rgb, config)
    expl = explainer_for(tiny()).explain(pre.tensor, fov_mask=pre.fov_mask)
    on_photo = expl.maps_on_original(pre, rgb.shape, t=0.0)
    assert set(on_photo) == set(ALL_METHODS)
    for name, saliency in on_photo.items():
        assert saliency.shape == rgb.shape[:2], name
        outside = saliency[~info["fov_mask"]].sum() / saliency.sum()
        assert outside < 0.05, name  # restricted to the field of view, which maps back onto the photo's
