"""Every architecture of the five papers: builds, runs on CPU at a small input, round-trips through
save_pretrained/load exactly, names real layers, and survives fp16 shipping."""
from __future__ import annotations

import warnings

import pytest
import torch

import zoo
from fundus.tasks import FINDING_FLOOR
from zoo.architectures import ARCHITECTURES
from zoo.architectures.dr_detection_net import DRDetectionNet
from zoo.architectures.simple_cnn import _flat_size

# (arch, paper, input size, extra overrides): small inputs keep the 2-core suite fast.
CASES = [
    ("vgg16", "000", 64, {}),
    ("vgg19", "000", 64, {}),
    # G1 VGG19 + G2 ResNet50 (GAP + linear)
    pytest.param("fusion_ensemble", "000", 64, {"arch_kwargs": {"folds": 1}}, marks=pytest.mark.slow),
    pytest.param("resnet50_fcn", "001", 64, {}, marks=pytest.mark.slow),
    ("simple_cnn", "002", 96, {}),
    ("vgg13_bn", "002", 64, {"arch_kwargs": {"fc_width": 64}}),  # the FC width (4096) is the only change
    ("inception_v3", "002", 75, {}),
    # Paper 002's image + age/sex model on a small backbone (default: VGG13-BN).
    ("metadata_fusion", "002", 64, {"arch_kwargs": {"base_arch": "efficientnet_lite0"}}),
    ("resnet50", "003", 64, {}),
    pytest.param("inception_resnet_v2", "003", 75, {}, marks=pytest.mark.slow),
    ("dr_detection_net", "004", 192, {}),
    ("efficientnet_lite0", "004", 64, {}),
]
FP16_CASES = {"efficientnet_lite0", "resnet50_fcn", "dr_detection_net"}


def _make(arch, paper, size, overrides):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return zoo.create_model(arch, paper=paper, pretrained=False, input_size=size, **overrides)


def _arch(case):
    return case.values[0] if hasattr(case, "values") else case[0]


def test_every_registered_architecture_is_covered():
    # Every architecture is the zoo's own (a plug-in module may register more; none of ours does).
    zoos_own = {name for name, spec in ARCHITECTURES.items() if getattr(spec.build, "func", spec.build).__module__.startswith("zoo.")}
    assert zoos_own == set(ARCHITECTURES)
    assert {_arch(case) for case in CASES} | {"efficientnet_lite1", "efficientnet_lite2"} == zoos_own


@pytest.mark.parametrize("arch,paper,size,overrides", CASES, ids=[_arch(c) for c in CASES])
def test_build_forward_save_load_roundtrip(tmp_path, arch, paper, size, overrides):
    torch.manual_seed(0)
    model = _make(arch, paper, size, overrides).eval()
    config = model.config
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = model(x)
    assert out.shape == (1, config.num_outputs)
    assert torch.isfinite(out).all()
    # The explanation layers are real modules (hooks attach there).
    for key in ("target_layer", "low_layer", "cam_classifier"):
        if getattr(config, key):
            model.get_submodule(getattr(config, key))
    assert config.target_layer and config.low_layer
    assert (config.cam is None) == bool(config.cam_reason)

    model.save_pretrained(tmp_path / "fp32")
    assert {p.name for p in (tmp_path / "fp32").iterdir()} == {"config.json", "model.safetensors", "README.md"}
    loaded = zoo.load(tmp_path / "fp32", device="cpu")
    assert not loaded.training and type(loaded) is type(model)
    assert loaded.config == config
    saved, reloaded = model.state_dict(), loaded.state_dict()
    assert saved.keys() == reloaded.keys() and all(torch.equal(saved[k], reloaded[k]) for k in saved)
    with torch.no_grad():  # same weights; another instance may run other (equally exact) kernels
        torch.testing.assert_close(loaded(x), out)
    if arch not in FP16_CASES:
        return
    model.save_pretrained(tmp_path / "fp16", dtype=torch.float16)
    half = zoo.load(tmp_path / "fp16", device="cpu")
    assert all(p.dtype == torch.float32 for p in half.parameters())
    with torch.no_grad():
        out16 = half(x)
    scale = out.abs().max().clamp_min(1e-3)
    assert (out16 - out).abs().max() / scale < 2e-2
    assert (tmp_path / "fp16" / "model.safetensors").stat().st_size < 0.6 * (tmp_path / "fp32" / "model.safetensors").stat().st_size


def test_probabilities_and_decisions_follow_the_task():
    torch.manual_seed(0)
    multilabel = _make("efficientnet_lite0", "000", 64, {"thresholds": [0.5] * 27 + [0.0]})
    out = torch.tensor([[0.0] * 27 + [-3.0], [2.0] * 28])
    probs = multilabel.probabilities(out)
    assert torch.allclose(probs, torch.sigmoid(out))
    decided = multilabel.decide(out)
    # A threshold of 0.0 is floored at fundus.tasks.FINDING_FLOOR (5 %): sigmoid(-3) = 4.7 % is no finding,
    # sigmoid(2) = 88 % is one.
    assert torch.sigmoid(torch.tensor(-3.0)).item() < FINDING_FLOOR
    assert decided[0, :27].tolist() == [True] * 27 and not decided[0, 27].item()
    assert decided[1].tolist() == [True] * 28
    multiclass = _make("efficientnet_lite0", "003", 64, {})
    out = torch.tensor([[0.1, 3.0, 0.2, 0.0, -1.0]])
    assert torch.allclose(multiclass.probabilities(out).sum(-1), torch.ones(1))
    assert multiclass.decide(out).tolist() == [1]
    regression = _make("dr_detection_net", "004", 192, {})
    values = torch.tensor([[-0.2], [0.7], [1.49], [2.6], [9.0]])
    assert torch.equal(regression.probabilities(values), values)
    assert regression.decide(values).tolist() == [0, 1, 1, 3, 4]


def test_heads_are_a_choice_on_efficientnet_lite():
    for head, cam, classifier in [("gap_linear", "linear", "head.fc"), ("gap_dropout_dense", "linear", "head.fc"),
                                  ("fcn", "score_map", "")]:
        model = _make("efficientnet_lite0", "001", 64, {}) if head == "fcn" else \
            zoo.create_model("efficientnet_lite0", paper="003", head=head, pretrained=False, input_size=64)
        assert model.config.arch_kwargs["head"] == head
        assert model.config.cam == cam and model.config.cam_classifier == classifier
    fcn = _make("efficientnet_lite0", "001", 64, {}).eval()
    assert fcn.config.target_layer == "head.score"
    assert fcn.get_submodule("backbone.bn2").num_features == 1280
    # Paper 001: the logits are the global average of the class score maps.
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        maps = fcn.head.score_maps(fcn.backbone(x))
        assert torch.allclose(maps.mean(dim=(2, 3)), fcn(x), atol=1e-6)
    with pytest.raises(ValueError, match="takes head"):
        zoo.create_model("resnet50_fcn", paper="001", head="gap_linear", pretrained=False)


def test_paper_003_head_has_dropout_half_and_cam_is_linear_in_gap():
    model = _make("resnet50", "003", 64, {}).eval()
    assert model.config.dropout == 0.5 and model.head.dropout.p == 0.5
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        features = model.get_submodule(model.config.target_layer)(model.backbone[:-1](x))
        cam = torch.einsum("kc,bchw->bkhw", model.head.fc.weight, features)
        # CAM (Zhou et al.) = W·A; its spatial mean + bias is the logit.
        assert torch.allclose(cam.mean(dim=(2, 3)) + model.head.fc.bias, model(x), atol=1e-4)


def test_paper_002_simple_cnn_table_1_sizes():
    assert _flat_size(512) == 30 * 30 * 144  # Table 1: Max_pooling_2 → 30×30×144
    model = _make("simple_cnn", "002", 96, {})
    sizes = [m.out_features for m in model.classifier if isinstance(m, torch.nn.Linear)]
    assert sizes == [4096, 512, 64, 8]
    feats = model.features(torch.zeros(1, 3, 96, 96))
    assert feats.shape[1] == 144 and feats[0].numel() == _flat_size(96)
    with pytest.raises(ValueError, match="input_size >= 48"):
        _make("simple_cnn", "002", 40, {})


def test_paper_004_blocks_are_27_13_6_at_512():
    model = _make("dr_detection_net", "004", 512, {}).eval()
    assert model.config.input_size == 512 and model.config.num_outputs == 1
    sizes = []
    x = torch.zeros(1, 3, 512, 512)
    with torch.no_grad():
        for block in model.features:
            x = block(x)
            sizes.append(x.shape[-1])
        assert model.classifier(x.flatten(1)).shape == (1, 1)
    assert sizes == [27, 13, 6]
    assert isinstance(model, DRDetectionNet) and model.config.cam is None


@pytest.mark.slow
def test_fusion_ensemble_fuses_probabilities_with_lambda_sigma():
    torch.manual_seed(0)
    default = _make("fusion_ensemble", "000", 64, {"arch_kwargs": {"folds": 1}})
    assert default.g1[0].config.arch == "vgg19" and default.g2[0].config.arch == "resnet50"
    assert default.config.target_layer == "g1.0.backbone.35"  # VGG19's last conv ReLU, inside member 0
    # Small members keep the fold arithmetic cheap to check.
    lite = {"folds": 2, "g1_arch": "efficientnet_lite0", "g2_arch": "efficientnet_lite0"}
    model = _make("fusion_ensemble", "000", 64, {"arch_kwargs": lite}).eval()
    assert len(model.g1) == 2 and len(model.g2) == 2
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        g1 = torch.stack([torch.sigmoid(m(x)) for m in model.g1]).mean(0)
        g2 = torch.stack([torch.sigmoid(m(x)) for m in model.g2]).mean(0)
        fused = model.probabilities(model(x))
    assert torch.allclose(fused, 0.6 * g1 + 0.4 * g2, atol=1e-5)
    assembled = zoo.architectures.fusion.assemble(list(model.g1), list(model.g2), lam=0.5, sigma=0.5)
    with torch.no_grad():
        assert torch.allclose(assembled.probabilities(assembled(x)), 0.5 * g1 + 0.5 * g2, atol=1e-5)
    assert assembled.config.arch_kwargs["folds"] == 2


def test_create_model_validates_its_arguments():
    with pytest.raises(ValueError, match="unknown architecture 'vgg17'.*known: .*resnet50"):
        zoo.create_model("vgg17", paper="000")
    with pytest.raises(ValueError, match="unknown paper '009'"):
        zoo.create_model("vgg16", paper="009")
    with pytest.raises(ValueError, match="labels are required"):
        zoo.create_model("vgg16", task="multiclass")
    with pytest.raises(TypeError, match="unknown config fields: colour"):
        zoo.create_model("vgg16", paper="000", colour="red")
    with pytest.raises(ValueError, match="not a module"):
        zoo.create_model("efficientnet_lite0", paper="000", pretrained=False, target_layer="backbone.nope")


def test_paper_002_metadata_fusion_uses_age_and_sex():
    from zoo.architectures.metadata_fusion import METADATA_FIELDS, MetadataFusionNet

    torch.manual_seed(0)
    model = _make("metadata_fusion", "002", 64, {"arch_kwargs": {"base_arch": "efficientnet_lite0"}}).eval()
    assert isinstance(model, MetadataFusionNet) and model.config.cam is None and "Grad-CAM" in model.config.cam_reason
    assert model.head.fc1.in_features == 1280 + len(METADATA_FIELDS) and model.head.fc2.out_features == 8
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        same_photo = model(x[:1].expand(2, -1, -1, -1), torch.tensor([[0.3, 1.0], [0.9, 0.0]]))
        assert not torch.allclose(same_photo[0], same_photo[1])  # the metadata reaches the output
        # Without metadata (explanations, the app) the stored default stands in for it.
        torch.testing.assert_close(model(x), model(x, model.meta_default.expand(2, -1)))
    default = _make("metadata_fusion", "002", 64, {})
    assert default.config.arch_kwargs == {} and default.config.target_layer.startswith("backbone.")
