"""The Gradio app end to end through gradio_client: upload → prediction + four maps, sliders without a
network pass, bad inputs, downloads, 8 concurrent clients, offline hub ids, server address.

Tiny EfficientNet-Lite0 models (random weights, 128 px input) saved in a temporary folder stand in for
the shipped defaults; the app is launched in-process on a free port.
"""
from __future__ import annotations

import functools
import json
import re
import shlex
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

SIZE = 128
DEFAULTS = dict(theta=128, tau=0.6, t=1.0, alpha=0.5, colormap="jet", outlines=True, compare="guided_gradcam")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_tiny_models(folder: Path) -> dict[str, Path]:
    """Tiny random-weight zoo models: a multi-label one (paper 001's labels) and a grade regressor."""
    import torch
    import zoo

    torch.manual_seed(0)
    paths = {"multilabel": folder / "tiny-lesions", "grade": folder / "tiny-grading"}
    zoo.create_model("efficientnet_lite0", paper="001", task="multilabel", pretrained=False,
                     input_size=SIZE, name="tiny-lesions").save_pretrained(paths["multilabel"])
    zoo.create_model("efficientnet_lite0", paper="003", task="grade-regression", pretrained=False, input_size=SIZE,
                     labels=["No DR", "Mild", "Moderate", "Severe", "PDR"], name="tiny-grading",
                     ).save_pretrained(paths["grade"])
    return paths


def start_app(tmp: Path, models: list[Path], monkeypatch_env: dict[str, str]):
    """Build the app on the given model folders and launch it in-process; returns (demo, url)."""
    import app

    demo = app.build_demo(models=[str(m) for m in models], example_size=SIZE)
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            max_file_size=app.MAX_FILE_SIZE)
    return demo, url


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """(demo, url, model folders) of an app serving two tiny models, shut down after the module."""
    tmp = tmp_path_factory.mktemp("app")
    mp = pytest.MonkeyPatch()
    mp.setenv("FUNDUS_ZOO_ASSETS", str(tmp / "no-assets"))  # the real defaults stay out of these tests
    mp.setenv("FUNDUS_APP_CACHE", str(tmp / "cache"))
    models = make_tiny_models(tmp)
    demo, url = start_app(tmp, [models["multilabel"], models["grade"]], {})
    yield demo, url, models
    demo.close()
    mp.undo()


@pytest.fixture()
def client(served, tmp_path):
    from gradio_client import Client

    return Client(served[1], verbose=False, download_files=str(tmp_path), analytics_enabled=False)


def model_key(demo, kind: str) -> str:
    return next(value for label, value in demo.fundus_app.menu() if ("lesions" if kind == "multilabel" else "grading") in label)


def analyse(client, path, key, target="predicted", **controls):
    from gradio_client import handle_file

    c = {**DEFAULTS, **controls}
    return client.predict(handle_file(str(path)), key, target, c["theta"], c["tau"], c["t"], c["alpha"], c["colormap"],
                          c["outlines"], c["compare"], api_name="/analyse")


def view(client, key, target="predicted", **controls):
    c = {**DEFAULTS, **controls}
    return client.predict(key, target, c["theta"], c["tau"], c["t"], c["alpha"], c["colormap"], c["outlines"],
                          c["compare"], api_name="/view")


# Output positions of /analyse: session state is hidden from API clients.
PHOTO, MODEL_INPUT, PREPROCESSING, CHART, PREDICTION, STATUS = range(6)
PANELS = slice(6, 10)
CROP, REGIONS, LEGEND, COMPARE = 10, 11, 12, 13


def panel_path(value) -> str:
    return value["value"] if isinstance(value, dict) else value


def direct_probabilities(folder: Path, photo: Path) -> np.ndarray:
    """The model's probabilities computed without the app: load_image → preprocess → forward."""
    import torch
    from fundus import load_image, preprocess

    model = _direct_model(str(folder))
    pre = preprocess(load_image(photo), model.config)
    with torch.no_grad():
        return model.probabilities(model(pre.tensor))[0].numpy()


@functools.lru_cache(maxsize=4)
def _direct_model(folder: str):
    import zoo

    return zoo.load(folder)


def synthetic_photo(folder: Path, seed: int, **options) -> Path:
    from fundus import make_fundus

    rgb, _ = make_fundus(SIZE, seed=seed, **options)
    path = folder / f"fundus-{seed}.png"
    Image.fromarray(rgb).save(path)
    return path


def test_upload_gives_prediction_and_four_panels(served, client, tmp_path):
    demo, _, models = served
    key = model_key(demo, "multilabel")
    photo = synthetic_photo(tmp_path, seed=3)
    out = analyse(client, photo, key, "all predicted")
    expected = direct_probabilities(models["multilabel"], photo)
    got = out[PREDICTION]["probabilities"]
    assert list(got) == ["BP/MA", "HM", "HEX", "CWS", "healthy"]
    np.testing.assert_allclose(list(got.values()), expected, atol=1e-4)
    assert out[PREDICTION]["predicted"] == [lab for lab, p in got.items() if p >= 0.5]
    panels = [np.asarray(Image.open(panel_path(p))) for p in out[PANELS]]
    assert all(p.shape == (SIZE, SIZE, 3) for p in panels)
    # Guided Grad-CAM and GMSM differ from Grad-CAM (CAM equals Grad-CAM for a GAP + linear head).
    assert not np.array_equal(panels[2], panels[1]) and not np.array_equal(panels[3], panels[1])
    captions = [p["label"] for p in out[PANELS]]
    assert [c.split(" ·")[0] for c in captions] == ["CAM", "Grad-CAM", "Guided Grad-CAM", "GMSM"]
    assert all("ms" in c for c in captions)
    assert json.loads(out[CHART]["plot"])["data"][0]["type"] == "bar"
    assert "field of view: found" in out[PREPROCESSING]
    assert out[REGIONS]["crop_box"] and out[REGIONS]["theta"] == 128
    before, after = (np.asarray(Image.open(p)) for p in out[COMPARE])
    assert before.shape == after.shape == (SIZE, SIZE, 3) and not np.array_equal(before, after)


def test_sliders_redraw_without_a_network_pass(served, client, tmp_path):
    demo, _, _ = served
    key = model_key(demo, "multilabel")
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
    assert crops[0].shape == crops[1].shape == (SIZE, SIZE, 3) and not np.array_equal(*crops)
    guided = [np.asarray(Image.open(panel_path(r[2]))) for r in (loose, tight)]
    assert not np.array_equal(*guided)


def test_grading_model_and_target_choice(served, client, tmp_path):
    demo, _, models = served
    photo = synthetic_photo(tmp_path, seed=5)
    out = analyse(client, photo, model_key(demo, "grade"))
    value = float(direct_probabilities(models["grade"], photo)[0])
    pred = out[PREDICTION]
    assert pred["task"] == "grade-regression" and pred["value"] == pytest.approx(value, abs=1e-4)
    assert pred["grade"] == sum(value > c for c in (0.5, 1.5, 2.5, 3.5))
    # A single class of the multi-label model: a different Guided Grad-CAM than the integrated one.
    key = model_key(demo, "multilabel")
    integrated = analyse(client, photo, key, "all predicted")
    single = analyse(client, photo, key, "class:4")
    assert not np.array_equal(np.asarray(Image.open(panel_path(integrated[8]))), np.asarray(Image.open(panel_path(single[8]))))
    # Outlines in paper 001's colours, one per explained label (only labels whose map has a region).
    drawn = re.findall(r"</span>([^<]+)</span>", integrated[LEGEND])
    assert drawn and set(drawn) <= set(integrated[PREDICTION]["predicted"])


@pytest.mark.parametrize("maker, message", [
    (lambda p: p.write_text("this is not a picture"), "not a readable image"),
    (lambda p: p.write_bytes(_jpeg_bytes()[:600]), "(?i)truncated"),
    (lambda p: Image.new("L", (8000, 6400)).save(p, format="PNG"), "too large"),
    (lambda p: p.write_bytes(b"\xff" * 100), "not a readable image"),
], ids=["text", "truncated-jpeg", "over-50-megapixels", "garbage"])
def test_bad_inputs_get_a_message(client, served, tmp_path, maker, message):
    from gradio_client.exceptions import AppError

    path = tmp_path / "upload.png"
    maker(path)
    with pytest.raises(AppError, match=message):
        analyse(client, path, model_key(served[0], "multilabel"))


def test_over_20_megabytes_is_refused(client, served, tmp_path):
    path = tmp_path / "huge.jpg"
    path.write_bytes(_jpeg_bytes() + b"\0" * (21 * 2**20))
    with pytest.raises(Exception, match="(?i)size|large"):
        analyse(client, path, model_key(served[0], "multilabel"))


def _jpeg_bytes() -> bytes:
    import io

    from fundus import make_fundus

    buffer = io.BytesIO()
    Image.fromarray(make_fundus(SIZE, seed=9)[0]).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def test_converted_modes_and_exif_rotation(client, served, tmp_path):
    from fundus import make_fundus

    key = model_key(served[0], "multilabel")
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


def test_no_fundus_field_gives_a_warning_not_a_crash(client, served, tmp_path):
    path = tmp_path / "wall.png"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(90, 110, (SIZE, SIZE, 3), dtype=np.uint8)).save(path)
    out = analyse(client, path, model_key(served[0], "multilabel"))
    assert "field of view: **not found**" in out[PREPROCESSING]
    assert "⚠️" in out[STATUS]
    assert len(out[PANELS]) == 4 and all(panel_path(p) for p in out[PANELS])


def test_downloads_reproduce_the_view(client, served, tmp_path):
    demo = served[0]
    key = model_key(demo, "multilabel")
    photo = synthetic_photo(tmp_path, seed=6)
    analyse(client, photo, key, "all predicted")
    files = client.predict(key, "all predicted", 77, 0.55, 1.5, 0.4, "turbo", False, "gmsm", api_name="/downloads")
    by_suffix = {Path(f).suffix: Path(f) for f in files}
    record = json.loads(by_suffix[".json"].read_text())
    assert record["model"]["id"] == key and record["target"] == "all predicted"
    assert record["parameters"] == dict(theta=77, tau=0.55, t=1.5, alpha=0.4, colormap="turbo", outlines=False,
                                        compare="gmsm")
    assert record["prediction"]["task"] == "multilabel" and record["not_for_clinical_use"] is True
    maps = np.load(by_suffix[".npy"])
    assert maps.shape == (4, SIZE, SIZE) and maps.dtype == np.float32
    assert np.nanmin(maps) >= 0 and np.nanmax(maps) <= 1
    # The recorded command reproduces the downloaded maps with `python -m explain`.
    from explain.cli import main as explain_main

    words = shlex.split(record["reproduce"])
    assert words[:3] == ["python", "-m", "explain"] and record["image"]["name"] == photo.name
    args = words[3:]
    args[1] = str(photo)
    args[args.index("--out") + 1] = str(tmp_path / "reproduced")
    assert explain_main(args) == 0
    for index, method in enumerate(record["maps_npy"]["order"]):
        np.testing.assert_allclose(np.load(tmp_path / "reproduced" / f"{method}.npy"), maps[index], atol=1e-5)
    grid = np.asarray(Image.open(by_suffix[".png"]))
    assert grid.shape[1] == 5 * SIZE and grid.shape[2] == 3


@pytest.mark.slow
def test_eight_concurrent_clients_get_their_own_results(served, tmp_path):
    import torch
    from gradio_client import Client

    demo, url, models = served
    key = model_key(demo, "multilabel")
    model, _ = demo.fundus_app.analyser.models.get(key)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    photos = [synthetic_photo(tmp_path, seed=100 + i) for i in range(8)]
    expected = [direct_probabilities(models["multilabel"], p) for p in photos]
    start = threading.Barrier(8)

    def one_user(i: int):
        client = Client(url, verbose=False, download_files=str(tmp_path / f"user{i}"), analytics_enabled=False)
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


def test_hub_id_that_cannot_be_had_offline(client):
    from gradio_client.exceptions import AppError

    with pytest.raises(AppError, match="offline"):
        client.predict("nobody-here/no-such-model", api_name="/load_hub_model")
    with pytest.raises(AppError, match="org/name"):
        client.predict("not a repo id", api_name="/load_hub_model")


def test_server_address_follows_space_and_port(monkeypatch):
    import app

    for name in ("SPACE_ID", "PORT", "GRADIO_SERVER_PORT", "GRADIO_SERVER_NAME"):
        monkeypatch.delenv(name, raising=False)
    assert app.server_address() == ("127.0.0.1", 7860)
    monkeypatch.setenv("GRADIO_SERVER_PORT", "8123")
    assert app.server_address() == ("127.0.0.1", 8123)
    monkeypatch.setenv("PORT", "9001")
    monkeypatch.setenv("SPACE_ID", "someone/fundus-cam-zoo")
    assert app.server_address() == ("0.0.0.0", 9001)


def test_switching_model_and_target_keeps_the_session_photo(served, client, tmp_path):
    demo, _, models = served
    photo = synthetic_photo(tmp_path, seed=12)
    analyse(client, photo, model_key(demo, "multilabel"), "all predicted")
    grade_key = model_key(demo, "grade")
    menu, card, theta, tau, t = client.predict(grade_key, api_name="/select_model")
    assert [c[1] for c in menu["choices"]] == ["predicted"] and "Not for clinical use" in card
    c = DEFAULTS
    out = client.predict(grade_key, "predicted", c["theta"], c["tau"], c["t"], c["alpha"], c["colormap"], c["outlines"],
                         c["compare"], api_name="/explain_target")  # no upload: the session's photo is reused
    assert out[PREDICTION]["value"] == pytest.approx(float(direct_probabilities(models["grade"], photo)[0]), abs=1e-4)
