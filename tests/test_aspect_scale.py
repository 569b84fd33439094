"""Squashed and small photos: the AspectScale augmentation (train.augment), its place in the recipes' augmentation
and the frozen-feature cache, and the grade agreement measurement (zoo.evaluation.agreement) on a tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fundus import make_fundus
from train.augment import AspectScale, CameraShift, Compose


def _disc_batch(size: int = 64, n: int = 4) -> torch.Tensor:
    """White discs filling the square, as a field of view after the preprocessing's crop."""
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    c = (size - 1) / 2
    disc = (((xx - c) ** 2 + (yy - c) ** 2) <= (size / 2 - 1) ** 2).float()
    return disc.expand(n, 3, size, size).clone()


def _extent(mask: torch.Tensor) -> tuple[int, int]:
    """(width, height) in px of the bright part of one (H, W) image."""
    on = mask > 0.5
    return int(on.any(0).sum()), int(on.any(1).sum())


def test_aspect_squashes_one_side_and_keeps_the_other():
    torch.manual_seed(0)
    x = _disc_batch()
    narrow = AspectScale(min_aspect=0.5, max_aspect=0.5 + 1e-6, p_aspect=1.0, p_scale=0.0)(x)
    width, height = _extent(narrow[0, 0])
    assert abs(width - 31) <= 2 and height >= 60  # width : height × 0.5, the height fills the square
    flat = AspectScale(min_aspect=1.5 - 1e-6, max_aspect=1.5, p_aspect=1.0, p_scale=0.0)  # the height to 2/3
    width, height = _extent(flat(x)[0, 0])
    assert width >= 60 and abs(height - 42) <= 2
    assert torch.equal(AspectScale(p_aspect=0.0, p_scale=0.0)(x), x)  # nothing drawn: the batch as it was


def test_scale_blurs_to_the_drawn_resolution_and_keeps_the_size():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    small = AspectScale(p_aspect=0.0, p_scale=1.0, min_side=16, max_side=16)(x)
    assert small.shape == x.shape and small.min() >= 0 and small.max() <= 1
    assert small.std() < x.std() * 0.5  # 16 px of detail left of 64
    assert torch.equal(AspectScale(p_aspect=0.0, p_scale=1.0)(x), x)  # 224–256 px: larger than 64, unchanged
    with pytest.raises(ValueError, match="min_aspect"):
        AspectScale(min_aspect=2.0)


def test_recipe_flag_adds_it_and_the_frozen_cache_draws_it_into_views():
    from train.data import CachedImages
    from train.frozen import FrozenBottom, cache_features
    from train.recipes import get_recipe

    recipe = get_recipe("ellg")
    base = ["--data", "x", "--format", "eyepacs", "--arch", "efficientnet_lite0", "--input-size", "64"]
    ops = recipe.training_augment(recipe.parse_args(base + ["--aspect-augment", "--camera-augment", "--flips"]))
    assert isinstance(ops, Compose) and [type(op) for op in ops.ops][1:] == [AspectScale, CameraShift]
    assert recipe.training_augment(recipe.parse_args(base)) is not None
    assert not any(isinstance(op, AspectScale) for op in getattr(recipe.training_augment(recipe.parse_args(base)),
                                                                   "ops", []))
    import zoo

    model = zoo.create_model("efficientnet_lite0", paper="004", task="grade-regression", head="gap_linear",
                             input_size=64, pretrained=False).eval()
    photos = [make_fundus(64, seed=k, lesions=())[0] for k in range(3)]
    images = CachedImages.from_arrays(photos, np.arange(3, dtype=np.float32), names=["a", "b", "c"])
    views = cache_features(FrozenBottom(model, 2), images, model.config.mean, model.config.std, views=2,
                           augment=AspectScale(p_aspect=1.0, p_scale=1.0, min_side=32, max_side=32), progress=False)
    assert len(views) == 6 and views.names[3] == "a#view1"
    assert not torch.allclose(views.images[:3].float(), views.images[3:].float())  # view 1 is the augmented one


def test_grade_agreement_of_a_tiny_model():
    import zoo
    from zoo.evaluation.agreement import VARIANTS, downscaled, grade_agreement, squashed, squashed_small

    photo = np.zeros((300, 450, 3), np.uint8)  # a 3:2 photo
    assert squashed(photo).shape == (300, 300, 3) and downscaled(photo).shape == (224, 336, 3)
    assert squashed_small(photo).shape == (224, 224, 3) and downscaled(photo[:100, :150]).shape == (100, 150, 3)

    torch.manual_seed(0)
    model = zoo.create_model("simple_cnn", paper="", task="grade-regression", input_size=48, pretrained=False,
                             labels=["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"])
    photos = [make_fundus(300, seed=k, lesions=("EX",))[0] for k in range(3)]
    photos = [np.pad(p, ((0, 0), (75, 75), (0, 0))) for p in photos]  # 300 × 450: a field inside a 3:2 photo
    same = {"as it is": lambda im: im}
    result = grade_agreement(model, photos, truth=[0, 1, 2], variants={**same, **VARIANTS})
    assert result["n_photos"] == 3 and set(result) >= {"original", *VARIANTS}
    assert result["as it is"]["agreement"] == 1.0 and result["as it is"]["mean_abs_value_change"] == 0.0
    for name in VARIANTS:
        row = result[name]
        assert 0.0 <= row["agreement"] <= 1.0
        assert row["agreement"] + row["changed_up"] + row["changed_down"] == pytest.approx(1.0)
    # The grades are the model's own decisions of the values measured (its config's rule).
    from zoo.evaluation.agreement import graded

    grades, values = graded(model, photos)
    assert grades.shape == (3,) and values.shape == (3,)
    assert np.array_equal(grades, model.decide(torch.from_numpy(values).view(-1, 1)).numpy())
