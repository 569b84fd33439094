"""A real browser on the Gradio app: Debian's headless Chromium driven by Playwright, at desktop width and at a
390 px phone width: what a person sees.

The page opens on an analysed example (no click), shows the main result in one line, eight example photos
whose captions fit, four panels with their one-line descriptions and a colour bar; θ changes the crop;
a "healthy" answer gets no region; on a phone nothing overflows sideways and the panels sit 2 × 2. The
opening flow is scripts/make_screenshot.py's ``drive`` (the README screenshot).
"""
from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from support import make_biased_lesion_model, start_app

REPO = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("make_screenshot", REPO / "scripts" / "make_screenshot.py")
make_screenshot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(make_screenshot)

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# BP/MA at ~12 %, over its low threshold, which is above fundus.tasks.FINDING_FLOOR (a lower one would be floored)
LEAN = {"BP/MA": -2, "HM": -6, "HEX": -6, "CWS": -6, "healthy": 6}
THRESHOLDS = [0.06, 0.5, 0.5, 0.5, 0.5]
DESKTOP = {"width": 1280, "height": 1000}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser():
    if not os.access(make_screenshot.CHROMIUM, os.X_OK):
        pytest.skip(f"no Chromium at {make_screenshot.CHROMIUM} (apt-get install chromium; ./dev.sh test does it)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (requirements-dev.txt)")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=make_screenshot.CHROMIUM, args=make_screenshot.LAUNCH_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """The app on two tiny models whose answers do not depend on the photo: HM (a lesion label) and "healthy".
    Its cache lies outside the temp dir, like the default ~/.cache one."""
    tmp = tmp_path_factory.mktemp("browser")
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / f"fundus-cam-zoo-test-{os.getpid()}"
    mp = pytest.MonkeyPatch()
    mp.setenv("FUNDUS_ZOO_ASSETS", str(tmp / "no-assets"))
    mp.setenv("FUNDUS_APP_CACHE", str(cache))
    disease = make_biased_lesion_model(tmp, "tiny-disease", {**LEAN, "HM": 8}, THRESHOLDS)
    healthy = make_biased_lesion_model(tmp, "tiny-healthy", LEAN, THRESHOLDS)
    demo, url = start_app(tmp, [disease, healthy], {})
    yield demo, url
    demo.close()
    mp.undo()
    shutil.rmtree(cache, ignore_errors=True)


def box(page, selector: str, index: int = 0) -> dict:
    return page.locator(selector).nth(index).bounding_box()


def test_the_page_opens_on_an_analysed_example_and_theta_moves_the_crop(browser, served, tmp_path):
    demo, url = served
    page = browser.new_page(viewport=DESKTOP)
    requested = []
    page.on("request", lambda request: requested.append(request.url))
    try:
        result = make_screenshot.drive(page, url, timeout_s=120, theta_steps=-60)  # no click: the first view
        # Offline by default: the page fetches nothing from outside the app (no analytics, fonts or CDNs).
        outside = [u for u in requested if not u.startswith((url.rstrip("/"), "data:", "blob:"))]
        assert requested and not outside, outside
        start = demo.fundus_app.examples[demo.fundus_app.start]
        # The main result: one line with the model's answer and its probability and threshold, then what is
        # known about the example photo; lesion codes spelled out.
        main = page.locator("#main-result .main-line").inner_text()
        assert main.startswith("tiny-disease: microaneurysms (BP/MA)") and "haemorrhages (HM) 100 %" in main
        assert "overruled: healthy" in main
        assert page.locator("#main-result .known").inner_text().startswith(f"Example photo — known: {start.known}")
        # The four maps are there without a click, and in the first screen.
        for method in make_screenshot.PANELS:
            assert box(page, f"#panel-{method} img")["y"] < DESKTOP["height"]
        heads = [page.locator(f"#head-{method}").inner_text() for method in make_screenshot.PANELS]
        assert [h.splitlines()[0] for h in heads] == ["CAM", "Grad-CAM", "Guided Grad-CAM", "GMSM"]
        assert all(len(h.splitlines()) == 2 and len(h.splitlines()[1]) > 30 for h in heads)
        assert " ms" not in page.locator("#panels").inner_text()  # timings are in the details tab
        assert "linear-gradient" in page.locator("#colorbar .bar").get_attribute("style")
        # Eight examples, each thumbnail and caption whole inside the gallery.
        gallery = box(page, "#examples")
        thumbnails = page.locator("#examples .thumbnail-item")
        assert thumbnails.count() == 8
        captions = page.locator("#examples .caption-label")
        assert captions.all_inner_texts() == [e.caption for e in demo.fundus_app.examples]
        for i in range(8):
            item = box(page, "#examples .thumbnail-item", i)
            assert gallery["x"] <= item["x"] and item["x"] + item["width"] <= gallery["x"] + gallery["width"] + 1
            assert captions.nth(i).evaluate("e => e.scrollWidth <= e.clientWidth + 1 && e.scrollHeight <= e.clientHeight + 1")
        # θ: its slider label says what it does before the paper; moving it changes the crop (paper 000 eq. 5),
        # and the enlarged crop keeps the box's aspect ratio.
        label = page.locator("#theta").inner_text()
        assert label.index("higher keeps only the strongest details") < label.index("paper 000, eq. 5")
        assert result["theta_after"] == 128 - 60 and result["crop_after"] != result["crop_before"]
        assert "θ = 128" in result["regions_before"] and "θ = 68" in result["regions_after"]
        crop_box = [int(v) for v in result["regions_after"].split("(", 1)[1].split(")–(")[0].split(", ")] + \
                   [int(v) for v in result["regions_after"].split(")–(", 1)[1].split(")")[0].split(", ")]
        natural = page.locator("#crop img").evaluate("img => [img.naturalWidth, img.naturalHeight]")
        assert natural[0] / natural[1] == pytest.approx((crop_box[2] - crop_box[0]) / (crop_box[3] - crop_box[1]),
                                                        rel=0.1)
        # The page is no longer a 2,150 px wall.
        assert page.evaluate("document.documentElement.scrollHeight") < 2150
        # The model card reads as lines in its tab, not a table squeezed letter by letter.
        page.get_by_role("tab", name="Model card").click()
        page.wait_for_selector("#model-card strong")
        assert page.locator("#model-card table").count() == 0
        rule = page.locator("#model-card").inner_text()
        assert "Decision rule:" in rule and "'healthy' and the other labels" in rule
        key = page.locator("#model-card strong", has_text="Labels:").bounding_box()
        assert key["width"] > 40 and key["height"] < 40  # one line, not a letter per line
        shot = tmp_path / "desktop.png"
        page.screenshot(path=str(shot))
    finally:
        page.close()
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape == (DESKTOP["height"], DESKTOP["width"], 3) and image.std() > 10  # a rendered page


def test_a_healthy_answer_gets_no_region(browser, served):
    _, url = served
    page = browser.new_page(viewport=DESKTOP)
    try:
        make_screenshot.drive(page, url, timeout_s=120, theta_steps=0)
        before = page.locator("#main-result").inner_html()
        page.locator("#model-menu input").click()
        page.get_by_role("option", name="tiny-healthy (folder)").click()
        page.wait_for_function("(before) => document.querySelector('#main-result').innerHTML !== before",
                               arg=before, timeout=120_000)
        page.wait_for_function("document.querySelector('#legend').innerText.includes('No regions')", timeout=120_000)
        main = page.locator("#main-result .main-line").inner_text()
        assert main.startswith("tiny-healthy: healthy 100 %") and "overruled: microaneurysms (BP/MA)" in main
        legend = page.locator("#legend").inner_text()
        assert "no-disease answer" in legend and "θ =" not in legend and "τ =" not in legend and "Outlines" not in legend
    finally:
        page.close()


def test_the_page_fits_a_phone(browser, served, tmp_path):
    _, url = served
    page = browser.new_page(viewport=PHONE, is_mobile=True, has_touch=True)
    try:
        make_screenshot.drive(page, url, timeout_s=120, theta_steps=0)
        assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]  # nothing sideways
        assert box(page, "#main-result")["y"] < PHONE["height"]  # the answer on the first screen
        for i in range(8):  # every example reachable without scrolling sideways
            item = box(page, "#examples .thumbnail-item", i)
            assert item["x"] >= 0 and item["x"] + item["width"] <= PHONE["width"]
        cam, gradcam, guided, gmsm = (box(page, f"#panel-{m} img") for m in make_screenshot.PANELS)
        assert cam["y"] == pytest.approx(gradcam["y"], abs=30) and guided["y"] == pytest.approx(gmsm["y"], abs=30)
        assert guided["y"] > cam["y"] + cam["height"] / 2 and gradcam["x"] > cam["x"] + cam["width"] / 2  # 2 × 2
        height = page.evaluate("document.documentElement.scrollHeight")
        assert height < 5 * PHONE["height"]  # a few screens, not endless (it was 5,055 px)
        page.screenshot(path=str(tmp_path / "phone.png"), full_page=True)
    finally:
        page.close()
