"""The localisation term (train.localisation: Ross et al. 2017, GAIN) on generated data: the energy share
outside the lesions, gradients into the head, lesion masks that follow the photo's crop, resize, flips and
rotations (train.lesion_masks, train.paired_augment, train.frozen_lesions), a tiny dr-lesions run with
--localisation-weight 1 (also with --frozen-blocks), and the default weight 0 being the plain loss."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

from fundus import make_fundus, preprocess
from fundus.datasets import load_dataset
from train import augment as aug
from train.data import CachedImages
from train.lesion_masks import lesion_masks, mask_size, photo_masks, shrink_any
from train.localisation import (ClassMaps, LocalisationTerm, label_weights_from, localisation_term, outside_energy,
                                region_at)
from train.loop import LoopConfig, Stage, fit
from train.paired_augment import apply_jointly
# The recipes' generated data sets: IDRiD segmentation masks (idrid-seg-dev) and YOLO boxes (diaretdb1-boxes).
from test_train_recipes import IDRID_FOLDERS, data  # noqa: F401 - data is a fixture

pytestmark = pytest.mark.usefixtures("one_torch_thread")
LABELS = ["BP/MA", "HM", "HEX", "CWS", "healthy"]
GREEN = np.array([0, 255, 0], np.uint8)  # a colour no synthetic fundus has: where the lesions are, visibly


def tiny_lesion_model(size: int = 128, head: str = "fcn"):
    import zoo

    torch.manual_seed(0)
    return zoo.create_model("efficientnet_lite0", paper="001", task="multilabel", pretrained=False, head=head,
                            input_size=size, arch_kwargs={"fcn_widths": [16, 8]})


def green_where(image: np.ndarray) -> np.ndarray:
    """(S, S) bool: the pixels painted GREEN (after resampling: green clearly dominant)."""
    x = image.astype(np.int16)
    return (x[..., 1] - np.maximum(x[..., 0], x[..., 2])) > 100


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max(1, (a | b).sum()))


# ------------------------------------------------------------------------------ (a) the term's value


def test_energy_inside_the_lesions_costs_nothing_outside_costs_all():
    region = torch.zeros(1, 1, 4, 4)
    region[..., 1:3, 1:3] = 1
    inside = region * 5.0 - 1.0  # positive only on the lesion, negative elsewhere (relu: no energy there)
    outside = (1 - region) * 3.0
    assert outside_energy(inside, region).item() == pytest.approx(0.0, abs=1e-6)
    assert outside_energy(outside, region).item() == pytest.approx(1.0, abs=1e-6)
    half = torch.ones(1, 1, 4, 4)
    assert outside_energy(half, region).item() == pytest.approx(12 / 16, abs=1e-6)


def test_only_annotated_positive_labels_count():
    cam = torch.ones(3, 2, 4, 4)  # energy everywhere: 12/16 outside a 2×2 region
    masks = torch.zeros(3, 2, 16, 16)
    masks[:, :, 4:12, 4:12] = 1  # the same 2×2 cells at the map's size
    masks[2, 1] = 0  # photo 2, label 1: no region known
    target = torch.tensor([[1.0, 0.0], [float("nan"), 0.0], [0.0, 1.0]])
    # Only (0, 0) counts: label 1 of photo 0 is negative, photo 1's labels unknown/negative, photo 2's label 1 unknown.
    assert localisation_term(cam, masks, target, dilate=0).item() == pytest.approx(0.75, abs=1e-6)
    nothing = localisation_term(cam.requires_grad_(), masks, torch.zeros(3, 2), dilate=0)
    assert nothing.item() == 0.0 and nothing.requires_grad  # in the graph, no gradient: DDP and the loop stay simple
    # Dilation by one cell grows the 2×2 region to the whole 4×4 map.
    assert region_at(masks[:1, :1], (4, 4), dilate=1).sum().item() == 16
    assert localisation_term(cam, masks, target, dilate=1).item() == pytest.approx(0.0, abs=1e-6)


def test_label_weights_scale_each_lesion_types_pairs():
    cam = torch.ones(2, 3, 4, 4)
    cam[1, 1, 1:3, 1:3] = 9.0  # photo 1, label 1: 36 of 48 energy inside the 2×2 region: E = 12/48
    masks = torch.zeros(2, 3, 16, 16)
    masks[:, :, 4:12, 4:12] = 1
    target = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])  # pairs: (0, label 0) E = 0.75, (1, label 1) E = 0.25
    plain = localisation_term(cam, masks, target, dilate=0)
    assert plain.item() == pytest.approx((0.75 + 0.25) / 2, abs=1e-6)
    ones = localisation_term(cam, masks, target, dilate=0, label_weights=torch.ones(3))
    assert ones.item() == pytest.approx(plain.item(), abs=1e-6)
    weighted = localisation_term(cam, masks, target, dilate=0, label_weights=torch.tensor([1.0, 4.0, 0.0]))
    assert weighted.item() == pytest.approx((0.75 + 4 * 0.25) / 2, abs=1e-6)  # a weighted sum over the same pairs
    # Label 2 has no positive pair here: weighting it changes nothing; weighting label 0 out leaves label 1's.
    only_1 = localisation_term(cam, masks, target, dilate=0, label_weights=torch.tensor([0.0, 1.0, 7.0]))
    assert only_1.item() == pytest.approx(0.25 / 2, abs=1e-6)


def test_label_weights_are_read_by_name_and_bad_ones_refused():
    labels = ["BP/MA", "HM", "HEX"]
    assert label_weights_from([], labels) is None
    assert label_weights_from(["HM=2.5", "BP/MA=0"], labels).tolist() == [0.0, 2.5, 1.0]
    for bad, message in [("XX=2", "one of BP/MA, HM, HEX"), ("HM", "LABEL=WEIGHT"), ("HM=a", "not a number"),
                         ("HM=-1", "≥ 0"), ("HM=nan", "≥ 0")]:
        with pytest.raises(ValueError, match=message):
            label_weights_from([bad], labels)
    with pytest.raises(ValueError, match="twice"):
        label_weights_from(["HM=2", "HM=3"], labels)


def test_the_recipe_passes_label_weights_to_the_term(data, tmp_path):  # noqa: F811 - the fixture
    from train.recipes import get_recipe

    recipe = get_recipe("dr-lesions")
    common = ["--data", str(data["idrid"]), "--format", "idrid-seg", "--input-size", "64", "--arch",
              "efficientnet_lite0", "--no-pretrained", "--quiet", "--cache-dir", str(tmp_path), "--out", str(tmp_path)]
    args = recipe.parse_args([*common, "--localisation-weight", "0.5", "--localisation-label-weight", "HM=3", "HEX=2"])
    term = recipe.loop_config(args, tiny_lesion_model(64)).localisation
    assert term.weight == 0.5 and term.label_weights.tolist() == [1.0, 3.0, 2.0, 1.0, 1.0]  # LABELS' order
    assert "--localisation-label-weight HM=3 HEX=2" in args.command
    # Refused before any photo is read: a label the recipe does not have, a label named twice, weights without the term.
    for bad, message in [(["--localisation-weight", "1", "--localisation-label-weight", "MA=2"], "one of BP/MA"),
                         (["--localisation-weight", "1", "--localisation-label-weight", "HM=2", "HM=3"], "twice"),
                         (["--localisation-label-weight", "HM=2"], "--localisation-weight > 0")]:
        with pytest.raises(SystemExit, match=message):
            recipe.parse_args([*common, *bad])


# ------------------------------------------------------------------------------ (b) gradients


def test_the_engines_class_maps_carry_gradients_into_the_head():
    model = tiny_lesion_model()
    maps = ClassMaps(model)
    assert maps.layer is model.head.score  # paper 001: the class score maps before global pooling
    x = torch.randn(2, 3, 128, 128)
    masks = torch.zeros(2, 5, 16, 16)
    masks[:, :3, :8, :8] = 1
    target = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 1, 0, 0]], dtype=torch.float32)
    with maps.capturing():
        logits = model(x)
        cam = maps.take()
    torch.testing.assert_close(cam.mean(dim=(2, 3)), logits)  # the logits are the maps' means: the same maps
    term = localisation_term(cam, masks, target)
    assert 0 < term.item() < 1
    term.backward()
    for name in ("head.score.weight", "head.conv1.weight", "backbone.conv_head.weight"):
        grad = model.get_parameter(name).grad
        assert grad is not None and grad.abs().sum() > 0, name
    with maps.capturing(), torch.no_grad():
        model(x)
        with pytest.raises(RuntimeError, match="no class maps"):
            maps.take()  # evaluation passes are not captured


def test_linear_cam_is_the_classifier_weighted_activations():
    model = tiny_lesion_model(64, head="gap_linear").eval()
    maps = ClassMaps(model)
    x = torch.randn(1, 3, 64, 64)
    with maps.capturing():
        logits = model(x)
        cam = maps.take()
    # GAP of Σ_k w_k A^k plus the bias is the logit (Zhou et al. 2016): the map is the engine's CAM.
    torch.testing.assert_close(cam.mean(dim=(2, 3)) + model.head.fc.bias, logits, rtol=1e-4, atol=1e-4)


def test_a_model_without_cam_is_refused():
    class NoCam(nn.Module):
        config = type("C", (), {"cam": None, "cam_reason": "several FC layers", "arch": "vgg13_bn"})()

    with pytest.raises(ValueError, match="several FC layers"):
        ClassMaps(NoCam())


# ------------------------------------------------------------------------------ (c) geometry


@pytest.fixture(scope="module")
def painted(tmp_path_factory) -> dict:
    """An off-centre, notched synthetic photo whose EX and HE lesions are painted GREEN, saved as an IDRiD
    segmentation set (masks as TIFFs) and as a YOLO box set (boxes from the drawn lesions)."""
    root = tmp_path_factory.mktemp("painted")
    rgb, info = make_fundus(320, seed=4, border="notched", center=(150.0, 130.0), lesions={"EX": 4, "HE": 3})
    grow = np.ones((9, 9), np.uint8)  # lesions large enough to be seen after a 256 px resize and a rotation
    info["masks"] = {kind: cv2.dilate(m.astype(np.uint8), grow).astype(bool) for kind, m in info["masks"].items()}
    lesion = info["masks"]["EX"] | info["masks"]["HE"]
    rgb[lesion] = GREEN
    seg = root / "idrid-seg-dev" / "A. Segmentation"
    photo = seg / "1. Original Images" / "a. Training Set" / "IDRiD_01.png"
    photo.parent.mkdir(parents=True)
    Image.fromarray(rgb).save(photo)
    truth = seg / "2. All Segmentation Groundtruths" / "a. Training Set"
    for kind, folder in IDRID_FOLDERS.items():
        (truth / folder).mkdir(parents=True)
        if kind in info["masks"]:
            Image.fromarray(info["masks"][kind]).save(truth / folder / f"IDRiD_01_{kind}.tif")
    yolo = root / "boxes"
    (yolo / "images").mkdir(parents=True)
    Image.fromarray(rgb).save(yolo / "images" / "0001.png")
    (yolo / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    h, w = rgb.shape[:2]
    classes = {"EX": 1, "HE": 2}
    lines = []
    for kind, mask in info["masks"].items():
        count, _, stats, _ = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
        for x0, y0, bw, bh, _ in stats[1:]:
            lines.append(f"{classes[kind]} {(x0 + bw / 2) / w} {(y0 + bh / 2) / h} {bw / w} {bh / h}")
    (yolo / "images" / "0001.txt").write_text("\n".join(["0 0.8 0.5 0.1 0.1", *lines]) + "\n")
    return {"rgb": rgb, "info": info, "idrid": root / "idrid-seg-dev", "yolo": yolo}


def config_at(size: int):
    from zoo.config import ModelConfig, Preprocessing

    return ModelConfig(name="t", paper="001", arch="efficientnet_lite0", task="multilabel", labels=LABELS,
                       input_size=size, preprocessing=Preprocessing(fov_crop=True, clahe=False))


def test_masks_and_boxes_follow_the_crop_and_resize(painted):
    config = config_at(256)
    size = mask_size(256)
    assert size == 32  # 4× the 8×8 class map of a stride-32 backbone
    seen = shrink_any(green_where(preprocess(painted["rgb"], config).image), size)  # where the photo shows them
    assert seen.sum() >= 20
    seg = load_dataset("idrid-seg", painted["idrid"], "train")[0]
    masks = photo_masks(seg.image, "idrid-seg", seg, config, LABELS, size)
    assert masks.shape == (5, size, size) and masks[[0, 3, 4]].sum() == 0  # no MA, SE drawn; healthy has no region
    assert iou(masks[1] | masks[2], seen) > 0.85  # HM | HEX where the photo shows them
    # Without the field-of-view crop (the notched photo is wider than tall, its field off-centre) they would not be.
    lesion = painted["info"]["masks"]["EX"] | painted["info"]["masks"]["HE"]
    squashed = cv2.resize(lesion.astype(np.uint8), (256, 256), interpolation=cv2.INTER_NEAREST).astype(bool)
    assert iou(shrink_any(squashed, size), seen) < 0.5
    boxed = load_dataset("yolo", painted["yolo"], "all")[0]
    boxes = photo_masks(boxed.image, "yolo", boxed, config, LABELS, size)
    assert boxes[[0, 3, 4]].sum() == 0  # haemorrhage boxes mark HM only; optic_disc marks nothing
    covered = boxes[1] | boxes[2]
    assert (seen & ~covered.astype(bool)).sum() == 0 and iou(covered, seen) > 0.6  # boxes hold the lesions


def test_masks_follow_flips_and_rotations_of_the_photo(painted):
    config = config_at(256)
    pre = preprocess(painted["rgb"], config)
    seg = load_dataset("idrid-seg", painted["idrid"], "train")[0]
    masks = torch.from_numpy(photo_masks(seg.image, "idrid-seg", seg, config, LABELS, 32)).float()
    masks = masks[None].repeat(8, 1, 1, 1)
    photos = torch.from_numpy(pre.image).permute(2, 0, 1)[None].float().div(255).repeat(8, 1, 1, 1)
    op = aug.Compose([aug.RandomFlip(horizontal=True, vertical=True),
                      aug.RandomAffine(max_rotation=math.radians(40), max_shift=0.08)])
    torch.manual_seed(3)
    alone = op(photos)
    torch.manual_seed(3)
    moved, moved_masks = apply_jointly(op, photos, masks)
    after_both = torch.rand(())
    torch.manual_seed(3)
    op(photos)
    torch.testing.assert_close(moved, alone, rtol=0, atol=0)  # the photos exactly as without masks
    assert after_both == torch.rand(())  # and the RNG where op alone leaves it
    followed, stayed = [], []
    for b in range(8):  # at the class map's size (8×8 for 256 px), as the term sees them
        seen = shrink_any(green_where((moved[b].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)), 8)
        followed.append(iou(region_at(moved_masks[b:b + 1, 1:3], (8, 8)).amax(1)[0].numpy(), seen))
        stayed.append(iou(region_at(masks[b:b + 1, 1:3], (8, 8)).amax(1)[0].numpy(), seen))
    assert min(followed) >= 0.6 and np.mean(followed) >= 0.8 and np.mean(stayed) <= 0.4, (followed, stayed)
    # Colour changes leave the masks where they are; an op of unknown kind is refused.
    shifted, same = apply_jointly(aug.CameraShift(p_jpeg=0), photos, masks)
    assert torch.equal(same, masks) and not torch.equal(shifted, photos)
    with pytest.raises(TypeError, match="moves pixels"):
        apply_jointly(lambda x: x.flip(-1), photos, masks)


def test_frozen_feature_views_keep_their_masks():
    from train.frozen_lesions import cache_features_with_lesions

    g = torch.Generator().manual_seed(0)
    lesions = (torch.rand(5, 2, 8, 8, generator=g) > 0.7).to(torch.uint8)
    # Each photo's first channel draws its first mask (8× larger): after any flip the two must still agree.
    images = torch.nn.functional.interpolate(lesions[:, :1].float(), scale_factor=8).mul(255).to(torch.uint8)
    images = CachedImages(images.repeat(1, 3, 1, 1), torch.zeros(5, 2), lesions=lesions)
    feats = cache_features_with_lesions(nn.Sequential(), images, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), views=3,
                                        augment=aug.RandomFlip(horizontal=True, vertical=True), batch_size=2,
                                        progress=False, dtype=torch.float32)
    assert feats.lesions.shape == (15, 2, 8, 8)
    drawn = torch.nn.functional.max_pool2d(feats.images[:, :1], 8) > 0.5
    assert torch.equal(drawn[:, 0], feats.lesions[:, 0].bool())
    assert not torch.equal(feats.lesions[5:10], feats.lesions[:5])  # the views were flipped, masks with them


# ------------------------------------------------------------------------------ (d), (e) the loop and the recipe


def lesion_set(n: int = 8, size: int = 64) -> CachedImages:
    images = [make_fundus(size, seed=s, lesions=("EX", "HE"))[0] for s in range(n)]
    targets = np.tile(np.array([0, 1, 1, 0, 0], np.float32), (n, 1))
    lesions = torch.zeros(n, 5, 8, 8, dtype=torch.uint8)
    lesions[:, 1:3, :3, :3] = 1  # HM and HEX in the top-left cell of the 2×2 class map
    plain = CachedImages.from_arrays(images, targets)
    return CachedImages(plain.images, plain.targets, lesions=lesions)


def run_fit(tmp_path: Path, name: str, weight: float | None):
    from train.losses import WeightedBCE

    model = tiny_lesion_model(64)
    term = None if weight is None else LocalisationTerm.for_model(model, weight, dilate=0)
    cfg = LoopConfig(out_dir=tmp_path / name, batch_size=4, progress=False, localisation=term)
    op = aug.Compose([aug.RandomFlip(horizontal=True, vertical=True), aug.RandomAffine(max_rotation=0.5)])
    result = fit(model, WeightedBCE(torch.ones(5)), lesion_set(), None, cfg, [Stage("all", 2, 1e-2)], augment=op)
    return model, result


@pytest.mark.slow
def test_weight_zero_is_the_plain_classification_loss(tmp_path):
    plain, a = run_fit(tmp_path, "plain", None)
    zero, b = run_fit(tmp_path, "zero", 0.0)
    assert [r["train_loss"] for r in a.history] == [r["train_loss"] for r in b.history]
    for (name, p), q in zip(plain.state_dict().items(), zero.state_dict().values()):
        assert torch.equal(p, q), name
    assert "train_localisation" not in a.history[0] and 0 < b.history[0]["train_localisation"] < 1
    one, c = run_fit(tmp_path, "one", 1.0)
    assert c.history[0]["train_loss"] != a.history[0]["train_loss"]  # λ = 1 changes the training


def test_the_term_needs_masks(tmp_path):
    model = tiny_lesion_model(64)
    cfg = LoopConfig(out_dir=tmp_path, batch_size=4, progress=False,
                     localisation=LocalisationTerm.for_model(model, 1.0))
    annotated = lesion_set()
    plain = CachedImages(annotated.images, annotated.targets)
    with pytest.raises(ValueError, match="lesion masks"):
        fit(model, nn.BCEWithLogitsLoss(), plain, None, cfg, [Stage("all", 1, 1e-2)])


FROZEN = ["--frozen-blocks", "2", "--cached-views", "2", "--epochs", "2", "--frozen-epochs", "1"]


@pytest.mark.slow
@pytest.mark.parametrize("frozen", [[], FROZEN], ids=["full", "frozen"])
def test_dr_lesions_trains_with_the_localisation_term(data, tmp_path, frozen):  # noqa: F811 - the fixture
    from train.__main__ import main as train_main

    out = tmp_path / "out"
    code = train_main(["dr-lesions", "--data", str(data["idrid"]), "--format", "idrid-seg",
                       "--data", str(data["yolo"]), "--format", "yolo", "--localisation-weight", "1",
                       "--localisation-dilate", "0",  # a 2×2 class map at 64 px: one cell of growth covers it
                       "--arch", "efficientnet_lite0", "--input-size", "64", "--no-pretrained", "--limit", "16",
                       "--epochs", "1", "--frozen-epochs", "0", "--batch-size", "4", "--fcn-widths", "16", "8",
                       "--val-fraction", "0.25", "--workers", "0", "--quiet", "--cache-dir", str(tmp_path / "cache"),
                       "--out", str(out), *frozen])
    assert code == 0 and (out / "model.safetensors").is_file()
    rows = list(csv.DictReader((out / "training" / "metrics.csv").open()))
    assert all(0 < float(row["train_localisation"]) <= 1 for row in rows)
    assert [row["stage"] for row in rows] == (["frozen-backbone", "all"] if frozen else ["all"])
    assert "--localisation-weight 1" in json.loads((out / "config.json").read_text())["reproduce"]
    assert list((tmp_path / "cache").glob("*.lesions.npy"))  # the masks are cached beside the photos


def test_recipe_default_is_paper_001_without_the_term(data, tmp_path):  # noqa: F811 - the fixture
    from train.recipes import get_recipe

    recipe = get_recipe("dr-lesions")
    args = recipe.parse_args(["--data", str(data["idrid"]), "--format", "idrid-seg", "--input-size", "64",
                              "--arch", "efficientnet_lite0", "--no-pretrained", "--quiet",
                              "--cache-dir", str(tmp_path), "--out", str(tmp_path / "o")])
    assert args.localisation_weight == 0
    model = tiny_lesion_model(64)
    assert recipe.loop_config(args, model).localisation is None
    samples = recipe.labelled(recipe.load_samples(args), args)
    data = recipe.make_datasets(args, model.config, samples[:2], [], LABELS)
    assert data.train.lesions is None and not list(tmp_path.glob("*.lesions.npy"))
    args.localisation_weight = 1.0
    data = recipe.make_datasets(args, model.config, samples[:4], [], LABELS)
    assert data.train.lesions.shape == (4, 5, 8, 8) and data.train.lesions[:, :4].any()
    again = lesion_masks([recipe.annotations[str(s.image)] for s in samples[:4]], [s.image for s in samples[:4]],
                         model.config, LABELS, cache_dir=tmp_path, progress=False)
    assert torch.equal(again, data.train.lesions)  # read back from the cache
