"""A real browser on the Gradio app: Debian's headless Chromium driven by Playwright.

Open the page, click an example, wait for the four panels, move the θ slider, check that the crop
changed, save a screenshot. The flow is scripts/make_screenshot.py's ``drive`` (the README screenshot).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from test_app import make_tiny_models, start_app

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_screenshot", REPO / "scripts" / "make_screenshot.py")
make_screenshot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_screenshot)

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser():
    if not os.access(make_screenshot.CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {make_screenshot.CHROMIUM} (apt-get install chromium; ./dev.sh test does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=make_screenshot.CHROMIUM, args=make_screenshot.LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def cache_outside_tmp():
    """An app cache outside the temp dir and the working dir, like the default ~/.cache one: Gradio
    refuses to serve files from such places unless the app declares them."""
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / f"fundus-cam-zoo-test-{os.getpid()}"
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_upload_example_panels_and_theta_slider(browser, tmp_path, monkeypatch, cache_outside_tmp):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(tmp_path / "no-assets"))
    monkeypatch.setenv("FUNDUS_APP_CACHE", str(cache_outside_tmp))
    models = make_tiny_models(tmp_path)
    demo, url = start_app(tmp_path, [models["multilabel"]], {})
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 1350})
        requested = []
        page.on("request", lambda request: requested.append(request.url))
        result = make_screenshot.drive(page, url, timeout_s=60, theta_steps=60)
        shot = tmp_path / "browser.png"
        page.screenshot(path=str(shot))
        page.close()
    finally:
        demo.close()
    # Offline by default: the page fetches nothing from outside the app (no analytics, fonts or CDNs).
    outside = [u for u in requested if not u.startswith((url.rstrip("/"), "data:", "blob:"))]
    assert requested and not outside, outside
    assert result["theta_after"] == 128 + 60
    assert result["crop_after"] != result["crop_before"]
    # The θ crop box in the page's summary moved with the slider (paper 000 eq. 5).
    assert "θ = 128" in result["regions_before"] and "θ = 188" in result["regions_after"]
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (1350, 1280, 3) and image.std() > 10  # a rendered page, not a blank one
