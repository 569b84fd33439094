"""Drive the app in headless Chromium and save the README screenshot as docs/screenshot.svg.

The screenshot is an SVG (text) that embeds a JPEG as a data URI. By default it shows the first view, as a
visitor gets it: the page opens on an analysed example photo. The browser flow (open the page, wait for
the analysed example, optionally click another example and move the θ slider until the crop changes) is
``drive`` below; tests/test_browser.py runs the same flow.

    python scripts/make_screenshot.py                      # starts `python app.py` on a free port
    python scripts/make_screenshot.py --url http://127.0.0.1:7860 --png /tmp/screenshot.png
"""
from __future__ import annotations

import argparse
import base64
import os
import time
from pathlib import Path

from appcore.launch import free_port, start_app, wait_http_ok

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# Debian's Chromium, headless, without any outside connection (see ../shared/ENVIRONMENT.md).
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
               "--disable-component-update", "--disable-sync"]
PANELS = ("cam", "gradcam", "guided_gradcam", "gmsm")
MAX_SVG_BASE64 = 200_000


def drive(page, url: str, timeout_s: float = 60.0, theta_steps: int = 90, example: int | None = None) -> dict:
    """Open the app, wait for the example it opens on to be analysed (main result, four panels, chart, crop),
    optionally click another example, and optionally move θ and wait for a new crop.

    Args:
        page: a Playwright page.
        url: the app's address.
        timeout_s: how long to wait for each step.
        theta_steps: arrow-key presses on the θ slider, each moving θ by one (> 0: up, a tighter crop;
            < 0: down, a looser one; 0: leave θ as the model's config sets it).
        example: which example photo to click (None: the one the page opens on).

    Returns:
        {"main", "regions_before", "regions_after", "crop_before", "crop_after" (image sources), "theta_after",
        "seconds"}.

    Raises:
        playwright's TimeoutError: a step did not finish in time.
    """
    timeout = timeout_s * 1000
    start = time.perf_counter()
    page.goto(url, timeout=timeout)
    page.wait_for_selector("#examples img", timeout=timeout)
    _wait_for_analysis(page, timeout)
    if example is not None:
        thumbnail = page.locator("#examples .thumbnail-item").nth(example)
        if "selected" not in (thumbnail.get_attribute("class") or ""):
            before = page.locator("#main-result").inner_html()
            thumbnail.click()
            page.wait_for_function("(before) => document.querySelector('#main-result').innerHTML !== before",
                                   arg=before, timeout=timeout)
            _wait_for_analysis(page, timeout)
    summary = "#legend .region-summary"
    page.wait_for_function(f"(document.querySelector('{summary}') || {{innerText: ''}}).innerText.length > 0",
                           timeout=timeout)
    crop_before = page.locator("#crop img").get_attribute("src")
    regions_before = page.locator(summary).inner_text()
    theta = None
    if theta_steps:
        page.wait_for_function(f"document.querySelector('{summary}').innerText.includes('θ =')", timeout=timeout)
        slider = page.locator("#theta input[type=range]")
        slider.focus()
        for _ in range(abs(theta_steps)):
            slider.press("ArrowRight" if theta_steps > 0 else "ArrowLeft")
        theta = int(float(slider.input_value()))
        # Redraws of intermediate values may arrive first: wait for the one of the final θ.
        page.wait_for_function(f"document.querySelector('{summary}').innerText.includes('θ = {theta} ')",
                               timeout=timeout)
        page.wait_for_function(
            "(before) => { const img = document.querySelector('#crop img'); return img && img.getAttribute('src') !== before; }",
            arg=crop_before, timeout=timeout)
    return {
        "main": page.locator("#main-result").inner_text(),
        "regions_before": regions_before,
        "regions_after": page.locator(summary).inner_text(),
        "crop_before": crop_before,
        "crop_after": page.locator("#crop img").get_attribute("src"),
        "theta_after": theta,
        "seconds": time.perf_counter() - start,
    }


def _wait_for_analysis(page, timeout: float) -> None:
    """Wait until the page shows an analysed photo: main result, four panels, chart and crop."""
    page.wait_for_selector("#main-result .answer", timeout=timeout)
    for method in PANELS:
        page.wait_for_selector(f"#panel-{method} img", timeout=timeout)
    page.wait_for_selector("#chart .js-plotly-plot", timeout=timeout)
    page.wait_for_selector("#crop img", state="attached", timeout=timeout)


def svg_with_jpeg(jpeg: bytes, width: int, height: int) -> str:
    """An SVG document that shows a JPEG embedded as a base64 data URI."""
    data = base64.b64encode(jpeg).decode("ascii")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
            f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">\n'
            f'<title>Fundus CAM Zoo: a fundus photo explained by CAM, Grad-CAM, Guided Grad-CAM and GMSM</title>\n'
            f'<image width="{width}" height="{height}" xlink:href="data:image/jpeg;base64,{data}"/>\n</svg>\n')


def jpeg_within(png: bytes, max_width: int = 1280, quality: int = 70, limit: int = MAX_SVG_BASE64) -> tuple[bytes, int, int]:
    """Re-encode a PNG screenshot as JPEG (≤ max_width px wide), shrinking until its base64 fits ``limit``."""
    import cv2
    import numpy as np

    image = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)
    scale = min(1.0, max_width / image.shape[1])
    while True:
        size = (round(image.shape[1] * scale), round(image.shape[0] * scale))
        small = cv2.resize(image, size, interpolation=cv2.INTER_AREA) if scale < 1 else image
        ok, encoded = cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        if len(base64.b64encode(encoded.tobytes())) <= limit or scale < 0.3:
            return encoded.tobytes(), size[0], size[1]
        scale *= 0.85


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running app (default: start `python app.py` on a free port)")
    parser.add_argument("--models", nargs="*", default=[], help="extra model folders/hub ids for the started app")
    parser.add_argument("--out", default=str(REPO / "docs" / "screenshot.svg"), help="the SVG to write")
    parser.add_argument("--png", help="also save the raw PNG screenshot here")
    parser.add_argument("--log", help="write the started app's output here")
    parser.add_argument("--example", type=int, default=None,
                        help="example to click (default: none, the first view as a visitor gets it)")
    parser.add_argument("--theta-steps", type=int, default=0,
                        help="θ slider arrow-key presses before the shot (default 0: the model's own θ)")
    parser.add_argument("--width", type=int, default=1280, help="browser viewport width (px)")
    parser.add_argument("--height", type=int, default=1100, help="browser viewport height: the part captured (px)")
    args = parser.parse_args(argv)
    from playwright.sync_api import sync_playwright

    process = None
    url = args.url
    if url is None:
        port = free_port()
        process = start_app(port, args.models, args.log)
        url = f"http://127.0.0.1:{port}/"
        print(f"app answered HTTP 200 after {wait_http_ok(url, 120, process):.1f} s")
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_page(viewport={"width": args.width, "height": args.height})
            result = drive(page, url, timeout_s=180, theta_steps=args.theta_steps, example=args.example)
            print(f"flow done in {result['seconds']:.1f} s; θ: {result['theta_after'] or 'as the model sets it'}")
            page.wait_for_timeout(500)
            png = page.screenshot(full_page=False)
            browser.close()
    finally:
        if process is not None:
            process.terminate()
            process.wait(10)
    if args.png:
        Path(args.png).write_bytes(png)
    jpeg, width, height = jpeg_within(png, args.width)
    Path(args.out).write_text(svg_with_jpeg(jpeg, width, height))
    print(f"wrote {args.out}: {width}×{height} JPEG, {len(base64.b64encode(jpeg)) // 1000} KB base64")


if __name__ == "__main__":
    main()
