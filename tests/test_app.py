"""The Gradio app end to end through gradio_client: upload → prediction + four maps, sliders without a
network pass, errors that stay readable on the page, what a public server may load, per-session menus,
downloads, 8 concurrent clients, server address.

Tiny EfficientNet-Lite0 models (random weights, 128 px input) saved in a temporary folder stand in for
the shipped defaults; the app is launched in-process on a free port. Every endpoint's last output is the
page's status line.
"""
from __future__ import annotations

import json
import re
import shlex
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fundus.datasets.labels import spelled_out
from fundus.tasks import FINDING_FLOOR

from support import (  # noqa: F401 - make_tiny_models, start_app, SIZE: imported from here by other tests
    DEFAULTS, SIZE, direct_probabilities, fake_shipped, free_port, make_biased_lesion_model, make_broken_model,
    make_grader_at, make_tiny_models, menu_of, page_config, panel_path, put_in_hub_cache, start_app, synthetic_photo,
)

# Output positions of /analyse and /explain_target (the session state is hidden from API clients).
MAIN, PHOTO, MODEL_INPUT, PREPROCESSING, TIMINGS, CHART, PREDICTION = range(7)
PANELS = slice(7, 11)
CROP, REGIONS, LEGEND, COMPARE, COLORBAR = 11, 12, 13, 14, 15
STATUS = -1
# /select_model and /load_hub_model: the menu, the target menu, the card, θ, τ, t, then /analyse's outputs.
MENU, TARGETS, CARD, THETA, TAU, GATE = range(6)
AFTER_MODEL = 6
HUB_REPO = "someone/tiny-hub-grading"
# Every test talks to a real Gradio server (started once for the module, ~4 s of CPU); each costs 0.5-6 s of CPU.
pytestmark = pytest.mark.slow
# BP/MA's threshold low, like the shipped lesion model's, but above fundus.tasks.FINDING_FLOOR (a lower one is
# floored: tests/test_app_defects.py), so that the model's own thresholds decide here.
LEAN_THRESHOLDS = [0.06, 0.5, 0.5, 0.5, 0.5]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(demo, url, model folders) of an app serving two tiny models and a broken one, shut down after the
    module; HUB_REPO is a cached hub model (the hub itself is offline)."""
    tmp = tmp_path_factory.mktemp("app")
    mp = pytest.MonkeyPatch()
    mp.setenv("FUNDUS_ZOO_ASSETS", str(tmp / "no-assets"))  # the real defaults stay out of these tests
    mp.setenv("FUNDUS_APP_CACHE", str(tmp / "cache"))
    models = make_tiny_models(tmp / "models")
    models["broken"] = make_broken_model(tmp / "models" / "tiny-broken")
    # Outputs that do not depend on the photo: "healthy" over its threshold and BP/MA (~12 %) just over its (low)
    # one, healthy further above its threshold; then the same with HM far over its threshold.
    lean = {"BP/MA": -2, "HM": -6, "HEX": -6, "CWS": -6, "healthy": 6}
    models["healthy"] = make_biased_lesion_model(tmp / "models", "tiny-healthy", lean, LEAN_THRESHOLDS)
    models["disease"] = make_biased_lesion_model(tmp / "models", "tiny-disease", {**lean, "HM": 8}, LEAN_THRESHOLDS)
    models["borderline"] = make_grader_at(tmp / "models", "tiny-borderline", 1.55)
    put_in_hub_cache(models["grade"], HUB_REPO)
    demo, url = start_app(tmp, [models[k] for k in ("multilabel", "grade", "broken", "healthy", "disease",
                                                    "borderline")], {})
    yield demo, url, models
    demo.close()
    mp.undo()


def new_client(url, folder):
    from gradio_client import Client

    return Client(url, verbose=False, download_files=str(folder), analytics_enabled=False)


@pytest.fixture()
def client(served, tmp_path):
    return new_client(served[1], tmp_path)


def model_key(demo, name: str) -> str:
    """The first menu value that contains ``name`` (the menu's labels also name papers)."""
    return next(value for _, value in demo.fundus_app.menu() if name in value)


def analyse(client, path, key, target="predicted", **controls):
    from gradio_client import handle_file

    c = {**DEFAULTS, **controls}
    return client.predict(handle_file(str(path)), key, target, c["theta"], c["tau"], c["t"], c["alpha"], c["colormap"],
                          c["outlines"], c["compare"], api_name="/analyse")


def view(client, key, target="predicted", **controls):
    c = {**DEFAULTS, **controls}
    return client.predict(key, target, c["theta"], c["tau"], c["t"], c["alpha"], c["colormap"], c["outlines"],
                          c["compare"], api_name="/view")


def explain_target(client, key, target):
    return client.predict(key, target, *DEFAULTS.values(), api_name="/explain_target")


def panels_of(out, start=PANELS.start) -> list[str | None]:
    return [panel_path(p) for p in out[start:start + 4]]


# -- what the page shows ---------------------------------------------------------------------------------

def test_upload_gives_prediction_and_four_panels(served, client, tmp_path):
    demo, _, models = served
    key = model_key(demo, "lesions")
    photo = synthetic_photo(tmp_path, seed=3)
    out = analyse(client, photo, key, "all predicted")
    expected = direct_probabilities(models["multilabel"], photo)
    got = out[PREDICTION]["probabilities"]
    assert list(got) == ["BP/MA", "HM", "HEX", "CWS", "healthy"]
    np.testing.assert_allclose(list(got.values()), expected, atol=1e-4)
    over = [lab for lab, p in got.items() if p >= 0.5]
    decided = out[PREDICTION]["predicted"]
    # The model's decision: every label over its threshold, unless "healthy" and a lesion label both are.
    assert decided == over or ("healthy" in over and len(over) > 1 and set(decided) < set(over))
    assert not ("healthy" in decided and len(decided) > 1)
    panels = [np.asarray(Image.open(p)) for p in panels_of(out)]
    assert all(p.shape == (SIZE, SIZE, 3) for p in panels)
    # Guided Grad-CAM and GMSM differ from Grad-CAM (CAM equals Grad-CAM for a GAP + linear head).
    assert not np.array_equal(panels[2], panels[1]) and not np.array_equal(panels[3], panels[1])
    # The panels are the pictures' file paths, as the API docs say; the timings are one line of the details.
    assert all(isinstance(p, str) for p in out[PANELS]) and isinstance(out[CROP], str)
    assert out[TIMINGS].count(" ms") == 3 and "one network pass for all four maps" in out[TIMINGS]
    assert "ms" not in out[PREPROCESSING] and "field of view: found" in out[PREPROCESSING]
    assert json.loads(out[CHART]["plot"])["data"][0]["type"] == "bar"
    # The main result: the model, then each decided label (lesion codes spelled out) with its probability and
    # threshold.
    assert key in out[MAIN] and all(f"{spelled_out(label)} {round(100 * got[label])} %" in out[MAIN]
                                    for label in out[PREDICTION]["predicted"] if got[label] >= 0.1)
    assert "linear-gradient" in out[COLORBAR]  # the heat maps' colour bar
    assert out[REGIONS]["crop_box"] and out[REGIONS]["theta"] == 128
    before, after = (np.asarray(Image.open(p)) for p in out[COMPARE])
    assert before.shape == after.shape == (SIZE, SIZE, 3) and not np.array_equal(before, after)
    assert out[STATUS] == ""  # nothing to report


def test_sliders_redraw_without_a_network_pass(served, client, tmp_path):
    demo, _, _ = served
    key = model_key(demo, "lesions")
    analyse(client, synthetic_photo(tmp_path, seed=4), key, "all predicted")
    model, _ = demo.fundus_app.analyser.models.get(key)
    forwards = []
    handle = model.register_forward_hook(lambda *args: forwards.append(1))  # counts network passes
    passes = demo.fundus_app.analyser.passes
    try:
        # t = 0: GMSM's gate is a plain ReLU (paper 004 eq. 1), so random weights still leave a map.
        loose = view(client, key, "all predicted", theta=20, tau=0.3, t=0.0)
        tight = view(client, key, "all predicted", theta=230, tau=0.9, t=0.0)
    finally:
        handle.remove()
    assert forwards == [] and demo.fundus_app.analyser.passes == passes
    # A lower θ keeps more of the Guided Grad-CAM: the crop box grows (paper 000 eq. 5).
    box_loose, box_tight = loose[5]["crop_box"], tight[5]["crop_box"]
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(box_loose) > area(box_tight)
    # A lower τ marks more of the GMSM map as lesion (paper 004 eq. 4).
    assert loose[5]["lesion_area_px"] > tight[5]["lesion_area_px"]
    crops = [np.asarray(Image.open(r[4])) for r in (loose, tight)]
    assert all(max(c.shape[:2]) == SIZE for c in crops) and not np.array_equal(*crops)
    # The enlarged crop keeps the crop box's aspect ratio (paper 000 Fig. 2f, not stretched to a square).
    for crop_picture, box in zip(crops, (box_loose, box_tight)):
        assert crop_picture.shape[1] / crop_picture.shape[0] == pytest.approx((box[2] - box[0]) / (box[3] - box[1]),
                                                                               rel=0.1, abs=2 / SIZE)
    guided = [np.asarray(Image.open(panel_path(r[2]))) for r in (loose, tight)]
    assert not np.array_equal(*guided)
    assert loose[STATUS] == {"__type__": "update"}  # a redraw leaves the status line as it was


def test_grading_model_and_target_choice(served, client, tmp_path):
    demo, _, models = served
    photo = synthetic_photo(tmp_path, seed=5)
    out = analyse(client, photo, model_key(demo, "grading"))
    value = float(direct_probabilities(models["grade"], photo)[0])
    pred = out[PREDICTION]
    assert pred["task"] == "grade-regression" and pred["value"] == pytest.approx(value, abs=1e-4)
    assert pred["grade"] == sum(value > c for c in (0.5, 1.5, 2.5, 3.5))
    # A single class of the multi-label model: a different Guided Grad-CAM than the integrated one.
    key = model_key(demo, "lesions")
    integrated = analyse(client, photo, key, "all predicted")
    single = analyse(client, photo, key, "class:4")
    assert not np.array_equal(np.asarray(Image.open(panels_of(integrated)[2])), np.asarray(Image.open(panels_of(single)[2])))
    # Outlines in paper 001's colours, one per explained label (only labels whose map has a region), named as the
    # page names them ("haemorrhages (HM)").
    drawn = re.findall(r"</span>([^<]+)</span>", integrated[LEGEND])
    assert drawn and set(drawn) <= {spelled_out(label) for label in integrated[PREDICTION]["predicted"]}


def test_healthy_and_lesion_labels_never_stand_together(served, client, tmp_path):
    """The shipped lesion model's contradiction ("BP/MA, healthy": a lesion label at a low probability over its low
    threshold): the model's decision keeps one side, the page says which label was overruled, and a no-disease
    answer gets no region at all."""
    import html

    demo = served[0]
    photo = synthetic_photo(tmp_path, seed=31)
    healthy = analyse(client, photo, model_key(demo, "tiny-healthy"), "all predicted")
    pred = healthy[PREDICTION]
    assert pred["probabilities"]["BP/MA"] >= LEAN_THRESHOLDS[0] and pred["probabilities"]["healthy"] >= 0.5
    assert pred["predicted"] == ["healthy"] and pred["overruled"] == ["BP/MA"]
    main = html.unescape(healthy[MAIN])
    assert "healthy 100 %" in main and "overruled: microaneurysms (BP/MA)" in main and "(threshold 6.0 %)" in main
    # The chart marks the model's own thresholds.
    chart = json.loads(healthy[CHART]["plot"])["data"]
    assert chart[1]["y"] == pytest.approx(LEAN_THRESHOLDS)
    # No region for "healthy": no θ crop box, no τ lesion mask, no outline; the summary says why.
    regions = healthy[REGIONS]
    assert "crop_box" not in regions and "lesion_patches" not in regions and regions["labels"] == []
    assert "no-disease answer" in regions["note"]
    assert "No regions" in healthy[LEGEND] and "Outlines" not in healthy[LEGEND]
    # The same photo explained for a lesion label on request: its regions are drawn.
    hm = explain_target(client, model_key(demo, "tiny-healthy"), "class:1")
    assert hm[REGIONS]["labels"] == ["HM"] and "crop_box" in hm[REGIONS] and "lesion_patches" in hm[REGIONS]
    assert "note" not in hm[REGIONS]
    no_regions = explain_target(client, model_key(demo, "tiny-healthy"), "class:4")  # "healthy" itself
    assert "crop_box" not in no_regions[REGIONS] and no_regions[REGIONS]["labels"] == []
    # HM far above its threshold: the lesion side stays, "healthy" is overruled and not explained.
    disease = analyse(client, photo, model_key(demo, "tiny-disease"), "all predicted")
    assert disease[PREDICTION]["predicted"] == ["BP/MA", "HM"] and disease[PREDICTION]["overruled"] == ["healthy"]
    assert "overruled: healthy" in html.unescape(disease[MAIN])
    assert sorted(disease[REGIONS]["labels"]) == ["BP/MA", "HM"] and "crop_box" in disease[REGIONS]
    drawn = re.findall(r"</span>([^<]+)</span>", disease[LEGEND])
    assert "healthy" not in drawn
    # "all predicted" explained the decided lesion labels (most probable first), not the overruled "healthy",
    # and the downloads' command asks for the same decision (`--target decided`: the app's "all predicted").
    files, _ = client.predict(model_key(demo, "tiny-disease"), "all predicted", *DEFAULTS.values(),
                              api_name="/downloads")
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert record["explained_classes"] == [1, 0] and "--target decided" in record["reproduce"]
    from explain.cli import main as explain_main

    words = shlex.split(record["reproduce"])
    photo = next(p for p in tmp_path.iterdir() if p.name == record["image"]["name"])
    assert explain_main([str(served[2]["disease"]), str(photo), *words[5:-1], str(tmp_path / "cli")]) == 0
    assert json.loads((tmp_path / "cli" / f"{photo.stem}_prediction.json").read_text())["explained_targets"] == \
        ["HM", "BP/MA"]


def test_layercam_is_an_optional_fifth_panel(served, client, tmp_path):
    """The registry's optional method is a fifth panel, empty until asked for; asked for, it is drawn from the same
    pass, and the downloads and their command include it."""
    from gradio_client import handle_file

    demo = served[0]
    key = model_key(demo, "lesions")
    photo = synthetic_photo(tmp_path, seed=42)
    LAYERCAM = COLORBAR + 1  # after the view's other outputs: the four panels' positions stay
    out = analyse(client, photo, key, "all predicted")
    assert out[LAYERCAM] is None and all(panels_of(out))
    passes = demo.fundus_app.analyser.passes
    shown = client.predict(handle_file(str(photo)), key, "all predicted", *DEFAULTS.values(), ["layercam"],
                           api_name="/analyse")
    picture = np.asarray(Image.open(panel_path(shown[LAYERCAM])))
    assert picture.shape == (SIZE, SIZE, 3) and demo.fundus_app.analyser.passes == passes  # no new pass
    redrawn = client.predict(key, "all predicted", *DEFAULTS.values(), ["layercam"], api_name="/view")
    assert panel_path(redrawn[LAYERCAM - PANELS.start]) is not None
    files, _ = client.predict(key, "all predicted", *DEFAULTS.values(), ["layercam"], api_name="/downloads")
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    assert record["maps_npy"]["order"][-1] == "layercam" and "gmsm,layercam" in record["reproduce"]
    assert np.load(next(Path(f) for f in files if f.endswith(".npy"))).shape == (5, SIZE, SIZE)


def test_grade_answers_say_how_close_the_cut_off_is(served, client, tmp_path):
    import html

    demo = served[0]
    out = analyse(client, synthetic_photo(tmp_path, seed=32), model_key(demo, "tiny-borderline"))
    assert out[PREDICTION]["grade"] == 2 and out[PREDICTION]["value"] == pytest.approx(1.55, abs=0.04)
    main = html.unescape(out[MAIN])
    assert "Moderate (grade 2)" in main and "close to the 1.5 cut-off between Mild and Moderate: borderline" in main
    assert out[REGIONS]["labels"] == ["Moderate"] and "crop_box" in out[REGIONS]


def test_a_small_photo_gets_a_low_resolution_note(served, client, tmp_path):
    import html

    from fundus import make_fundus

    key = model_key(served[0], "lesions")
    small = tmp_path / "small.png"
    Image.fromarray(make_fundus(80, seed=33)[0]).save(small)
    note = html.unescape(analyse(client, small, key, "all predicted")[MAIN])
    assert "low resolution: the eye is" in note and f"the model's input {SIZE} px" in note
    assert "low resolution" not in analyse(client, synthetic_photo(tmp_path, seed=33), key, "all predicted")[MAIN]


def test_example_photos_show_their_known_diagnosis(served, client, tmp_path):
    import html

    demo = served[0]
    app = demo.fundus_app
    assert len(app.examples) == 8 and app.examples[app.start].path.name == "idrid-0365-red-lesions-exudates.jpg"
    healthy = next(e for e in app.examples if e.caption == "Healthy")
    out = analyse(client, healthy.path, model_key(demo, "lesions"), "all predicted")
    main = html.unescape(out[MAIN])
    assert f"Example photo — known: {healthy.known}." in main and "HRF (Budai et al. 2013), CC BY 4.0" in main
    assert "trained on" not in main  # the tiny model's training data do not include HRF
    assert "known:" not in analyse(client, synthetic_photo(tmp_path, seed=34), model_key(demo, "lesions"))[MAIN]
    # The page itself: real examples with their captions, the page's texts.
    config = page_config(served[1])
    assert all(e.caption in config for e in app.examples) and "Examples with known diagnoses" in config
    for words in ("higher keeps only the strongest details, a tighter crop (paper 000, eq. 5)",
                  "higher marks fewer, stronger spots as lesion (paper 004, eq. 4)",
                  "Where the class evidence sits in the last layer", "CC BY 4.0"):
        assert words in config


def test_the_model_card_states_the_decision_rule(served, client):
    out = client.predict(model_key(served[0], "tiny-healthy"), api_name="/select_model")
    card = out[CARD]
    assert "**Decision rule:**" in card
    assert "'healthy' and the other labels (BP/MA, HM, HEX, CWS) exclude each other" in card
    assert "**Thresholds:** BP/MA 6.0 %, HM 50 %" in card and "|---|" not in card
    assert f"none below {FINDING_FLOOR:.0%}" in card  # the floor under every threshold


def test_converted_modes_and_exif_rotation(client, served, tmp_path):
    from fundus import make_fundus

    key = model_key(served[0], "lesions")
    rgb, _ = make_fundus(SIZE, seed=11, border="notched")  # wider than tall
    gray = tmp_path / "gray.png"
    Image.fromarray(rgb).convert("L").save(gray)
    out = analyse(client, gray, key)
    assert "grayscale → RGB" in out[PREPROCESSING] and out[PREDICTION]["probabilities"]
    deep = tmp_path / "deep.png"
    Image.fromarray((rgb[..., 1].astype(np.uint16) * 257)).save(deep)  # 16-bit grayscale
    out = analyse(client, deep, key)
    assert "16-bit" in out[PREPROCESSING]
    rgba = tmp_path / "rgba.png"
    Image.fromarray(rgb).convert("RGBA").save(rgba)
    assert "RGBA" in analyse(client, rgba, key)[PREPROCESSING]
    rotated = tmp_path / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: displayed after a 90° rotation
    Image.fromarray(rgb).save(rotated, exif=exif, quality=92)
    out = analyse(client, rotated, key)
    shown = np.asarray(Image.open(out[PHOTO]))
    assert "EXIF orientation 6" in out[PREPROCESSING]
    assert shown.shape[0] > shown.shape[1]  # upright: now taller than wide, as the tag says


def test_a_dark_photo_gets_a_warning_on_the_status_line(client, served, tmp_path):
    path = synthetic_photo(tmp_path, seed=1, exposure=0.3)
    out = analyse(client, path, model_key(served[0], "lesions"))
    assert out[STATUS].startswith("⚠️ **The photo is very dark") and all(panels_of(out))


def test_a_photo_that_is_not_a_fundus_is_refused_on_the_status_line(client, served, tmp_path):
    key = model_key(served[0], "lesions")
    assert all(panels_of(analyse(client, synthetic_photo(tmp_path, seed=2), key)))
    path = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 110, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    out = analyse(client, path, key)
    assert out[STATUS].startswith("❌ This photo does not look like a retinal fundus photograph")
    assert panels_of(out) == [None] * 4 and out[PREDICTION] is None


def test_downloads_reproduce_the_view(client, served, tmp_path):
    demo, _, models = served
    key = model_key(demo, "lesions")
    photo = synthetic_photo(tmp_path, seed=6)
    analyse(client, photo, key, "all predicted")
    files, status = client.predict(key, "all predicted", 77, 0.55, 1.5, 0.4, "turbo", False, "gmsm",
                                   api_name="/downloads")
    assert status is None or "❌" not in str(status)
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    record = json.loads(by_suffix[".json"].read_text())
    assert record["model"]["id"] == key and record["target"] == "all predicted"
    assert record["parameters"] == dict(theta=77, tau=0.55, t=1.5, alpha=0.4, colormap="turbo", outlines=False,
                                        compare="gmsm", extras=[])
    assert record["prediction"]["task"] == "multilabel" and record["not_for_clinical_use"] is True
    maps = np.load(by_suffix[".npy"])
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    assert np.nanmin(maps) >= 0 and np.nanmax(maps) <= 1
    # The recorded command reproduces the downloaded maps with `python -m explain`, given the model: the
    # record names the operator's folder by its menu name, not by its path on the server.
    from explain.cli import main as explain_main

    words = shlex.split(record["reproduce"])
    assert words[:3] == ["python", "-m", "explain"] and record["image"]["name"] == photo.name
    assert words[3] == key and str(models["multilabel"]) not in record["reproduce"]
    args = words[3:]
    args[0] = str(models["multilabel"])
    args[1] = str(photo)
    args[args.index("--out") + 1] = str(tmp_path / "reproduced")
    assert explain_main(args) == 0
    for index, method in enumerate(record["maps_npy"]["order"]):
        np.testing.assert_array_equal(np.load(tmp_path / "reproduced" / f"{photo.stem}_{method}.npy"), maps[index])
    grid = np.asarray(Image.open(by_suffix[".png"]).convert("RGB"))
    assert grid.shape[1] == 5 * SIZE and grid.shape[2] == 3
    # ...and the same picture: the command line draws through the app's pipeline.
    drawn = np.asarray(Image.open(tmp_path / "reproduced" / f"{photo.stem}_panel.png").convert("RGB"))
    np.testing.assert_array_equal(drawn, grid)
    # Download folders do not pile up on the server: only the newest few are kept.
    for _ in range(3):
        client.predict(key, "all predicted", *DEFAULTS.values(), api_name="/downloads")
    kept = demo.fundus_app.downloads
    assert len(kept) <= kept.keep and len(list(kept.root.iterdir())) <= kept.keep


@pytest.mark.slow
def test_eight_concurrent_clients_get_their_own_results(served, tmp_path):
    import torch

    demo, url, models = served
    key = model_key(demo, "lesions")
    model, _ = demo.fundus_app.analyser.models.get(key)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    photos = [synthetic_photo(tmp_path, seed=100 + i) for i in range(8)]
    expected = [direct_probabilities(models["multilabel"], p) for p in photos]
    start = threading.Barrier(8)

    def one_user(i: int):
        client = new_client(url, tmp_path / f"user{i}")
        start.wait()
        out = analyse(client, photos[i], key, "all predicted")
        again = view(client, key, "all predicted", theta=40)  # this session's state, not another's
        return out, again

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one_user, range(8)))
    for (out, again), want in zip(results, expected):
        np.testing.assert_allclose(list(out[PREDICTION]["probabilities"].values()), want, atol=1e-4)
        assert again[5]["theta"] == 40
    assert len({tuple(r[0][PREDICTION]["probabilities"].values()) for r in results}) == 8
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # the cached model is never modified
    assert not model._forward_hooks and not model.training


def test_the_api_docs_say_what_the_endpoints_take_and_give(served, client, tmp_path):
    """gradio_client's view_api (the page's API docs): typed values where the menus take them, and file paths for
    the pictures, which is what the endpoints give."""
    demo, url, _ = served
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    params = {p["parameter_name"]: p for p in api["/analyse"]["parameters"]}
    menu = "Literal[" + ", ".join(f"'{value}'" for _, value in demo.fundus_app.menu()) + "] | str"
    assert params["model_key"]["python_type"]["type"] == menu
    assert "hub repo id" in params["model_key"]["python_type"]["description"]
    assert params["model_key"]["parameter_default"] == demo.fundus_app.default.key
    # The default model's targets (tiny-lesions: multi-label, five labels), or another model's.
    targets = params["target_value"]["python_type"]
    assert targets["type"] == "Literal['all predicted', 'class:0', 'class:1', 'class:2', 'class:3', 'class:4'] | str"
    assert "class:<index>" in targets["description"] and params["target_value"]["parameter_default"] == "all predicted"
    returns = api["/analyse"]["returns"]
    pictures = [r for r in returns if r["component"] == "Image"]
    from explain.methods import panel_methods

    extra = len(panel_methods("optional"))  # the registry's optional panels (LayerCAM), empty until asked for
    assert len(pictures) == 7 + extra and all(r["python_type"]["type"] == "filepath" for r in pictures)
    types = [p["python_type"]["type"] for endpoint in api.values() for p in endpoint["parameters"] + endpoint["returns"]]
    assert not any("Literal[]" in t for t in types)
    # What /analyse gives matches: a file path for every picture.
    out = analyse(client, synthetic_photo(tmp_path, seed=40), demo.fundus_app.default.key, "all predicted")
    for index in [PHOTO, MODEL_INPUT, *range(PANELS.start, PANELS.stop), CROP]:
        assert isinstance(out[index], str) and Path(out[index]).is_file()
    # The typed menus are still the page's own dropdowns.
    config = json.loads(page_config(url))
    names = {c["props"].get("elem_id"): c["props"]["name"] for c in config["components"]}
    assert names["model-menu"] == names["target"] == "dropdown"


def test_the_api_and_the_page_take_their_defaults_from_the_model(served, client, tmp_path):
    """θ, τ and t left out of an API call are the model's own defaults (its config), the values the page sets when
    the model is selected, not the controls' fixed numbers (θ 128, τ 0.6, t 1.0)."""
    from explain.controls import BY_NAME

    folder = make_grader_at(tmp_path, "tiny-tuned", 1.5)
    config = json.loads((folder / "config.json").read_text())
    config.update(theta=48, tau=0.65, t=0.5)  # each unlike the controls' own defaults
    (folder / "config.json").write_text(json.dumps(config))
    assert all(config[name] != BY_NAME[name].default for name in ("theta", "tau", "t"))
    config = type("Config", (), config)
    key = "someone/tiny-tuned"
    put_in_hub_cache(folder, key)  # a hub model (the hub itself is offline): any model's config, not the app's own
    page_values = client.predict(key, api_name="/load_hub_model")  # what the page shows for it
    assert page_values[STATUS] == ""
    assert (page_values[THETA], page_values[TAU], page_values[GATE]) == (config.theta, config.tau, config.t)
    api = client.view_api(return_format="dict", print_info=False)["named_endpoints"]
    for endpoint in ("/analyse", "/explain_target", "/view", "/downloads"):
        params = {p["parameter_name"]: p for p in api[endpoint]["parameters"]}
        for name in ("theta", "tau", "t"):
            assert params[name]["parameter_has_default"] and params[name]["parameter_default"] is None, endpoint
            assert "model's own default" in params[name]["python_type"]["description"]
    from gradio_client import handle_file

    out = client.predict(handle_file(str(synthetic_photo(tmp_path, seed=41))), key, "predicted", api_name="/analyse")
    assert out[STATUS] == "" and all(panels_of(out))
    files, _ = client.predict(key, "predicted", api_name="/downloads")
    record = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())
    used = record["parameters"]
    assert (used["theta"], used["tau"], used["t"]) == (config.theta, config.tau, config.t)
    # Given values still win.
    files, _ = client.predict(key, "predicted", 40, 0.3, 2.0, api_name="/downloads")
    used = json.loads(next(Path(f) for f in files if f.endswith(".json")).read_text())["parameters"]
    assert (used["theta"], used["tau"], used["t"]) == (40, 0.3, 2.0)


def test_served_pictures_are_never_rewritten_while_sent(served, tmp_path, monkeypatch):
    """Six clients analysing the same photo make the same pictures. Handed arrays, Gradio wrote each picture to a path
    named by its content, in place, again for every request that made it: a transfer of that file in progress found
    it shorter than announced ("h11 LocalProtocolError: Too little data for declared Content-Length", 1 of 144
    requests). The page hands Gradio a new file per picture, which Gradio copies into its cache once, atomically."""
    import gradio.processing_utils as processing

    rewrites = []
    writer = processing.save_pil_to_cache
    monkeypatch.setattr(processing, "save_pil_to_cache",
                        lambda *args, **kwargs: rewrites.append(args) or writer(*args, **kwargs))
    demo, url, _ = served
    key = model_key(demo, "lesions")
    photo = synthetic_photo(tmp_path, seed=42)
    clients = [new_client(url, tmp_path / f"c{i}") for i in range(3)]
    with ThreadPoolExecutor(3) as pool:
        outs = list(pool.map(lambda c: analyse(c, photo, key, "all predicted"), clients))
    assert all(out[STATUS] == "" and all(panels_of(out)) for out in outs)
    assert rewrites == []  # no picture went through Gradio's write-in-place path
    for index in [PHOTO, MODEL_INPUT, *range(PANELS.start, PANELS.stop), CROP]:
        assert len({Path(out[index]).read_bytes() for out in outs}) == 1  # the same pictures, each complete


def test_picture_files_are_complete_files_named_by_content_and_bounded(tmp_path):
    from appcore.views import PictureFiles

    store = PictureFiles(keep=3, root=tmp_path)
    pictures = [np.full((32, 48, 3), value, np.uint8) for value in (10, 20, 30, 40)]
    first = store.save(pictures[0], "panel")
    # The same pixels: the same file, not written again (its address in Gradio's cache stays the same too).
    written = Path(first).stat().st_mtime_ns
    assert store.save(pictures[0].copy(), "before_after") == first and Path(first).stat().st_mtime_ns == written
    assert store.save(pictures[0].reshape(48, 32, 3), "panel") != first  # other pixels: another file
    paths = [store.save(p, "panel") for p in pictures[1:]]
    assert len(set(paths)) == 3 and len(store) == 3  # only the newest stay
    assert not Path(first).exists() and all(Path(p).exists() for p in paths)
    assert sorted(f.name for f in tmp_path.iterdir()) == sorted(Path(p).name for p in paths)  # no staging left
    assert np.asarray(Image.open(paths[-1])).shape == (32, 48, 3)
    store.save(pictures[1], "panel")  # made again: the newest, kept while others go
    store.save(pictures[0], "panel")
    assert Path(paths[0]).exists() and not Path(paths[1]).exists()


def test_each_controls_event_is_wired_to_what_it_redraws(served):
    """A control's event has only the pictures it redraws as outputs: the browser is sent no other picture."""
    from appcore.page import PANELS as PANEL_NAMES, redraw_outputs
    from explain.controls import CONTROLS

    demo = served[0]
    elem_id = lambda name: f"panel-{name}" if name in PANEL_NAMES else {"before_after": "compare"}.get(name, name)  # noqa: E731
    for control in CONTROLS:
        event = next(fn for fn in demo.fns.values() for block, trigger in fn.targets
                     if trigger == "input" and getattr(demo.blocks.get(block), "elem_id", None) == control.elem_id)
        outputs = [getattr(block, "elem_id", None) for block in event.outputs]
        assert outputs == [*map(elem_id, redraw_outputs(control.name)), None, "status"], control.name  # None: session
    theta = next(fn for fn in demo.fns.values() if any(demo.blocks[b].elem_id == "theta" for b, _ in fn.targets))
    assert "panel-cam" not in [block.elem_id for block in theta.outputs]


def test_server_address_follows_space_and_port(monkeypatch):
    from appcore.server import server_address

    for name in ("SPACE_ID", "PORT", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert server_address() == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert server_address() == ("127.0.0.1", 8123)
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("SPACE_ID", "someone/fundus-cam-zoo")
    assert server_address() == ("0.0.0.0", 9001)


def test_the_model_menu_is_grouped_by_paper_and_opens_on_dr_grading(served, tmp_path, monkeypatch):
    import app

    # The served app: its models grouped by paper (001, then 003), the first offered model the default.
    demo = served[0]
    labels = [label for label, _ in demo.fundus_app.menu()]
    assert [label.rsplit(" · ", 1)[1] for label in labels] == ["paper 001"] * 3 + ["paper 003"] * 3
    assert labels[0].endswith(" — tiny-lesions (folder) · paper 001")  # what it answers, the model, the paper
    assert demo.fundus_app.default.key == "tiny-lesions"
    # With dr-grade-classifier shipped, a new page opens on it, wherever its paper puts it in the menu.
    papers = {"dr-grade-classifier": "003", "dr-grading": "004", "dr-lesions": "001", "multi-disease": ""}
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(fake_shipped(tmp_path / "assets", papers)))
    built = app.build_demo(examples=([], 0))
    menu = next(block for block in built.blocks.values() if getattr(block, "elem_id", None) == "model-menu")
    assert menu.value == "dr-grade-classifier" and built.fundus_app.default.key == "dr-grade-classifier"
    assert [value for _, value in menu.choices] == ["dr-lesions", "dr-grade-classifier", "dr-grading", "multi-disease"]
    assert menu.choices[2][0] == "dr-grading · paper 004"


def test_switching_model_and_target_keeps_the_session_photo(served, client, tmp_path):
    demo, _, models = served
    photo = synthetic_photo(tmp_path, seed=12)
    analyse(client, photo, model_key(demo, "lesions"), "all predicted")
    grade_key = model_key(demo, "grading")
    out = client.predict(grade_key, api_name="/select_model")  # the session's photo is explained again
    assert out[MENU]["value"] == grade_key and [c[1] for c in out[TARGETS]["choices"]] == ["predicted"]
    assert "Not for clinical use" in out[CARD] and out[STATUS] == ""
    want = float(direct_probabilities(models["grade"], photo)[0])
    assert out[AFTER_MODEL + PREDICTION]["value"] == pytest.approx(want, abs=1e-4)
    again = explain_target(client, grade_key, "predicted")  # no upload: the session's photo is reused
    assert again[PREDICTION]["value"] == pytest.approx(want, abs=1e-4)


# -- errors stay readable ----------------------------------------------------------------------------------

@pytest.mark.parametrize("maker, message", [
    (lambda p: p.write_text("this is not a picture"), "not a readable image"),
    (lambda p: p.write_bytes(_jpeg_bytes()[:600]), "(?i)truncated"),
    (lambda p: Image.new("L", (8000, 6400)).save(p, format="PNG"), "too large"),
    (lambda p: p.write_bytes(b"\xff" * 100), "not a readable image"),
], ids=["text", "truncated-jpeg", "over-50-megapixels", "garbage"])
def test_bad_inputs_get_a_message(client, served, tmp_path, maker, message):
    path = tmp_path / "upload.png"
    maker(path)
    out = analyse(client, path, model_key(served[0], "lesions"))  # no exception: an answer with a status line
    assert out[STATUS].startswith("❌") and re.search(message, out[STATUS])
    assert str(tmp_path) not in out[STATUS] and "/tmp" not in out[STATUS]


def test_over_20_megabytes_is_refused_and_the_last_result_stays(client, served, tmp_path):
    """A photo over the size limit leaves the page as it was (the last photo's result) with a lasting reason on the
    status line, not a passing toast over an emptied page; an emptied photo box keeps the result too."""
    key = model_key(served[0], "lesions")
    good = analyse(client, synthetic_photo(tmp_path, seed=23), key, "all predicted")
    assert all(panels_of(good)) and good[STATUS] == ""
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg_bytes() + b"\0" * (21 * 2**20))
    out = analyse(client, path, key, "all predicted")
    assert out[STATUS] == ("❌ This file cannot be used: the file is too large: 21.0 MiB (limit 20.0 MiB). Nothing on "
                           "the page was changed.")
    kept = [value for index, value in enumerate(out) if index != len(out) - 1]
    assert all(isinstance(v, dict) and v.get("__type__") == "update" and "value" not in v for v in kept)
    # The session still has the earlier photo: a slider redraws it.
    moved = view(client, key, "all predicted", theta=30)
    assert all(panel_path(p) for p in moved[:4])
    # Gradio's own limit (a passing toast in the browser) is far above ours: the server says why, and stays.
    from appcore.gradio_widgets import LAUNCH_OPTIONS
    from gradio.utils import _parse_file_size

    assert _parse_file_size(LAUNCH_OPTIONS["max_file_size"]) > 21 * 2**20
    # An emptied photo box (its ×, or an upload the browser refused) changes nothing either.
    demo = served[0]
    assert demo.fundus_app.photo(None, key, "all predicted", *DEFAULTS.values()) is SKIP_OUTPUT()


def SKIP_OUTPUT():
    from appcore.page import SKIP

    return SKIP


def test_a_photos_warning_is_on_the_status_line_not_a_toast_that_outlives_it(served, monkeypatch):
    """The status line carries a photo's warnings and the next result replaces it; a toast would stay (20 s) over the
    next photo's result."""
    import gradio as gr

    from appcore.gradio_events import PageEvents

    toasts = []
    monkeypatch.setattr(gr, "Warning", lambda *args, **kwargs: toasts.append(args))
    monkeypatch.setattr(gr, "Info", lambda *args, **kwargs: toasts.append(args))
    events = PageEvents(served[0].fundus_app, {"status": "status-widget"})
    shown = events.shown({"notes": ["No fundus field of view was found"], "status": "⚠️ **No fundus field**"})
    assert shown == {"status-widget": "⚠️ **No fundus field**"} and toasts == []


def _jpeg_bytes() -> bytes:
    import io

    from fundus import make_fundus

    buffer = io.BytesIO()
    Image.fromarray(make_fundus(SIZE, seed=9)[0]).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_rejected_upload_after_a_good_one_keeps_the_reason_and_clears_the_panels(served, client, tmp_path):
    demo = served[0]
    key = model_key(demo, "lesions")
    good = analyse(client, synthetic_photo(tmp_path, seed=21), key, "all predicted")
    assert all(panels_of(good)) and good[PREDICTION]
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff not a jpeg at all")
    out = analyse(client, bad, key, "all predicted")
    assert out[STATUS] == "❌ This file cannot be used: the file is not a readable image (expected JPEG, PNG, TIFF, " \
                          "BMP or WebP)."
    # The earlier photo's results are gone, none of them shows "Error", and the session forgot the photo.
    assert panels_of(out) == [None] * 4
    assert out[PHOTO] is None and out[MODEL_INPUT] is None and out[PREDICTION] is None and out[CHART] is None
    assert out[CROP] is None and out[REGIONS] is None and out[COMPARE] is None and out[LEGEND] == ""
    moved = view(client, key, "all predicted", theta=30)  # a slider: nothing to redraw, no error either
    assert all(isinstance(v, dict) and v.get("__type__") == "update" and "value" not in v for v in moved)
    # Every control still works: the next photo is explained, and the status line is cleared.
    again = analyse(client, synthetic_photo(tmp_path, seed=22), key, "all predicted")
    assert all(panels_of(again)) and again[STATUS] == ""


def test_bogus_model_or_target_keeps_the_menu_usable(served, client, tmp_path):
    demo = served[0]
    lesions, grading = model_key(demo, "lesions"), model_key(demo, "grading")
    assert client.predict(grading, api_name="/select_model")[MENU]["value"] == grading
    photo = synthetic_photo(tmp_path, seed=23)
    analyse(client, photo, grading)
    out = client.predict("no-such-model", api_name="/select_model")
    # The menu goes back to the last model that worked, with the app's models, and says why.
    assert out[MENU]["value"] == grading and menu_of(out[MENU]) == [v for _, v in demo.fundus_app.menu()]
    assert out[STATUS] == "❌ `no-such-model` is not one of this app's models: pick one from the menu, or type a " \
                          "hub repo id (org/name or org/name@revision)."
    assert "Error" not in json.dumps(out)
    # A typed hub id that cannot be had offline: one message, said once; the menu again stays usable.
    out = client.predict("nobody-here/no-such-model", api_name="/load_hub_model")
    assert out[MENU]["value"] == grading and out[STATUS].count("offline") == 1
    assert out[STATUS].startswith("❌ Hub model `nobody-here/no-such-model` cannot be had offline")
    out = client.predict("not a repo id", api_name="/load_hub_model")
    assert out[MENU]["value"] == grading and "org/name" in out[STATUS]
    # A bogus target: the reason stays, the panels clear; the next good choice works again.
    out = explain_target(client, grading, "class:99")
    assert out[STATUS] == "❌ class index 99 is outside the model's 5 labels"
    assert panels_of(out) == [None] * 4
    out = explain_target(client, grading, "predicted")
    assert all(panels_of(out)) and out[STATUS] == ""
    out = client.predict(lesions, api_name="/select_model")
    assert out[MENU]["value"] == lesions and out[STATUS] == "" and all(panels_of(out, AFTER_MODEL + PANELS.start))


def test_early_downloads_and_a_vanished_photo_say_why(served, client, tmp_path):
    from appcore.page import PHOTO_GONE

    demo = served[0]
    key = model_key(demo, "lesions")
    files, status = client.predict(key, "all predicted", *DEFAULTS.values(), api_name="/downloads")
    assert files is None and status == "❌ Upload a photo or click an example first."
    analyse(client, synthetic_photo(tmp_path, seed=24), key, "all predicted")
    # Gradio's cache dropped the upload (delete_cache) and the analysis left the LRU: the page says so.
    state = demo.state_holder.session_data[client.session_hash]
    source = next(v for v in state.state_data.values() if isinstance(v, dict) and "digest" in v)
    Path(source["path"]).unlink()
    demo.fundus_app.analyser.cache._items.clear()
    out = view(client, key, "all predicted", theta=40)
    assert out[STATUS] == "❌ " + PHOTO_GONE and panels_of(out, 0) == [None] * 4
    assert source["path"] not in json.dumps(out)
    # The session forgot the photo: further moves redraw nothing and change nothing.
    assert view(client, key, "all predicted")[STATUS] == {"__type__": "update"}


def test_an_unexpected_error_is_logged_not_shown(served, client, tmp_path, monkeypatch, caplog):
    import app
    import appcore.page

    key = model_key(served[0], "lesions")
    analyse(client, synthetic_photo(tmp_path, seed=25), key, "all predicted")

    def broken(*args, **kwargs):
        raise RuntimeError("disk full at /srv/secret/fundus")

    monkeypatch.setattr(appcore.page, "render_view", broken)  # the page's redraw draws through it
    out = view(client, key, "all predicted")
    assert out[STATUS] == "❌ " + app.present.INTERNAL_ERROR and "/srv" not in json.dumps(out)
    assert any("/srv/secret/fundus" in str(r.exc_info[1]) for r in caplog.records if r.exc_info)


# -- what a public server may load ----------------------------------------------------------------------

def test_only_shipped_names_hub_ids_and_listed_folders_load(served, client, tmp_path, monkeypatch):
    demo, url, models = served
    cache = demo.fundus_app.analyser.models
    loads = cache.loads
    unlisted = make_tiny_models(tmp_path / "elsewhere")["grade"]  # a valid model folder nobody listed
    outsider = new_client(url, tmp_path / "outsider")

    def refused(text: str) -> tuple[str, str]:
        selected = outsider.predict(text, api_name="/select_model")
        typed = outsider.predict(text, api_name="/load_hub_model")
        assert selected[MENU]["value"] == model_key(demo, "lesions")  # back to the default: nothing loaded
        return selected[STATUS], typed[STATUS]

    # A folder that holds a model and one that does not exist get the same answers, from both endpoints.
    for existing, absent in [(str(unlisted), str(unlisted) + "-absent"), (str(models["grade"]), "/no/such/folder"),
                             ("/etc", "/etc-absent"), (str(tmp_path), str(tmp_path / "nothing"))]:
        assert refused(existing) == refused(absent)
    statuses = refused(str(unlisted))
    assert "not one of this app's models" in statuses[0] and "not a hub repo id" in statuses[1]
    for status in statuses:
        assert str(tmp_path) not in status and "config.json" not in status and "exist" not in status
    # Text of the hub id form is a hub id, even where such a folder exists in the server's working dir.
    make_tiny_models(tmp_path / "org")
    monkeypatch.chdir(tmp_path)
    assert (tmp_path / "org" / "tiny-grading" / "config.json").is_file()
    here = outsider.predict("org/tiny-grading", api_name="/select_model")[STATUS]
    absent = outsider.predict("org/no-such-model", api_name="/select_model")[STATUS]
    assert "cannot be had offline" in here and here.replace("tiny-grading", "no-such-model") == absent
    assert cache.loads == loads and not any(str(tmp_path) in key for key in cache._models)
    # The operator's folders are offered by name; their paths are nowhere in the page.
    config = page_config(url)
    assert all(str(folder) not in config for folder in models.values())
    assert {"tiny-lesions", "tiny-grading", "tiny-broken"} <= set(menu_of({"choices": demo.fundus_app.menu()}))


def test_a_broken_listed_model_says_so_without_paths(served, client):
    demo, _, models = served
    out = client.predict(model_key(demo, "broken"), api_name="/select_model")
    assert out[STATUS] == ("❌ Model `tiny-broken` could not be loaded: its files are missing or do not match its "
                           "config.")
    assert out[MENU]["value"] == model_key(demo, "lesions")  # the session's model before


def test_menu_additions_stay_in_their_session(served, tmp_path):
    demo, url, _ = served
    alice, bob = new_client(url, tmp_path / "alice"), new_client(url, tmp_path / "bob")
    out = alice.predict(HUB_REPO, api_name="/load_hub_model")  # in the (offline) hub cache: it loads
    assert out[STATUS] == "" and out[MENU]["value"] == HUB_REPO and HUB_REPO in menu_of(out[MENU])
    assert [c[1] for c in out[TARGETS]["choices"]] == ["predicted"] and HUB_REPO in out[CARD]
    # Another visitor's menu, and the page a new visitor gets, do not have it.
    out = bob.predict(model_key(demo, "grading"), api_name="/select_model")
    assert HUB_REPO not in menu_of(out[MENU]) and out[STATUS] == ""
    assert HUB_REPO not in page_config(url) and HUB_REPO not in [v for _, v in demo.fundus_app.menu()]
    # Alice keeps it in her menu when she picks another model, and can go back to it.
    out = alice.predict(model_key(demo, "lesions"), api_name="/select_model")
    assert HUB_REPO in menu_of(out[MENU])
    assert alice.predict(HUB_REPO, api_name="/select_model")[MENU]["value"] == HUB_REPO
