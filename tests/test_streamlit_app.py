"""The Streamlit front end through streamlit.testing.v1.AppTest: upload, the four panels, θ/τ sliders
redraw without a network pass or a new decode, a model change resets θ/τ/t to its defaults, bad uploads
and photos that are not fundus photographs get a message and no classification, no Deploy button."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_app import SIZE, make_tiny_models

REPO = Path(__file__).resolve().parents[1]
# Every test runs the Streamlit script in an AppTest session: 1-3 s of CPU each.
pytestmark = pytest.mark.slow


@pytest.fixture()
def app_test(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    # The tiny models stand in for the shipped defaults (zoo.model_names reads FUNDUS_ZOO_ASSETS).
    make_tiny_models(tmp_path / "assets")
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp_path / "cache"))
    import streamlit as st

    st.cache_resource.clear()  # a fresh analyser for every test
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture()
def network_passes(monkeypatch):
    """Counts Explainer.explain calls (each is one network pass)."""
    from explain import Explainer

    calls = []
    original = Explainer.explain

    def counted(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Explainer, "explain", counted)
    return calls


def png_bytes(seed: int) -> bytes:
    from fundus import make_fundus

    buffer = io.BytesIO()
    Image.fromarray(make_fundus(SIZE, seed=seed)[0]).save(buffer, format="PNG")
    return buffer.getvalue()


def pick_model(at, key: str):
    """Select a model by its menu value (the menu shows labels that also name its paper) and rerun."""
    return at.selectbox(key="model").set_value(key).run()


def regions_of(at) -> dict:
    return json.loads(at.json[0].value)


def test_upload_then_sliders_redraw_without_a_pass(app_test, network_passes):
    at = app_test
    pick_model(at, "tiny-lesions")
    assert not at.info and at.selectbox(key="example").value  # it opens on an example, analysed
    network_passes.clear()
    at.file_uploader(key="upload").set_value(("photo.png", png_bytes(2), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    captions = [caption for image in at.image for caption in image.captions]
    assert network_passes == [1]
    assert any(c.startswith("CAM") for c in captions) and any(c.startswith("GMSM") for c in captions)
    assert any(c.startswith("Guided Grad-CAM") for c in captions) and any(c.startswith("Grad-CAM") for c in captions)
    first = regions_of(at)
    at.slider(key="theta").set_value(20).run()
    at.slider(key="t").set_value(0.0).run()  # GMSM gate = ReLU: a random model still gives a map
    loose = regions_of(at)
    at.slider(key="theta").set_value(235).run()
    at.slider(key="tau").set_value(0.9).run()
    tight = regions_of(at)
    assert network_passes == [1]  # four slider moves, no new pass
    assert (first["theta"], loose["theta"], tight["theta"]) == (128, 20, 235)
    area = lambda b: (b[2] - b[0]) * (b[3] - b[1])  # noqa: E731
    assert area(loose["crop_box"]) > area(tight["crop_box"])
    assert loose["lesion_area_px"] > tight["lesion_area_px"]


def test_example_and_a_bad_upload(app_test):
    at = app_test
    at.selectbox(key="example").set_value("hrf-01-healthy.jpg").run()
    assert not at.exception and not at.error
    assert regions_of(at)["theta"] == 128
    at.file_uploader(key="upload").set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert at.error and "not a readable image" in at.error[0].value


def make_custom_defaults_model(folder: Path) -> dict:
    """A third tiny model whose θ/τ/t defaults differ from the ModelConfig defaults."""
    import torch
    import zoo

    torch.manual_seed(1)
    defaults = {"theta": 77, "tau": 0.35, "t": 0.5}
    zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=SIZE, name="tiny-custom",
                     **defaults).save_pretrained(folder / "tiny-custom")
    return defaults


def sliders(at) -> tuple:
    return at.slider(key="theta").value, at.slider(key="tau").value, at.slider(key="t").value


def test_a_model_change_resets_theta_tau_t_to_its_defaults(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import zoo

    make_tiny_models(tmp_path / "assets")
    custom = make_custom_defaults_model(tmp_path / "assets")
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp_path / "cache"))
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()
    pick_model(at, "tiny-lesions")
    lesions = zoo.load(str(tmp_path / "assets" / "tiny-lesions")).config
    assert sliders(at) == (lesions.theta, pytest.approx(lesions.tau), pytest.approx(lesions.t))
    at.slider(key="theta").set_value(20).run()
    at.slider(key="tau").set_value(0.9).run()
    at.slider(key="t").set_value(2.5).run()
    assert sliders(at) == (20, pytest.approx(0.9), pytest.approx(2.5))  # the user's values hold within a model
    pick_model(at, "tiny-custom")
    assert not at.exception, at.exception
    assert sliders(at) == (custom["theta"], pytest.approx(custom["tau"]), pytest.approx(custom["t"]))
    at.slider(key="theta").set_value(200).run()
    pick_model(at, "tiny-lesions")
    assert sliders(at) == (lesions.theta, pytest.approx(lesions.tau), pytest.approx(lesions.t))


def test_the_model_menu_is_grouped_by_paper_and_opens_on_the_dr_grade_classifier(tmp_path, monkeypatch):
    import shutil

    from streamlit.testing.v1 import AppTest

    tiny = make_tiny_models(tmp_path / "models")  # tiny-lesions: paper 001, tiny-grading: paper 003
    for name in ("dr-grade-classifier", "dr-grading", "tiny-lesions"):  # as shipped names; dr-grading: paper 003 here
        shutil.copytree(tiny["multilabel" if name == "tiny-lesions" else "grade"], tmp_path / "assets" / name)
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp_path / "assets"))
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(tmp_path / "cache"))
    import streamlit as st

    st.cache_resource.clear()
    at = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    at.run()
    assert not at.exception, at.exception
    menu = at.selectbox(key="model")
    assert [label.split(" — ")[1].split(" · ")[0] for label in menu.options] == ["tiny-lesions", "dr-grade-classifier",
                                                                              "dr-grading"]
    assert menu.options[0].endswith(" · paper 001") and menu.options[1].endswith(" · paper 003")
    assert menu.value == "dr-grade-classifier"  # the default, though not first in the menu


def test_slider_moves_neither_decode_nor_analyse_again(app_test, network_passes, monkeypatch):
    """Streamlit reruns the script on every slider step: the photo and its analysis come from the cache."""
    from appcore import photos
    from appcore.analysis import Analyser

    decodes, analyses = [], []
    load_photo, analyse = photos.load_photo, Analyser.analyse

    def counted_load(*args, **kwargs):
        decodes.append(1)
        return load_photo(*args, **kwargs)

    def counted_analyse(self, *args, **kwargs):
        analyses.append(1)
        return analyse(self, *args, **kwargs)

    monkeypatch.setattr(photos, "load_photo", counted_load)
    monkeypatch.setattr(Analyser, "analyse", counted_analyse)
    at = app_test
    pick_model(at, "tiny-lesions")
    at.file_uploader(key="upload").set_value(("photo.png", png_bytes(4), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    assert (len(decodes), len(analyses), len(network_passes)) == (1, 1, 1)
    for theta in (30, 60, 90):
        at.slider(key="theta").set_value(theta).run()
    at.slider(key="alpha").set_value(0.8).run()
    assert regions_of(at)["theta"] == 90
    assert (len(decodes), len(analyses), len(network_passes)) == (1, 1, 1)  # five reruns, nothing recomputed
    at.selectbox(key="target").set_value(at.selectbox(key="target").options[1]).run()
    assert len(analyses) == 2 and len(network_passes) == 2 and len(decodes) == 1  # a new target: one new pass


def image_bytes(rgb) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def test_a_photo_that_is_not_a_fundus_gets_a_message_and_no_classification(app_test, network_passes):
    import numpy as np

    data = pytest.importorskip("skimage.data")
    at = app_test
    pick_model(at, "tiny-grading")
    network_passes.clear()  # the page's start example, analysed by the picked model
    for name, rgb in [("coffee.png", data.coffee()), ("orange.png", np.full((200, 200, 3), (200, 90, 40), np.uint8))]:
        at.file_uploader(key="upload").set_value((name, image_bytes(rgb), "image/png")).run()
        assert not at.exception, at.exception
        assert at.error and "does not look like a retinal fundus photograph" in at.error[0].value
        assert "not classified" in at.error[0].value
        # No grade, no chart, no panels: nothing was classified.
        assert not at.get("plotly_chart") and not at.json and not at.image
    assert network_passes == []
    at.file_uploader(key="upload").set_value(("eye.png", png_bytes(5), "image/png")).run()
    assert not at.error and at.get("plotly_chart") and network_passes == [1]  # a fundus photo still works


def test_the_deploy_button_is_hidden(app_test):
    import tomllib

    import streamlit as st

    assert st.get_option("client.toolbarMode") == "minimal"  # set by the script itself
    config = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())
    assert config["client"]["toolbarMode"] == "minimal"  # and for `streamlit run` from the repository


# -- parity with the Gradio app: before/after, downloads, hub models ---------------------------------------

def picture_url(at, caption_start: str) -> str:
    """The media URL of the picture whose caption starts so (a new picture, a new URL)."""
    found = [image for image in at.image if any(c.startswith(caption_start) for c in image.captions)]
    assert len(found) == 1, [c for image in at.image for c in image.captions]
    return found[0].proto.imgs[0].url


def test_the_before_after_view_follows_its_handle_and_panel(app_test, network_passes):
    at = app_test
    at.selectbox(key="example").set_value("hrf-01-healthy.jpg").run()
    assert not at.exception and not at.error, (at.exception, at.error)
    caption = "the photo as the model sees it | "
    half = picture_url(at, caption + "Guided Grad-CAM overlay")  # Gradio's default panel
    assert at.slider(key="handle").value == 50
    at.slider(key="handle").set_value(10).run()
    assert picture_url(at, caption + "Guided Grad-CAM overlay") != half  # the handle moved: another picture
    at.selectbox(key="compare").set_value("gmsm").run()
    picture_url(at, caption + "GMSM overlay")
    assert network_passes == [1]  # redrawn from the cached analysis


def test_the_downloads_are_the_gradio_apps(app_test, monkeypatch):
    from streamlit.runtime.media_file_manager import MediaFileManager

    made = {}
    add_deferred = MediaFileManager.add_deferred

    def keep(self, data_callable, mimetype, coordinates, file_name=None, **kwargs):
        made[file_name] = (data_callable, mimetype)
        return add_deferred(self, data_callable, mimetype, coordinates, file_name=file_name, **kwargs)

    monkeypatch.setattr(MediaFileManager, "add_deferred", keep)
    at = app_test
    pick_model(at, "tiny-lesions")
    made.clear()  # the start example's downloads
    at.file_uploader(key="upload").set_value(("eye.png", png_bytes(6), "image/png")).run()
    assert not at.exception and not at.error, (at.exception, at.error)
    names = ["eye-panels.png", "eye-maps.npy", "eye-view.json"]
    assert [button.label for button in at.get("download_button")] == names
    assert sorted(made) == sorted(names)  # each file is made only when its button is clicked
    png, mime = made["eye-panels.png"]
    assert png().startswith(b"\x89PNG") and mime == "image/png"
    maps = np.load(io.BytesIO(made["eye-maps.npy"][0]()))
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    record = json.loads(made["eye-view.json"][0]())
    assert record["model"]["id"] == "tiny-lesions" and record["image"]["name"] == "eye.png"
    assert record["parameters"]["theta"] == at.slider(key="theta").value
    assert record["reproduce"].startswith("python -m explain tiny-lesions eye.png")


def test_a_hub_model_joins_this_sessions_menu_only(app_test, tmp_path):
    from streamlit.testing.v1 import AppTest

    from support import put_in_hub_cache

    put_in_hub_cache(make_tiny_models(tmp_path / "hub")["grade"], "someone/tiny-hub-grader")  # offline: cached
    at = app_test
    default = at.selectbox(key="model").value

    def load(text: str):
        at.text_input(key="hub_id").input(text)
        at.button(key="hub_load").click().run()
        assert not at.exception, at.exception
        return [e.value for e in at.error]

    # Not a hub id, a path on the server, a hub model that is neither cached nor reachable: refused, model kept.
    assert "not a hub repo id" in load("not a model")[0] and "not a hub repo id" in load("/etc")[0]
    assert "cannot be had offline" in load("nobody/nothing")[0]
    assert at.selectbox(key="model").value == default
    # A cached hub model loads, joins this session's menu under its paper, and is selected.
    assert load("someone/tiny-hub-grader") == []
    menu = at.selectbox(key="model")
    assert menu.value == "someone/tiny-hub-grader"
    assert menu.options[-1].endswith(" — someone/tiny-hub-grader (hub) · paper 003")
    at.selectbox(key="example").set_value("hrf-01-healthy.jpg").run()
    assert not at.error and regions_of(at)["theta"] == at.slider(key="theta").value  # explained by it
    assert any("someone/tiny-hub-grader" in markdown.value for markdown in at.markdown)  # its model card
    # Another session's menu does not have it.
    other = AppTest.from_file(str(REPO / "streamlit_app.py"), default_timeout=120)
    other.run()
    assert all("someone/tiny-hub-grader" not in option for option in other.selectbox(key="model").options)
