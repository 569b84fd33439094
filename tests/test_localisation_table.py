"""Issue 17, part 3: the localisation table users can see. PR-AUC and the trivial maps on constructed maps, the
image-only spot filter, ROAD on a tiny model, ``python -m explain evaluate --table --write-config``, the card's
table and the panels' captions in the app (for a measured model only)."""
from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from fundus import make_fundus
from support import make_tiny_models

LESIONS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates", "SE": "4. Soft Exudates",
           "OD": "5. Optic Disc"}
ENTRY = {"gradcam": {"title": "Grad-CAM", "data": "idrid-seg-dev", "format": "idrid-seg", "split": "test",
                     "photos": 16, "road": 0.125,
                     "lesions": {"HE": {"epg": 0.045, "epg_ratio": 2.4, "blind_guess": "baseline-uniform",
                                        "pointing_game": 0.5, "pr_auc": 0.031},
                                 "EX": {"epg": 0.05, "epg_ratio": 1.3, "blind_guess": "baseline-gaussian",
                                        "pointing_game": 0.25, "pr_auc": 0.06}}}}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def idrid(tmp_path_factory):
    """An IDRiD segmentation layout of two generated photos and their lesion masks."""
    root = tmp_path_factory.mktemp("data") / "idrid-seg-tiny"
    base = root / "A. Segmentation"
    images = base / "1. Original Images" / "a. Training Set"
    truths = base / "2. All Segmentation Groundtruths" / "a. Training Set"
    images.mkdir(parents=True)
    for folder in LESIONS.values():
        (truths / folder).mkdir(parents=True)
    for index in range(2):
        stem = f"IDRiD_{index + 1:02d}"
        rgb, info = make_fundus(192, seed=index, lesions={"HE": 3, "EX": 3})
        Image.fromarray(rgb).save(images / f"{stem}.jpg")
        for kind, mask in info["masks"].items():
            Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(truths / LESIONS[kind] / f"{stem}_{kind}.tif")
    return root


# -- the metrics on constructed maps ------------------------------------------------------------------------------

def test_a_map_equal_to_the_mask_scores_one_and_the_uniform_map_the_masks_share():
    from explain.metrics import energy_pointing_game, pixel_average_precision, pointing_game, uniform_map

    _, info = make_fundus(256, seed=3, lesions={"HE": 4, "EX": 4})
    fov = info["fov_mask"]
    for kind in ("HE", "EX"):
        truth = info["masks"][kind] & fov
        share = truth.sum() / fov.sum()
        perfect = truth.astype(np.float32)
        assert energy_pointing_game(perfect, truth, fov_mask=fov) == pytest.approx(1.0)
        assert pixel_average_precision(perfect, truth, fov_mask=fov) == pytest.approx(1.0)
        assert pointing_game(perfect, truth, fov_mask=fov) == 1.0
        blind = uniform_map(truth.shape, fov_mask=fov)
        assert energy_pointing_game(blind, truth, fov_mask=fov) == pytest.approx(share, rel=1e-4)
        assert pixel_average_precision(blind, truth, fov_mask=fov) == pytest.approx(share, rel=1e-4)
        # Subsampled (the other pixels drawn and weighted back): the same answers, and close on a noisy map.
        assert pixel_average_precision(perfect, truth, fov_mask=fov, max_pixels=3000) == pytest.approx(1.0)
        assert pixel_average_precision(blind, truth, fov_mask=fov, max_pixels=3000) == pytest.approx(share, rel=1e-4)
        noisy = perfect * 0.3 + np.random.default_rng(0).random(truth.shape).astype(np.float32)
        full = pixel_average_precision(noisy, truth, fov_mask=fov)
        assert share * 2 < full < 1
        assert pixel_average_precision(noisy, truth, fov_mask=fov, max_pixels=20000) == pytest.approx(full, abs=0.05)
    assert pixel_average_precision(np.ones((8, 8)), np.zeros((8, 8), bool)) is None  # no lesion: not scored


def test_the_spot_filter_finds_a_dark_and_a_bright_spot():
    from explain.metrics import energy_pointing_game
    from explain.spot_filter import spot_map

    size = 256
    yy, xx = np.mgrid[:size, :size]
    fov = (xx - 128) ** 2 + (yy - 128) ** 2 < 110 ** 2
    photo = np.zeros((size, size, 3), np.uint8)
    photo[fov] = (190, 95, 40)  # an orange field with a gentle left-to-right shading, on black
    photo[..., 1] = np.where(fov, 80 + xx * 0.1, 0).astype(np.uint8)
    dark = (xx - 90) ** 2 + (yy - 140) ** 2 < 4 ** 2
    bright = (xx - 170) ** 2 + (yy - 100) ** 2 < 4 ** 2
    photo[dark, 1] = 30
    photo[bright, 1] = 200
    found = spot_map(photo, fov)
    assert found.shape == (size, size) and found.min() >= 0 and found.max() <= 1
    assert not found[~fov].any()  # nothing outside the field of view, nor on its rim
    peak = np.unravel_index(np.argmax(found), found.shape)
    assert dark[peak] or bright[peak]
    assert found[dark].mean() > 0.3 and found[bright].mean() > 0.3
    assert energy_pointing_game(found, dark | bright, fov_mask=fov) > 0.9  # the field itself gives nothing


# -- ROAD ---------------------------------------------------------------------------------------------------------

@pytest.mark.slow  # over ~1 s (a child process, real photos or ROAD): out of the quick loop
def test_road_runs_on_a_tiny_model_and_returns_finite_numbers(tiny):
    import zoo
    from explain.explainer import Explainer
    from explain.faithfulness import road_scores
    from explain.metrics import centred_gaussian
    from explain.targets import Predicted
    from fundus import preprocess

    model = zoo.load(str(tiny["grade"]), device="cpu").eval()
    rgb, _ = make_fundus(160, seed=4, lesions={"HE": 3})
    pre = preprocess(rgb, model.config)
    explanation = Explainer(model).explain(pre.tensor, Predicted(), fov_mask=pre.fov_mask, methods=["gradcam"])
    maps = {"gradcam": explanation.maps()["gradcam"], "gaussian": centred_gaussian(pre.fov_mask.shape,
                                                                                   fov_mask=pre.fov_mask)}
    scores = road_scores(model, pre.tensor, maps, explanation.targets[0], percentiles=(30, 70))
    assert set(scores) == {"gradcam", "gaussian"} and all(np.isfinite(v) for v in scores.values())
    assert road_scores(model, pre.tensor, maps, explanation.targets[0], percentiles=(30, 70)) == scores  # seeded
    with pytest.raises(ValueError):
        road_scores(model, pre.tensor, {"small": np.ones((8, 8))}, [0])


# -- the command: table and config --------------------------------------------------------------------------------

@pytest.mark.slow
def test_evaluate_writes_the_table_and_the_config_field(tiny, idrid, tmp_path, capsys):
    from explain.cli import main
    from explain.localisation_table import COLUMNS
    from zoo.config import ModelConfig

    grading, lesions = (shutil.copytree(tiny[key], tmp_path / tiny[key].name) for key in ("grade", "multilabel"))
    table = tmp_path / "table"
    code = main(["evaluate", str(grading), str(lesions), "--data", str(idrid), "--format", "idrid-seg",
                 "--lesions", "HE,EX", "--road-percentiles", "30,70", "--table", str(table),
                 "--write-config", str(grading)])
    printed = capsys.readouterr().out
    assert code == 0
    rows = json.loads((table / "localisation.json").read_text())
    maps = {"cam", "gradcam", "guided_gradcam", "gmsm", "spot-filter", "baseline-uniform", "baseline-gaussian"}
    for model in ("tiny-grading", "tiny-lesions"):
        mine = [row for row in rows if row["model"] == model]
        assert {(row["method"], row["lesion"]) for row in mine} == {(m, k) for m in maps for k in ("HE", "EX")}
        for row in mine:
            assert row["photos"] == 2 and row["split"] == "all" and row["data"] == idrid.name
            assert 0 <= row["energy_pointing_game"] <= 1 and 0 <= row["pr_auc"] <= 1 and row["epg_ratio"] > 0
            assert (row["road"] is None) == (row["method"] == "baseline-uniform")
            assert row["road"] is None or np.isfinite(row["road"])
        for kind in ("HE", "EX"):  # the ratio's denominator is the better of the two blind maps
            blind = {r["method"]: r for r in mine if r["lesion"] == kind and r["method"].startswith("baseline")}
            best = max(blind.values(), key=lambda r: r["energy_pointing_game"])
            assert best["epg_ratio"] == pytest.approx(1.0) and best["blind_guess"] == best["method"]
    with open(table / "localisation.csv", newline="") as handle:
        assert len(list(csv.DictReader(handle))) == len(rows) and handle.seek(0) == 0
        assert tuple(next(csv.reader(handle))) == COLUMNS
    markdown = (table / "localisation.md").read_text()
    assert "× best trivial map" in markdown and "| tiny-grading | spot-filter | HE | 2 |" in markdown
    assert "× best trivial map" in printed and "ROAD (higher: more faithful)" in printed

    written = ModelConfig.load(grading / "config.json").localisation
    assert set(written) == maps - {"baseline-uniform", "baseline-gaussian"}
    assert list(written)[-1] == "spot-filter"
    for entry in written.values():
        assert entry["data"] == idrid.name and entry["split"] == "all" and entry["photos"] == 2
        assert np.isfinite(entry["road"]) and set(entry["lesions"]) == {"HE", "EX"}
        assert all(row["epg_ratio"] > 0 and 0 <= row["pr_auc"] <= 1 for row in entry["lesions"].values())
    assert written["gradcam"]["title"] == "Grad-CAM"
    assert "## Localisation" in (grading / "README.md").read_text()  # the card rewritten with it
    assert ModelConfig.load(lesions / "config.json").localisation == {}  # not asked for: untouched
    assert main(["evaluate", str(grading), "--data", str(idrid), "--format", "idrid-seg",
                 "--write-config", str(lesions)]) == 2  # a folder that is not among the models evaluated
    assert main(["evaluate", str(grading), "--data", str(idrid), "--format", "idrid-seg",
                 "--road-percentiles", "0,50"]) == 2


def test_one_model_prints_the_json_it_printed_before(tiny, idrid, capsys):
    from explain.cli import main

    code = main(["evaluate", str(tiny["grade"]), "--data", str(idrid), "--format", "idrid-seg", "--methods",
                 "gradcam", "--road-percentiles", "none", "--limit", "1", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"gradcam", "spot-filter", "baseline-uniform", "baseline-gaussian"}
    assert 0 <= result["spot-filter"]["HE"]["pr_auc"] <= 1


# -- the card and the app -----------------------------------------------------------------------------------------

def test_the_card_renders_the_localisation_table():
    from appcore.presentation import card_markdown
    from zoo.card import card_text
    from zoo.config import ModelConfig

    config = ModelConfig(name="m", paper="", arch="efficientnet_lite0", task="grade-regression",
                         labels=["No DR", "Mild", "Moderate", "Severe", "PDR"], localisation=ENTRY)
    text = card_text(config)
    assert "## Localisation" in text and "IDRiD (idrid-seg-dev, test photos, 16 photos)" in text
    assert "| Grad-CAM | haemorrhages | 0.045 | 2.4× | 0.50 | 0.031 | 0.125 |" in text
    assert "| Grad-CAM | hard exudates | 0.050 | 1.3× |" in text
    assert "| Grad-CAM | haemorrhages | 0.045 | 2.4×" in card_markdown(config)
    config.localisation = {}
    assert "Localisation" not in card_text(config) and "Localisation" not in card_markdown(config)
    assert ModelConfig.from_dict(config.to_dict()).localisation == {}


def test_the_data_set_is_named_by_its_format_s_facts_not_its_folder():
    from zoo.localisation import card_lines, panel_caption

    renamed = {"gradcam": {**ENTRY["gradcam"], "data": "my-copy"}}
    assert "Measured on IDRiD (my-copy, test photos" in "\n".join(card_lines(renamed))
    boxes = {"gradcam": {**ENTRY["gradcam"], "data": "diaretdb1-boxes", "format": "diaretdb1-boxes"}}
    assert panel_caption(boxes, "gradcam").startswith("Grad-CAM, on DIARETDB1 (test photos)")
    plain = {"gradcam": {**ENTRY["gradcam"], "data": "idrid-like-boxes", "format": "yolo"}}  # any data set's layout
    assert "Measured on idrid-like-boxes (idrid-like-boxes," in "\n".join(card_lines(plain))


def test_the_app_captions_the_panels_of_a_measured_model_only(tiny, tmp_path):
    import zoo
    from appcore.page import Page
    from explain.pipeline import analyse
    from explain.targets import Predicted
    from explain.views import LOCALISATION_NOTE, ViewParams, render
    from zoo.config import ModelConfig

    measured = shutil.copytree(tiny["grade"], tmp_path / "measured")
    config = ModelConfig.load(measured / "config.json")
    config.localisation = ENTRY
    config.save(measured / "config.json")
    rgb, _ = make_fundus(160, seed=5, lesions={"HE": 3})
    caption = ("Grad-CAM, on IDRiD (test photos): this map put 2.4× more energy on haemorrhages than a blind guess, "
               "1.3× on hard exudates.")
    for folder, shown in ((measured, True), (tiny["grade"], False)):
        torch.manual_seed(0)
        analysis = analyse(rgb, zoo.load(str(folder), device="cpu").eval(), Predicted())
        params = ViewParams.from_config(analysis.config)
        view = render(analysis, params)
        under = Page.view_values(view, params)["colorbar"]
        assert (caption in under) == shown, folder
        assert ("blind guess" in under) == shown  # the other panels were not measured: no caption
        assert [key for key in view.notes if key.endswith(LOCALISATION_NOTE)] == (["gradcam" + LOCALISATION_NOTE]
                                                                                 if shown else [])
