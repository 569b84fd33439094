"""ELLG lesion generation (paper 004, 2.3) on synthetic fundus images, and the `ellg` recipe end to end."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fundus import make_fundus
from train.ellg import (
    LesionPatch,
    blend_lesions,
    classify,
    compose_lesion_layer,
    extract_lesion_patches,
    generate_lesion_image,
    lalphabeta_to_rgb,
    mix_labels,
    reinhard_transfer,
    rgb_to_lalphabeta,
    shift_patches,
)

SIZE = 128


@pytest.fixture(scope="module")
def diseased():
    """A synthetic fundus with HE/EX/SE lesions (known masks) — the source of lesion patches."""
    rgb, info = make_fundus(SIZE, seed=3, lesions={"HE": 3, "EX": 4, "SE": 1})
    mask = np.zeros(rgb.shape[:2], bool)
    for m in info["masks"].values():
        mask |= m
    return rgb, mask, info


@pytest.fixture(scope="module")
def normal():
    """A darker normal fundus (no lesions) — the image the lesions are blended into."""
    rgb, info = make_fundus(SIZE, seed=11, lesions=0, exposure=0.7)
    return rgb, info["fov_mask"]


def _pairwise_disjoint(patches, shape):
    count = np.zeros(shape, np.int32)
    for p in patches:
        x0, y0, x1, y1 = p.box
        count[y0:y1, x0:x1] += p.mask
    return count.max() <= 1


# ------------------------------------------------------------------ lαβ and Reinhard transfer


def test_lalphabeta_round_trip_is_exact_on_8bit_colours():
    rng = np.random.default_rng(0)
    rgb = rng.integers(1, 256, size=(32, 32, 3), dtype=np.uint8)
    back = np.rint(lalphabeta_to_rgb(rgb_to_lalphabeta(rgb)) * 255)
    assert np.array_equal(back, rgb)
    # A grey pixel has no colour: α = β = 0 in Ruderman's space.
    grey = rgb_to_lalphabeta(np.full((1, 3), 128, np.uint8))
    assert abs(grey[0, 1]) < 1e-3 and abs(grey[0, 2]) < 1e-3


def test_reinhard_transfer_gives_patch_the_target_statistics_in_lalphabeta(diseased, normal):
    source, mask, _ = diseased
    target, fov = normal
    tgt = rgb_to_lalphabeta(target[fov])
    before = rgb_to_lalphabeta(source[mask])
    # The test can fail: the lesion colours start far from the darker normal retina.
    assert np.abs(before.mean(0) - tgt.mean(0)).max() > 0.05

    out = reinhard_transfer(source, target, source_mask=mask, target_mask=fov)
    after = rgb_to_lalphabeta(out[mask])
    np.testing.assert_allclose(after.mean(0), tgt.mean(0), atol=0.01)
    np.testing.assert_allclose(after.std(0), tgt.std(0), rtol=0.1, atol=0.003)
    assert np.array_equal(out[~mask], source[~mask])  # only the lesion pixels change


def test_reinhard_transfer_of_the_whole_photo_keeps_lesion_contrast(diseased, normal):
    source, mask, info = diseased
    target, fov = normal
    whole = reinhard_transfer(source, target, source_mask=info["fov_mask"], target_mask=fov)
    tgt = rgb_to_lalphabeta(target[fov])
    np.testing.assert_allclose(rgb_to_lalphabeta(whole[info["fov_mask"]]).mean(0), tgt.mean(0), atol=0.01)
    # apply_mask changes only the lesion pixels, in the tone measured over the whole field of view.
    lesions_only = reinhard_transfer(source, target, source_mask=info["fov_mask"], target_mask=fov, apply_mask=mask)
    assert np.array_equal(lesions_only[mask], whole[mask]) and np.array_equal(lesions_only[~mask], source[~mask])
    # The lesions keep their offset from the retina around them (in the lightness l), unlike a transfer
    # that forces the lesion pixels' own mean onto the target's.
    retina = info["fov_mask"] & ~mask
    before = rgb_to_lalphabeta(source[mask]).mean(0)[0] - rgb_to_lalphabeta(source[retina]).mean(0)[0]
    after = rgb_to_lalphabeta(whole[mask]).mean(0)[0] - rgb_to_lalphabeta(whole[retina]).mean(0)[0]
    assert abs(before) > 0.01 and np.sign(after) == np.sign(before)


def test_reinhard_transfer_rejects_bad_input(normal):
    target, fov = normal
    with pytest.raises(ValueError, match="source_mask selects no pixel"):
        reinhard_transfer(target, target, source_mask=np.zeros(fov.shape, bool))
    with pytest.raises(ValueError, match=r"target_mask must have shape \(128, 128\)"):
        reinhard_transfer(target, target, target_mask=np.ones((4, 4), bool))
    with pytest.raises(TypeError, match="source must be a numpy array"):
        reinhard_transfer(target.tolist(), target)


# ------------------------------------------------------------------ patch extraction


def test_extract_lesion_patches_one_per_connected_component():
    image = np.arange(20 * 20 * 3, dtype=np.uint32).reshape(20, 20, 3).astype(np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[2:5, 2:6] = True  # 12 px
    mask[10:12, 10:11] = True  # 2 px
    mask[15, 15] = True  # 1 px, dropped by min_area=2
    patches = extract_lesion_patches(image, mask, min_area=2)
    assert [p.area for p in patches] == [12, 2]
    assert patches[0].box == (2, 2, 6, 5) and patches[1].box == (10, 10, 11, 12)
    for p in patches:
        x0, y0, x1, y1 = p.box
        assert np.array_equal(p.pixels[p.mask], image[y0:y1, x0:x1][p.mask])
        assert not p.pixels[~p.mask].any()
    assert len(extract_lesion_patches(image, mask)) == 3
    image[2, 2:6] = 0  # black pixels (outside a field of view) are never lesion pixels
    assert extract_lesion_patches(image, mask, min_area=2)[0].area == 8


def test_extract_lesion_patches_from_synthetic_lesion_masks(diseased):
    source, mask, info = diseased
    patches = extract_lesion_patches(source, mask)
    assert len(patches) >= 3
    assert sum(p.area for p in patches) == mask.sum()


# ------------------------------------------------------------------ random shifting


def test_shifted_patches_do_not_overlap_and_stay_in_the_field(diseased, normal):
    source, mask, _ = diseased
    _, fov = normal
    patches = extract_lesion_patches(source, mask)
    shifted = shift_patches(patches, fov.shape, np.random.default_rng(0), allowed=fov)
    assert len(shifted) == len(patches)
    assert not any(p.overlaps for p in shifted)
    assert _pairwise_disjoint(shifted, fov.shape)
    layer, placed = compose_lesion_layer(shifted, fov.shape)
    assert not (placed & ~fov).any()  # every lesion pixel inside the target's field of view
    assert placed.sum() == mask.sum()
    assert any(p.box != q.box for p, q in zip(shifted, patches))  # they did move


def test_shift_gives_up_after_max_tries_and_flags_the_overlap():
    block = LesionPatch((0, 0, 8, 8), np.ones((8, 8), bool), np.full((8, 8, 3), 200, np.uint8))
    calls = {"n": 0}

    class CountingRng:
        def __init__(self):
            self.rng = np.random.default_rng(0)

        def integers(self, low, high):
            calls["n"] += 1
            return self.rng.integers(low, high)

    # Two 8×8 patches cannot both fit into a 10×10 image without overlapping.
    shifted = shift_patches([block, block], (10, 10), CountingRng(), max_tries=100)
    assert shifted[0].overlaps is False and shifted[1].overlaps is True
    assert calls["n"] == 2 * (1 + 100)  # one try for the first, all 100 for the second (x and y each)
    with pytest.raises(ValueError, match="does not fit"):
        shift_patches([block], (6, 6), np.random.default_rng(0))
    # No try lands inside the allowed region (a 3×3 field for an 8×8 patch): it stays where it was cut.
    field = np.zeros((20, 20), bool)
    field[:3, :3] = True
    moved = block.moved_to(5, 7)
    stuck = shift_patches([moved], (20, 20), np.random.default_rng(0), allowed=field)[0]
    assert stuck.overlaps and stuck.box == (0, 0, 8, 8)  # its origin, not a random spot on the surround


# ------------------------------------------------------------------ eq. 5 and eq. 6


def test_blend_follows_eq5_exactly(normal):
    other, _ = normal
    rng = np.random.default_rng(1)
    lesion = np.zeros_like(other)
    lesion[40:60, 30:50] = rng.integers(1, 256, size=(20, 20, 3), dtype=np.uint8)
    for r in (0.0, 0.37, 0.8, 1.0):
        out = blend_lesions(lesion, other, r)
        nonzero = lesion.any(axis=2)
        expected = np.rint(r * lesion.astype(np.float64) + (1 - r) * other.astype(np.float64))
        assert np.array_equal(out[nonzero], expected[nonzero].astype(np.uint8))
        assert np.array_equal(out[~nonzero], other[~nonzero])  # I_b = I_o where I_s = 0
    assert np.array_equal(blend_lesions(lesion, other, 1.0)[nonzero], lesion[nonzero])
    with pytest.raises(ValueError, match=r"r must lie in \[0, 1\]"):
        blend_lesions(lesion, other, 1.2)


def test_labels_follow_eq6_and_classify_by_cutoffs():
    assert mix_labels(3, 0, 0.6) == pytest.approx(1.8)
    assert classify(mix_labels(3, 0, 0.6)) == 2
    assert classify(mix_labels(4, 0, 0.3)) == 1  # 1.2
    assert classify(mix_labels(1, 0, 0.4)) == 0  # 0.4: too faint to stay diseased
    assert classify(0.5001) == 1 and classify(0.5) == 0  # a grade needs its cut-off exceeded, as zoo's decide
    assert classify([0.2, 1.49, 2.51, 9.0]).tolist() == [0, 1, 3, 4]
    assert classify(1.2, cutoffs=(1.0, 2.0)) == 1
    with pytest.raises(ValueError, match="strictly increasing"):
        classify(1.0, cutoffs=(1.5, 0.5))


def test_generate_lesion_image_chains_the_steps(diseased, normal):
    source, mask, info = diseased
    other, fov = normal
    gen = generate_lesion_image(source, mask, 3, other, 0, 0.7, np.random.default_rng(4),
                                source_fov=info["fov_mask"], other_fov=fov)
    assert gen.label == classify(0.7 * 3) == 2 and gen.mixed_value == pytest.approx(2.1)
    assert gen.lesion_mask.sum() == mask.sum()
    assert np.array_equal(gen.image[~gen.lesion_mask], other[~gen.lesion_mask])
    assert _pairwise_disjoint(gen.patches, fov.shape) and not (gen.lesion_mask & ~fov).any()
    # Each patch carries the source's lesion pixels in the other photo's tone (Reinhard in lαβ) ...
    toned = reinhard_transfer(source, other, source_mask=info["fov_mask"], target_mask=fov)
    for patch in gen.patches:
        x0, y0, x1, y1 = patch.origin
        assert np.array_equal(patch.pixels[patch.mask], toned[y0:y1, x0:x1][patch.mask])
    # ... blended into the other photo by eq. 5 where it landed.
    layer, placed = compose_lesion_layer(gen.patches, other.shape[:2])
    expected = np.rint(0.7 * layer.astype(float) + (1 - 0.7) * other.astype(float)).astype(np.uint8)
    assert np.array_equal(gen.image[placed], expected[placed])
    assert not np.array_equal(gen.image, other)
    # No lesion found: the normal image comes back unchanged with its own label.
    empty = generate_lesion_image(source, np.zeros_like(mask), 3, other, 0, 0.7, np.random.default_rng(0))
    assert np.array_equal(empty.image, other) and empty.label == 0


# ------------------------------------------------------------------ the `ellg` recipe


def write_aptos_fixture(root, n=12, size=224):
    """APTOS 2019's layout: train.csv (id_code,diagnosis) + train_images/<id_code>.png."""
    import csv

    from PIL import Image

    (root / "train_images").mkdir(parents=True)
    rows = []
    for i in range(n):
        grade = i % 5
        lesions = {"HE": grade, "EX": grade + 1, "MA": 2 * grade} if grade else 0
        rgb, _ = make_fundus(size, seed=100 + i, lesions=lesions)
        Image.fromarray(rgb).save(root / "train_images" / f"img{i:03d}.png")
        rows.append([f"img{i:03d}", grade])
    with open(root / "train.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id_code", "diagnosis"])
        writer.writerows(rows)
    return root


def test_round_schedule_and_source_selection():
    from train.recipes.ellg import round_stages, select_sources

    stages = round_stages(30, 3e-5, "round1")  # paper 004: 3e-5, 3e-6, 3e-7 for 10 epochs each
    assert [(s.epochs, s.lr) for s in stages] == [(10, 3e-5), (10, pytest.approx(3e-6)), (10, pytest.approx(3e-7))]
    assert [s.epochs for s in round_stages(2, 1e-4, "r")] == [1, 1]
    predicted = np.array([0, 0, 2, 1, 3, 0])
    truth = np.array([0, 1, 2, 2, 3, 0])
    sources, normals, fallback = select_sources(predicted, truth)
    assert sources.tolist() == [2, 4] and normals.tolist() == [0, 5] and not fallback
    assert select_sources(predicted, truth, "all")[0].tolist() == [1, 2, 3, 4]
    _, normals, fallback = select_sources(np.array([1, 1, 2]), np.array([0, 0, 2]))
    assert fallback and normals.tolist() == [0, 1]  # no normal photo classified correctly: use all normals
    with pytest.raises(ValueError, match="mode must be"):
        select_sources(predicted, truth, "some")


def test_ellg_flags_follow_the_paper_and_are_checked(tmp_path):
    from train.recipes import get_recipe

    recipe = get_recipe("ellg")
    args = recipe.parse_args(["--data", str(tmp_path), "--format", "aptos"])
    assert (args.arch, args.input_size, args.lr, args.batch_size) == ("dr_detection_net", 512, 8e-5, 64)
    assert args.epochs == 30
    assert (args.rounds, args.round_epochs, args.round_lr, args.t) == (4, 30, 3e-5, 1.0)
    assert tuple(args.tau_range) == (0.5, 0.8) and args.max_tries == 100
    images = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert torch.equal(recipe.augment(args)(images), images)  # paper 004: no augmentation
    flips = recipe.parse_args(["--data", str(tmp_path), "--format", "aptos", "--flips"])
    torch.manual_seed(0)
    flipped = [recipe.augment(flips)(images) for _ in range(8)]
    assert any(not torch.equal(f, images) for f in flipped)
    assert all(any(torch.equal(f[0], v) for v in (images[0], images[0].flip(1), images[0].flip(2),
                                                   images[0].flip(1).flip(2))) for f in flipped)
    lite = recipe.parse_args(["--data", str(tmp_path), "--format", "aptos", "--arch", "efficientnet_lite0",
                              "--no-pretrained", "--input-size", "64"])
    model = recipe.build_model(lite, list(recipe.labels))  # EfficientNet-Lite0 with a one-value regression head
    assert model.config.task == "grade-regression" and model.config.arch_kwargs["head"] == "gap_linear"
    assert model(torch.rand(2, 3, 64, 64)).shape == (2, 1)
    assert model.config.tau == 0.65 and model.config.low_layer and model.config.target_layer  # GMSM's two layers
    for bad in (["--tau-range", "0.8", "0.5"], ["--r-range", "0.5", "1.5"], ["--round-epochs", "0"]):
        with pytest.raises(SystemExit):
            recipe.parse_args(["--data", str(tmp_path), "--format", "aptos", *bad])


@pytest.mark.slow
def test_ellg_recipe_end_to_end(tmp_path, monkeypatch):
    import json
    import warnings

    import zoo
    from train.recipes import get_recipe

    monkeypatch.setenv("FCZ_CACHE_DIR", str(tmp_path / "cache"))
    data = write_aptos_fixture(tmp_path / "aptos")
    out = tmp_path / "out"
    argv = ["--data", str(data), "--format", "aptos", "--arch", "dr_detection_net", "--input-size", "192",
            "--epochs", "1", "--rounds", "1", "--round-epochs", "1", "--batch-size", "8", "--workers", "0",
            "--val-fraction", "0.25", "--t", "0", "--lesion-sources", "all", "--quiet", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_recipe("ellg").main(argv) == 0

    rounds = json.loads((out / "training" / "ellg_rounds.json").read_text())
    assert len(rounds) == 1 and rounds[0]["sources"] > 0 and rounds[0]["generated"] > 0
    assert sorted(int(k) for k in rounds[0]["grades"]) and all(0 <= int(k) <= 4 for k in rounds[0]["grades"])
    assert (out / "training" / "round1" / "generated-0.png").is_file()
    # The round trained on the originals + the generated photos: more batches of 8 than the base epoch.
    steps = {phase: int((out / "training" / phase / "metrics.csv").read_text().splitlines()[1].split(",")[2])
             for phase in ("base", "round1")}
    n_round = 9 + rounds[0]["generated"]
    batches = -(-n_round // 8) - (n_round % 8 == 1)  # the loop drops a trailing batch of one
    assert steps["round1"] == batches > steps["base"] == 1
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "dr_detection_net" and config["task"] == "grade-regression"
    assert config["t"] == 0 and "generated photos" in config["description"]
    validation = json.loads((out / "training" / "validation.json").read_text())
    assert "quadratic_kappa" in json.dumps(validation) and "accuracy" in json.dumps(validation)
    model = zoo.load(str(out), device="cpu")
    assert model(torch.rand(1, 3, 192, 192)).shape == (1, 1)
