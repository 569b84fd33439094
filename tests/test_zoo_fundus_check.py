"""zoo.fundus_check: the whole fundus check (stage 1's plausibility, then the learned content stage).

Real fundus photos of every folder of ../shared/data pass, the low-resolution squashed ones included; real
lookalikes (../shared/data/not-fundus: colonoscopy, dermoscopy, eye surface, microscopy, natural photos) and
pictures never fitted on, cut into a round vignette on black (scikit-image's coffee cup, cat, astronaut and
rocket; an orange disc with a clinic's logo), are refused with a reason; generated fixtures still pass."""
from __future__ import annotations

import json
import random

import cv2
import numpy as np
import pytest

from conftest import SHARED_DATA, shared_dataset
from fundus import NotFundusError, check_fundus, load_image, make_fundus
from zoo.fundus_check import (HEAD_FILE, ContentModel, check_fundus_photo, content_model, read_head,
                              require_fundus_photo)

PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png")
NEGATIVES = "not-fundus"
SAMPLE_PER_FOLDER = 15


def _photos(folder):
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in PHOTO_SUFFIXES and "Groundtruth" not in str(p))


def _vignette(rgb, side=384, tint=None):
    image = cv2.resize(np.ascontiguousarray(rgb[..., :3]), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    if tint is not None:
        image = image.mean(axis=2, keepdims=True) * np.array(tint, np.float32)
    yy, xx = np.mgrid[:side, :side]
    image[np.hypot(xx - side / 2, yy - side / 2) > 0.45 * side] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def _logo_disc(side=384):
    """An orange disc on black with "EYE CLINIC" written across it (the issue's logo)."""
    image = _vignette(np.full((side, side, 3), (215, 120, 50), np.uint8))
    cv2.putText(image, "EYE", (110, 170), cv2.FONT_HERSHEY_DUPLEX, 2.6, (255, 245, 225), 6, cv2.LINE_AA)
    cv2.putText(image, "CLINIC", (70, 270), cv2.FONT_HERSHEY_DUPLEX, 2.0, (120, 30, 10), 5, cv2.LINE_AA)
    return image


@pytest.mark.slow  # ~10 s of real photos: kept out of the sub-minute `-m "not slow"` loop
def test_a_sample_of_real_photos_from_every_folder_passes_the_whole_check():
    shared_dataset("srahim-dr600")
    refused, checked = [], 0
    rng = random.Random(1)
    for folder in sorted(p for p in SHARED_DATA.iterdir() if p.is_dir() and p.name != NEGATIVES):
        photos = _photos(folder)
        for path in rng.sample(photos, min(SAMPLE_PER_FOLDER, len(photos))):
            checked += 1
            check = check_fundus_photo(load_image(path))
            assert 0.0 <= check.stats["content"] <= 1.0
            if not check.is_fundus:
                refused.append((str(path), check.reason))
    assert checked >= 8 * SAMPLE_PER_FOLDER and refused == []


@pytest.mark.parametrize("relative", [
    "aptos2019/train_images/0ac436400db4.jpg",
    "eyepacs-1k/train/100_right.jpeg",  # a tight crop, dark corners
    "odir-ngc/cataract/2174_right.jpg",  # white padding, resampled to a square
    "eyepacs-5k/train/17453_right.jpeg",  # a field under dust and scratches: finest-scale share 0.72 (soft band)
])
def test_hard_real_photos_pass_the_whole_check(relative):
    path = shared_dataset(relative.split("/")[0]).parent / relative
    if not path.is_file():
        pytest.skip(f"{relative} not in this copy of the data")
    check = check_fundus_photo(load_image(path))
    assert check.is_fundus, (check.reason, check.stats)


@pytest.mark.slow  # ~10 s of real photos: kept out of the sub-minute `-m "not slow"` loop
def test_low_resolution_photos_refused_by_stage_one_alone_pass_the_whole_check():
    """The squashed 224/256 px photos stage 1 refused ("not dark", "textured like noise"): the content stage
    decides them, and accepts them."""
    found = []
    for name in ("aptos2019", "eyepacs-5k"):
        photos = _photos(shared_dataset(name))
        for path in random.Random(2).sample(photos, 400):
            rgb = load_image(path)
            first = check_fundus(rgb)
            if not first.is_fundus:
                found.append((path, first.reason))
                whole = check_fundus_photo(rgb)
                assert whole.is_fundus, (str(path), first.reason, whole.reason, whole.stats)
            if len(found) >= 6:
                break
    assert found, "no photo of the sample was refused by stage 1: this test checks nothing"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["endoscopy", "dermoscopy", "eye-surface", "microscopy", "natural"])
def test_every_real_lookalike_is_refused(kind):
    """All of not-fundus/ (Kvasir-SEG, CVC-ClinicDB, ISIC 2017, eye-surface sets, BCCD, CBSD68/Kodak/McMaster)."""
    folder = shared_dataset(NEGATIVES) / kind
    accepted = []
    photos = _photos(folder)
    for path in photos:
        check = check_fundus_photo(load_image(path))
        if check.is_fundus:
            accepted.append((path.name, check.stats.get("content")))
        else:
            assert check.reason
    assert photos and accepted == []


LOOKALIKES = {
    **{f"{name} in a vignette": (name, None) for name in ("coffee", "chelsea", "astronaut", "rocket")},
    **{f"{name} in an orange vignette": (name, (1.1, 0.55, 0.25)) for name in ("coffee", "chelsea")},
}


@pytest.mark.parametrize("name", list(LOOKALIKES))
def test_unseen_pictures_in_a_round_vignette_are_refused(name):
    data = pytest.importorskip("skimage.data")
    picture, tint = LOOKALIKES[name]
    check = check_fundus_photo(_vignette(getattr(data, picture)(), tint=tint))
    assert not check.is_fundus and check.reason, check.stats


def test_an_orange_logo_disc_is_refused_by_its_content():
    check = check_fundus_photo(_logo_disc())
    assert not check.is_fundus and check.reason


@pytest.mark.parametrize("options", [{}, {"border": "notched"}, {"border": "none"}, {"exposure": 0.4},
                                     {"radius_frac": 0.3}, {"lesions": ()}], ids=str)
@pytest.mark.parametrize("size", [96, 256])
def test_generated_fundus_photos_pass_the_whole_check(options, size):
    for seed in range(2):
        check = check_fundus_photo(make_fundus(size, seed=seed, **options)[0])
        assert check.is_fundus, (seed, check.reason, check.stats)


def test_stage_one_refusals_keep_their_reason_and_skip_the_model():
    class NoModel:
        def judge(self, photos):
            raise AssertionError("the content stage ran on a picture stage 1 refused for good")

    check = check_fundus_photo(np.full((200, 200, 3), (30, 60, 200), np.uint8), model=NoModel())
    assert not check.is_fundus and "content" not in check.stats and check.reason == check_fundus(
        np.full((200, 200, 3), (30, 60, 200), np.uint8)).reason


def test_the_content_threshold_decides():
    """The same photo, judged by the shipped head and by the head with a threshold above its score."""
    rgb = make_fundus(128, seed=4)[0]
    model = content_model()
    score = float(model.probabilities([rgb])[0])
    assert check_fundus_photo(rgb, model=model).is_fundus and score >= model.threshold

    class Strict:
        threshold = min(1.0, score + 1e-3)

        def judge(self, photos):
            return model.judge(photos)

    strict = check_fundus_photo(rgb, model=Strict())
    assert not strict.is_fundus and "does not show a retina" in strict.reason
    with pytest.raises(NotFundusError, match="does not look like a retinal fundus photograph"):
        require_fundus_photo(_logo_disc(), source="logo.png")


def test_the_head_file_is_validated(tmp_path):
    head = json.loads(HEAD_FILE.read_text())
    assert len(head["coef"]) == 1280 and 0 < head["threshold"] <= 0.5
    broken = tmp_path / "head.json"
    broken.write_text(json.dumps({k: v for k, v in head.items() if k != "threshold"}))
    with pytest.raises(ValueError, match="lacks threshold"):
        read_head(broken)
    broken.write_text(json.dumps({**head, "intercept": float("nan")}))
    with pytest.raises(ValueError, match="non-finite"):
        read_head(broken)
    broken.write_text(json.dumps({**head, "coef": head["coef"][:10]}))
    with pytest.raises(ValueError, match="10 coefficients"):
        ContentModel(broken)


@pytest.mark.parametrize(("stats", "soft"), [
    ({"surround": 0.4, "texture": 0.05, "fine_share": 0.5}, True),  # a lit haze around the field: stage 2 decides
    ({"surround": 0.4, "texture": 0.3, "fine_share": 0.5}, False),  # ... but beyond the texture's hard limit
    ({"surround": 0.9, "texture": 0.05, "fine_share": 0.5}, False),  # a lit table around a cup: refused by stage 1
    ({"surround": 0.4, "texture": 0.05, "fine_share": 0.5, "blue_red": 2.0}, False),  # a blue field
    ({"surround": 0.1, "texture": 0.15, "fine_share": 0.5}, True),  # JPEG texture of a 256 px photo
    ({"surround": 0.1, "texture": 0.15, "fine_share": 0.8}, False),  # pixel noise
    ({"surround": 0.1, "texture": 0.03, "fine_share": 0.72}, True),  # dust and scratches on a real field
    ({"surround": 0.0, "texture": 0.04, "fine_share": 0.79}, False),  # reddish noise in a disc
])
def test_only_stage_ones_soft_refusals_within_the_hard_limits_reach_the_content_stage(monkeypatch, stats, soft):
    import zoo.fundus_check as whole
    from fundus.check import FundusCheck

    field = {"chroma": 0.5, "hue_variety": 0.05, "blue_red": 0.3, **stats}
    reason = "the area around the round field is not dark" if stats["surround"] > 0.2 else \
        "the field is textured like noise or a natural scene"
    monkeypatch.setattr(whole, "check_fundus", lambda rgb: FundusCheck(False, reason, True, False, "photo", field))
    asked = []

    class Model:
        threshold = 0.5

        def judge(self, photos):
            asked.append(1)
            return np.array([0.9]), None

    check = check_fundus_photo(np.zeros((64, 64, 3), np.uint8), model=Model())
    assert bool(asked) is soft and check.is_fundus is soft
    assert check.reason == ("" if soft else reason)
