"""Field of view, crop, CLAHE, normalisation and the way back (to_original)."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from conftest import shared_dataset
from fundus import clahe, detect_fov, load_image, make_fundus, preprocess, preprocess_batch, remove_black_border
from fundus.preprocess import crop_box_for


def _config(size=224, *, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), **steps):
    pre = {"fov_crop": True, "clahe": False, "clahe_clip": 2.0, "clahe_tile": 8, **steps}
    return SimpleNamespace(input_size=size, mean=mean, std=std, preprocessing=pre)


FOV_CASES = [
    dict(),
    dict(border="none"),
    dict(border="notched"),
    dict(border="notched", exposure=0.35, seed=5),
    dict(exposure=0.3),
    dict(exposure=1.7),
    dict(center=(150.0, 260.0), radius_frac=0.3),
    dict(center=(300.0, 200.0), radius_frac=0.42, exposure=0.6),
    dict(size=1000, border="notched", seed=9),
    dict(center=(110.0, 200.0), radius_frac=0.4),  # cut by the left edge of the photo
]


@pytest.mark.parametrize("case", FOV_CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()) or "default")
def test_fov_circle_on_known_synthetic_fields(case):
    rgb, info = make_fundus(**{"size": 400, **case})
    fov = detect_fov(rgb)
    assert fov.found
    radius = info["radius"]
    assert abs(fov.radius - radius) <= 0.03 * radius
    assert np.hypot(fov.center[0] - info["center"][0], fov.center[1] - info["center"][1]) <= 0.03 * radius
    assert fov.mask.shape == rgb.shape[:2]
    # The detected mask agrees with the true field almost everywhere.
    assert (fov.mask != info["fov_mask"]).mean() < 0.02


def test_fov_with_a_strongly_vignetted_side():
    # Like DIARETDB1 0518: one side of the field fades almost to black before the field edge.
    rgb, info = make_fundus(400, seed=3, exposure=1.3)
    fade = np.clip(1.5 - np.linspace(0, 1.8, 400), 0.06, 1.0)[None, :, None]
    dark_side = np.round(rgb * fade).astype(np.uint8)
    field = info["fov_mask"]
    assert np.percentile(dark_side.max(axis=2)[field], 5) < 0.15 * np.percentile(dark_side.max(axis=2)[field], 95)
    fov = detect_fov(dark_side)
    assert fov.found
    assert abs(fov.radius - info["radius"]) <= 0.03 * info["radius"]
    assert np.hypot(fov.center[0] - info["center"][0], fov.center[1] - info["center"][1]) <= 0.03 * info["radius"]


@pytest.mark.parametrize("kind", ["black", "white", "grey", "noise", "noise_gray"])
def test_no_field_gives_found_false_without_raising(kind):
    rng = np.random.default_rng(0)
    image = {
        "black": np.zeros((200, 300, 3), np.uint8),
        "white": np.full((200, 300, 3), 255, np.uint8),
        "grey": np.full((200, 300, 3), 128, np.uint8),
        "noise": rng.integers(0, 256, (200, 300, 3), dtype=np.uint8),
        "noise_gray": np.repeat(rng.integers(0, 256, (200, 300, 1), dtype=np.uint8), 3, axis=2),
    }[kind]
    fov = detect_fov(image)
    assert not fov.found and fov.mask.all()
    pre = preprocess(image, _config(64))
    assert not pre.fov_found and pre.warnings and "No fundus field" in pre.warnings[0]
    assert pre.crop_box == (0, -50, 300, 250)  # the whole photo, padded to a square


def test_field_filling_the_frame_is_found_and_kept_whole():
    rgb, _ = make_fundus(400, seed=1, radius_frac=0.48)
    inner = np.ascontiguousarray(rgb[110:290, 90:310])  # a crop well inside the field
    fov = detect_fov(inner)
    assert fov.found and fov.fills_frame and fov.mask.all()
    box = crop_box_for(inner.shape, fov)
    assert box == (0, -20, 220, 200)


def test_real_photos_from_every_folder():
    folders = {
        "srahim-dr600": "*/*.jpg",
        "idrid-seg-dev": "A. Segmentation/1. Original Images/a. Training Set/*.jpg",
        "diaretdb1-boxes": "images/*.jpg",
        "hrf": "images/*.jpg",
    }
    for name, pattern in folders.items():
        root = shared_dataset(name)
        paths = sorted(root.glob(pattern))[:: max(1, len(list(root.glob(pattern))) // 3)][:3]
        assert paths, name
        for path in paths:
            rgb = load_image(path)
            fov = detect_fov(rgb)
            assert fov.found, path
            if name in ("srahim-dr600", "hrf"):
                # These fields are cut at top and bottom: the fitted circle must be taller than
                # the photo (an estimate from the field's area or height would fall short).
                assert 2 * fov.radius > 1.1 * rgb.shape[0], (path, fov.radius)
            fraction = fov.mask.mean()
            assert 0.45 < fraction <= 1.0, (path, fraction)
            # The field is bright and the photo outside it dark.
            light = rgb.max(axis=2)
            if (~fov.mask).sum() > 1000:
                assert np.median(light[~fov.mask]) < 0.25 * np.median(light[fov.mask]), path
            pre = preprocess(rgb, _config(128))
            x0, y0, x1, y1 = pre.crop_box
            assert x1 - x0 == y1 - y0 and pre.image.shape == (128, 128, 3)
            assert 0.55 < pre.fov_mask.mean() < 0.85, (path, pre.fov_mask.mean())  # π/4 for a full disc


def test_notched_crop_is_square_and_padded():
    rgb, info = make_fundus(300, seed=2, border="notched")
    pre = preprocess(rgb, _config(150))
    x0, y0, x1, y1 = pre.crop_box
    assert x1 - x0 == y1 - y0
    assert y0 < 0 and y1 > rgb.shape[0]  # the circle is cut at top and bottom: pad with black
    assert abs((x1 - x0) - 2 * info["radius"]) <= 3
    assert pre.scale == pytest.approx(150 / (x1 - x0))
    pad_rows = int(-y0 * pre.scale) - 1
    assert pre.image[:pad_rows].max() == 0 and not pre.fov_mask[:pad_rows].any()
    square, box = remove_black_border(rgb)
    assert box == pre.crop_box and square.shape == (x1 - x0, x1 - x0, 3)


def test_crop_is_centred_on_a_field_cut_by_the_photo_edge():
    rgb, info = make_fundus(400, seed=2, center=(110.0, 200.0), radius_frac=0.4)
    pre = preprocess(rgb, _config(64))
    x0, y0, x1, y1 = pre.crop_box
    assert x0 < 0  # padded on the left, where the circle leaves the photo
    assert abs((x0 + x1) / 2 - (info["center"][0] + 0.5)) <= 1.5
    assert abs((y0 + y1) / 2 - (info["center"][1] + 0.5)) <= 1.5
    assert abs((x1 - x0) - 2 * info["radius"]) <= 3
    # The field's centre lands in the middle of the model's input; the cut-off part is black.
    ys, xs = np.nonzero(pre.fov_mask)
    assert abs((ys.min() + ys.max()) / 2 - 31.5) <= 1 and xs.max() >= 62
    left_pad = int(-x0 * pre.scale) - 1
    assert pre.image[:, :left_pad].max() == 0 and not pre.fov_mask[:, :left_pad].any()


def test_to_original_puts_a_marked_spot_back():
    rgb, info = make_fundus(400, seed=6, border="notched")
    rgb = rgb.copy()
    marks = [(140, 120), (230, 200), (300, 90)]
    for x, y in marks:
        rgb[y - 3 : y + 4, x - 3 : x + 4] = (0, 0, 255)  # pure blue: nothing else in a fundus is
    pre = preprocess(rgb, _config(224))
    r, g, b = (pre.image[..., c].astype(int) for c in range(3))
    blue = (b > 120) & (b > r + 60) & (b > g + 60)
    back = pre.to_original(blue, rgb.shape)
    assert back.dtype == np.bool_ and back.shape == rgb.shape[:2]
    for x, y in marks:
        ys, xs = np.nonzero(back[y - 12 : y + 13, x - 12 : x + 13])
        assert len(xs) > 0, (x, y)
        assert abs(xs.mean() - 12) <= 1.5 and abs(ys.mean() - 12) <= 1.5
    # A float map: the image itself comes back close to the photo inside the field.
    red_back = pre.to_original(pre.image[..., 0].astype(np.float32) / 255.0)
    field = info["fov_mask"] & (np.abs(np.gradient(rgb[..., 0].astype(float))[0]) < 3)
    assert np.abs(red_back[field] - rgb[..., 0][field] / 255.0).mean() < 0.03


def test_large_photo_path_matches_plain_crop_and_resize():
    # A crop many times the input size takes the integer-shrink + affine-warp path.
    import cv2

    from fundus.preprocess import _crop_padded

    rgb, info = make_fundus(1200, seed=8, border="notched")
    rgb = rgb.copy()
    x, y = 400, 300
    rgb[y - 20 : y + 21, x - 20 : x + 21] = (0, 0, 255)
    pre = preprocess(rgb, _config(96))
    assert (pre.crop_box[2] - pre.crop_box[0]) // 96 >= 2
    reference = cv2.resize(_crop_padded(rgb, pre.crop_box), (96, 96), interpolation=cv2.INTER_AREA)
    assert np.abs(pre.image.astype(int) - reference).mean() < 2.0
    r, g, b = (pre.image[..., c].astype(int) for c in range(3))
    blue = (b > r + 60) & (b > g + 60)
    ys, xs = np.nonzero(pre.to_original(blue, rgb.shape))
    assert abs(xs.mean() - x) <= 2 and abs(ys.mean() - y) <= 2  # an output pixel is ≈ 11 photo pixels


@pytest.mark.parametrize("size, border", [(224, "notched"), (64, "notched"), (64, "black")])
def test_to_model_maps_photo_masks_like_the_photo(size, border):
    rgb, info = make_fundus(700, seed=9, border=border)
    pre = preprocess(rgb, _config(size))
    # The field mask of the photo, taken to the model frame, is the model-frame field mask.
    fov = pre.to_model(info["fov_mask"])
    assert fov.dtype == np.bool_ and fov.shape == (size, size)
    assert (fov != pre.fov_mask).mean() < 0.02
    # A float map travels like the image: the red channel comes out as the model image's red.
    red = pre.to_model(rgb[..., 0].astype(np.float32))
    assert np.abs(red - pre.image[..., 0]).mean() < 1.5
    # Lesion masks stay where the lesions are drawn; a low threshold keeps small ones.
    exudates = pre.to_model(info["masks"]["EX"], threshold=0.2)
    assert exudates.any() and (exudates & pre.fov_mask).sum() == exudates.sum()
    with pytest.raises(ValueError, match="photo's size"):
        pre.to_model(np.zeros((10, 10), bool))


def test_to_original_is_zero_outside_the_crop_and_checks_shape():
    rgb, _ = make_fundus(300, seed=1, radius_frac=0.3)
    pre = preprocess(rgb, _config(64))
    ones = pre.to_original(np.ones((64, 64), np.float32))
    x0, y0, x1, y1 = pre.crop_box
    assert ones[y0:y1, x0:x1].min() == 1.0 and ones.sum() == (x1 - x0) * (y1 - y0)
    with pytest.raises(ValueError, match=r"\(S, S\)"):
        pre.to_original(np.ones((64, 32)))


def test_normalisation_uses_the_config_mean_and_std():
    rgb, _ = make_fundus(200, seed=3)
    mean, std = (0.1, 0.2, 0.3), (0.5, 0.25, 0.125)
    pre = preprocess(rgb, _config(96, mean=mean, std=std))
    assert tuple(pre.tensor.shape) == (1, 3, 96, 96) and str(pre.tensor.dtype) == "torch.float32"
    t = pre.tensor[0].numpy()
    for c in range(3):
        expected = (pre.image[..., c] / 255.0 - mean[c]) / std[c]
        np.testing.assert_allclose(t[c], expected, atol=1e-5)


def test_model_config_is_accepted(monkeypatch):
    from zoo.config import ModelConfig, Preprocessing

    config = ModelConfig(name="t", paper="003", arch="x", task="multiclass", labels=["a", "b"], input_size=80,
                         preprocessing=Preprocessing(clahe=True))
    rgb, _ = make_fundus(160, seed=2)
    pre = preprocess(rgb, config)
    assert pre.image.shape == (80, 80, 3) and pre.fov_found
    batch, items = preprocess_batch([rgb, rgb[:, ::-1].copy()], config)
    assert tuple(batch.shape) == (2, 3, 80, 80) and len(items) == 2


def _local_contrast(gray: np.ndarray, mask: np.ndarray, block: int = 16) -> float:
    values = []
    for y in range(0, gray.shape[0] - block + 1, block):
        for x in range(0, gray.shape[1] - block + 1, block):
            if mask[y : y + block, x : x + block].all():
                values.append(gray[y : y + block, x : x + block].std())
    return float(np.mean(values))


def test_clahe_raises_local_contrast_and_keeps_shape():
    rgb, info = make_fundus(256, seed=4, exposure=0.5)
    out = clahe(rgb, clip_limit=2.0, tile=8)
    assert out.shape == rgb.shape and out.dtype == np.uint8
    before = _local_contrast(rgb.mean(axis=2), info["fov_mask"])
    after = _local_contrast(out.mean(axis=2), info["fov_mask"])
    assert after > 1.3 * before
    stronger = _local_contrast(clahe(rgb, clip_limit=4.0).mean(axis=2), info["fov_mask"])
    assert stronger > after
    with pytest.raises(ValueError, match="clip_limit"):
        clahe(rgb, clip_limit=0)


def test_clahe_step_of_preprocess_follows_the_config():
    rgb, _ = make_fundus(200, seed=5, exposure=0.5)
    plain = preprocess(rgb, _config(128))
    enhanced = preprocess(rgb, _config(128, clahe=True))
    assert enhanced.image.std() > plain.image.std()
    assert plain.crop_box == enhanced.crop_box


def test_exposure_warnings():
    normal, _ = make_fundus(160, seed=2)
    dark, _ = make_fundus(160, seed=2, exposure=0.2)
    bright, _ = make_fundus(160, seed=2, exposure=3.0)
    assert preprocess(normal, _config(64)).warnings == []
    assert "very dark" in " ".join(preprocess(dark, _config(64)).warnings)
    assert "over-exposed" in " ".join(preprocess(bright, _config(64)).warnings)


def test_fov_crop_off_keeps_the_whole_photo():
    rgb, _ = make_fundus(300, seed=5, radius_frac=0.3)
    pre = preprocess(rgb, _config(100, fov_crop=False))
    assert pre.crop_box == (0, 0, 300, 300) and pre.fov_found


def test_bad_inputs():
    with pytest.raises(TypeError, match="uint8"):
        preprocess(np.zeros((100, 100, 3), np.float32), _config())
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        detect_fov(np.zeros((100, 100), np.uint8))
    with pytest.raises(TypeError, match="input_size"):
        preprocess(np.zeros((100, 100, 3), np.uint8), object())
    with pytest.raises(ValueError, match="std"):
        preprocess(np.zeros((100, 100, 3), np.uint8), _config(std=(0.2, 0.0, 0.2)))
