"""The Streamlit front end through streamlit.testing.v1.AppTest: upload, the four panels, θ/τ sliders
redraw without a network pass, bad uploads get a message."""
from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image

from test_app import SIZE, make_tiny_models

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def app_test(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    # The tiny models stand in for the shipped defaults (the zoo registry reads FUNDUS_ZOO_ASSETS).
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


def regions_of(at) -> dict:
    return json.loads(at.json[0].value)


def test_upload_then_sliders_redraw_without_a_pass(app_test, network_passes):
    at = app_test
    at.selectbox(key="model").set_value("tiny-lesions (shipped)").run()
    assert "Upload a fundus photo" in at.info[0].value
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
    at.selectbox(key="example").set_value("skimage-retina-cc0.jpg").run()
    assert not at.exception and not at.error
    assert regions_of(at)["theta"] == 128
    at.file_uploader(key="upload").set_value(("notes.png", b"not an image at all", "image/png")).run()
    assert at.error and "not a readable image" in at.error[0].value
