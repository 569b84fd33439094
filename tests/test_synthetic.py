"""fundus.make_fundus: deterministic, with the geometry and lesion masks it reports."""
from __future__ import annotations

import numpy as np
import pytest

from fundus import make_fundus
from fundus.synthetic import LESION_TYPES


def test_deterministic_given_seed():
    a, info_a = make_fundus(128, seed=7)
    b, info_b = make_fundus(128, seed=7)
    c, _ = make_fundus(128, seed=8)
    np.testing.assert_array_equal(a, b)
    assert info_a["boxes"] == info_b["boxes"]
    assert not np.array_equal(a, c)


def test_field_geometry_matches_info():
    rgb, info = make_fundus(200, seed=1, radius_frac=0.4, center=(90.0, 110.0))
    assert rgb.shape == (200, 200, 3) and rgb.dtype == np.uint8
    assert info["center"] == (90.0, 110.0) and info["radius"] == pytest.approx(80.0)
    yy, xx = np.mgrid[0:200, 0:200]
    outside = np.hypot(xx - 90, yy - 110) > 81
    assert rgb[outside].max() == 0  # black surround
    inside = np.hypot(xx - 90, yy - 110) < 70
    assert rgb[inside].mean() > 40
    # Orange-red: red dominates green dominates blue inside the field.
    mean = rgb[inside].reshape(-1, 3).mean(axis=0)
    assert mean[0] > mean[1] > mean[2]


def test_borders():
    none, info_none = make_fundus(128, seed=2, border="none")
    assert info_none["radius"] == pytest.approx(64.0)
    assert none[64, 1].max() > 0 and none[0, 0].max() == 0  # touches the sides, corners black
    notched, info_notched = make_fundus(160, seed=2, border="notched")
    assert notched.shape == (128, 160, 3)
    assert info_notched["radius"] > notched.shape[0] / 2  # cut at top and bottom
    assert notched[0, 80].max() > 0  # the field reaches the top edge
    with pytest.raises(ValueError, match="border must be one of"):
        make_fundus(128, border="grey")


def test_lesion_masks_boxes_and_colours():
    rgb, info = make_fundus(256, seed=4)
    assert set(info["masks"]) == set(LESION_TYPES)
    hsv_red = rgb[..., 0].astype(int)
    for name, mask in info["masks"].items():
        assert mask.shape == rgb.shape[:2] and mask.any(), name
        assert not (mask & ~info["fov_mask"]).any(), f"{name} outside the field"
    # Exudates are bright yellow (red and green high), haemorrhages dark red.
    ex, he = info["masks"]["EX"], info["masks"]["HE"]
    assert rgb[ex][:, 1].mean() > rgb[he][:, 1].mean() + 60
    assert hsv_red[he].mean() < hsv_red[info["fov_mask"]].mean()
    for name, x0, y0, x1, y1 in info["boxes"]:
        assert 0 <= x0 < x1 <= 256 and 0 <= y0 < y1 <= 256
        assert info["masks"][name][y0:y1, x0:x1].any()


def test_lesion_argument_forms():
    _, none = make_fundus(128, seed=1, lesions=())
    assert none["masks"] == {} and none["boxes"] == []
    _, counted = make_fundus(128, seed=1, lesions=5)
    assert len(counted["boxes"]) == 5
    _, mapped = make_fundus(128, seed=1, lesions={"EX": 3})
    assert set(mapped["masks"]) == {"EX"} and len(mapped["boxes"]) == 3
    with pytest.raises(ValueError, match="unknown lesion types"):
        make_fundus(128, lesions=("MA", "DRUSEN"))
    with pytest.raises(TypeError, match="sequence of types"):
        make_fundus(128, lesions="MA")


def test_exposure_scales_brightness():
    dark, info = make_fundus(128, seed=3, exposure=0.4)
    normal, _ = make_fundus(128, seed=3)
    field = info["fov_mask"]
    ratio = dark[field].mean() / normal[field].mean()
    assert 0.35 < ratio < 0.45
