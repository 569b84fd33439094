"""Output stride 16: the last stage dilated instead of strided (DeepLab, Chen et al. 2017), a 2× finer map grid with
the same weights (issue 17, part 1): config field, architectures, saved folders, the train flag, the frozen cache."""
from __future__ import annotations

import json

import pytest
import torch

import zoo
from explain import Explainer
from zoo.architectures import map_grid, map_grid_text
from zoo.config import ModelConfig
from zoo.factory import build_model

SIZE = 96  # EfficientNet-Lite0: 3 × 3 at stride 32, 6 × 6 at 16


def lite(stride: int = 32, **kwargs):
    torch.manual_seed(0)
    return zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=SIZE,
                            output_stride=stride, **kwargs).eval()


def target_grid(model) -> tuple[int, int]:
    """The (h, w) of the explained layer's activations on one input."""
    x = torch.randn(1, 3, SIZE, SIZE)
    with Explainer(model) as explainer:
        expl = explainer.explain(x, target=0, methods=["cam"])
    return tuple(expl.activations["high"].shape[-2:])


def test_stride_16_doubles_the_grid_and_the_config_says_so():
    coarse, fine = lite(32), lite(16)
    assert target_grid(coarse) == (3, 3) and target_grid(fine) == (6, 6)
    assert (map_grid(coarse.config), map_grid(fine.config)) == (3, 6)
    assert map_grid_text(fine.config) == f"6 × 6 at {SIZE} px"
    # GMSM's low layer is chosen one stage finer than the high one (stride 8 at output stride 16)
    assert coarse.config.low_layer == "backbone.blocks.4" and fine.config.low_layer == "backbone.blocks.2"
    # the same weights fit both: only strides and dilations differ
    fine.load_state_dict(coarse.state_dict())
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        assert fine(x).shape == coarse(x).shape


def test_resnet50_dilates_layer4():
    torch.manual_seed(0)
    model = zoo.create_model("resnet50", paper="003", pretrained=False, input_size=64, output_stride=16).eval()
    assert map_grid(model.config) == 4
    with torch.no_grad():
        assert model.backbone(torch.randn(1, 3, 64, 64)).shape[-1] == 4  # 2 at stride 32


def test_saved_folder_keeps_the_stride(tmp_path):
    model = lite(16)
    model.save_pretrained(tmp_path / "m")
    assert json.loads((tmp_path / "m" / "config.json").read_text())["output_stride"] == 16
    loaded = zoo.load(str(tmp_path / "m")).eval()
    assert loaded.config.output_stride == 16 and target_grid(loaded) == (6, 6)
    assert "map grid: 6 × 6 at 96 px (output stride 16" in (tmp_path / "m" / "README.md").read_text()
    x = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-4)


def test_old_configs_without_the_field_load_at_32(tmp_path):
    model = lite(32)
    model.save_pretrained(tmp_path / "old")
    path = tmp_path / "old" / "config.json"
    data = json.loads(path.read_text())
    del data["output_stride"]  # a config written before the field existed
    path.write_text(json.dumps(data))
    assert ModelConfig.from_dict(data).output_stride == 32
    loaded = zoo.load(str(tmp_path / "old"))
    assert loaded.config.output_stride == 32 and target_grid(loaded.eval()) == (3, 3)


def test_architectures_that_cannot_dilate_say_so():
    with pytest.raises(ValueError, match="cannot run at output_stride 16"):
        zoo.create_model("simple_cnn", paper="002", pretrained=False, input_size=64, output_stride=16)
    config = ModelConfig(name="x", paper="004", arch="dr_detection_net", task="grade-regression",
                         labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"], input_size=512,
                         output_stride=16)
    with pytest.raises(ValueError, match="dr_detection_net"):
        build_model(config)


def test_fusion_members_follow_the_stride():
    torch.manual_seed(0)
    model = zoo.create_model("fusion_ensemble", paper="000", pretrained=False, input_size=SIZE, output_stride=16,
                             arch_kwargs={"g1_arch": "efficientnet_lite0", "g2_arch": "efficientnet_lite0",
                                          "folds": 1}).eval()
    assert map_grid(model.config) == 6 and model.config.low_layer == "g1.0.backbone.blocks.2"
    assert target_grid(model) == (6, 6)


def test_train_flag_reaches_the_config():
    from train.recipes import get_recipe

    recipe = get_recipe("aptos")
    common = ["--data", "unused", "--format", "aptos", "--arch", "efficientnet_lite0", "--input-size", str(SIZE),
              "--no-pretrained"]
    assert recipe.parse_args(common).output_stride == 32
    args = recipe.parse_args(common + ["--output-stride", "16"])
    model = recipe.build_model(args, ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"])
    assert model.config.output_stride == 16 and map_grid(model.config) == 6


def test_frozen_cache_at_stride_16_matches_the_whole_model():
    from train.data import CachedImages
    from train.frozen import FrozenBottom, TrainedTop, cache_features

    coarse, fine = lite(32), lite(16)
    fine.load_state_dict(coarse.state_dict())
    images = CachedImages(torch.randint(0, 256, (3, 3, SIZE, SIZE), dtype=torch.uint8), torch.zeros(3, dtype=torch.long))
    mean, std = fine.config.mean, fine.config.std
    cached = cache_features(FrozenBottom(fine, 4), images, mean, std, dtype=torch.float32, progress=False)
    # blocks[:4] keep their strides at output stride 16: the cached prefix is the stride-32 model's
    reference = cache_features(FrozenBottom(coarse, 4), images, mean, std, dtype=torch.float32, progress=False)
    assert torch.allclose(cached.images, reference.images, atol=1e-5)
    fine.eval()  # cache_features hands a new FrozenBottom's training mode back to the shared blocks
    x = (images.images.float() / 255 - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)
    with torch.no_grad():
        whole = fine(x)
        top = TrainedTop(fine, 4)(cached.images)
    assert torch.allclose(top, whole, atol=1e-4, rtol=1e-4)
