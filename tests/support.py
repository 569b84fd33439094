"""Shared test helpers (imported as ``from support import …``: pytest puts tests/ on ``sys.path``): a free
port, the Gradio app launched in-process or as ``python app.py``, the wait for an HTTP 200; for the app tests
(test_app*.py, test_browser.py, test_streamlit_app.py) tiny models, synthetic photos and a fake hub cache."""
from __future__ import annotations

import functools
import json
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from appcore.launch import free_port, wait_http_ok  # noqa: F401 - the tests import them from here
from appcore.launch import start_app as start_app_process  # noqa: F401 - python app.py, as a user starts it

REPO = Path(__file__).resolve().parents[1]
SIZE = 128
DEFAULTS = dict(theta=128, tau=0.6, t=1.0, alpha=0.5, colormap="jet", outlines=True, compare="guided_gradcam")


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


def make_biased_lesion_model(folder: Path, name: str, biases: dict[str, float], thresholds: list[float]) -> Path:
    """A tiny multi-label model with paper 001's labels whose outputs lean where ``biases`` say: each label's
    score map gets that bias (logits of about ±bias), so that the decision does not depend on the photo."""
    import torch
    import zoo

    torch.manual_seed(1)
    model = zoo.create_model("efficientnet_lite0", paper="001", task="multilabel", pretrained=False, input_size=SIZE,
                             name=name, thresholds=thresholds)
    with torch.no_grad():
        model.head.score.weight.mul_(0.01)  # the maps keep their shape, the outputs their bias
        for index, label in enumerate(model.config.labels):
            model.head.score.bias[index] = float(biases.get(label, 0.0))
    model.save_pretrained(folder / name)
    return folder / name


def make_grader_at(folder: Path, name: str, value: float) -> Path:
    """A tiny grade regressor whose value is about ``value`` for any photo (the head's weights scaled down)."""
    import torch
    import zoo

    torch.manual_seed(2)
    model = zoo.create_model("efficientnet_lite0", paper="003", task="grade-regression", pretrained=False,
                             input_size=SIZE, labels=["No DR", "Mild", "Moderate", "Severe", "PDR"], name=name)
    with torch.no_grad():
        model.head.fc.weight.mul_(1e-3)
        model.head.fc.bias.fill_(value)
    model.save_pretrained(folder / name)
    return folder / name


def make_broken_model(folder: Path) -> Path:
    """A folder with a valid config.json but weights that are not a safetensors file."""
    import zoo

    zoo.create_model("efficientnet_lite0", paper="003", task="multiclass", pretrained=False, input_size=SIZE,
                     name="tiny-broken").save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    return folder


def put_in_hub_cache(model_folder: Path, repo_id: str,
                     files: tuple[str, ...] = ("config.json", "model.safetensors", "README.md")) -> Path:
    """Make ``repo_id`` a cached hub model (its ``main`` snapshot holds ``model_folder``'s ``files``), so that an
    offline ``snapshot_download(repo_id)`` finds it. The cache is the test run's private HF_HOME."""
    from huggingface_hub import constants

    repo = Path(constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True, exist_ok=True)
    for name in files:
        (snapshot / name).write_bytes((model_folder / name).read_bytes())
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return snapshot


def fake_shipped(folder: Path, papers: dict[str, str]) -> Path:
    """An assets folder of "shipped models" as the model menu sees them: {name: paper}, a config.json each and no
    weights (the menu never loads a model)."""
    for name, paper in papers.items():
        (folder / name).mkdir(parents=True)
        (folder / name / "config.json").write_text(json.dumps({"name": name, "paper": paper}))
    return folder


def start_app(tmp: Path, models: list[Path], monkeypatch_env: dict[str, str] | None = None):
    """Build the app on the given model folders and launch it in-process; returns (demo, url)."""
    import app

    demo = app.build_demo(models=[str(m) for m in models])
    _, url, _ = demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), quiet=True,
                            **app.LAUNCH_OPTIONS)
    return demo, url


def synthetic_photo(folder: Path, seed: int, **options) -> Path:
    from fundus import make_fundus

    rgb, _ = make_fundus(SIZE, seed=seed, **options)
    path = folder / f"fundus-{seed}.png"
    Image.fromarray(rgb).save(path)
    return path


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


def panel_path(value) -> str | None:
    """The file of an image output (a plain path, or an update dict with its value)."""
    if isinstance(value, dict):
        value = value.get("value")
        return value.get("path") if isinstance(value, dict) else value
    return value


def menu_of(dropdown_update: dict) -> list[str]:
    """The values of a Model dropdown update returned to an API client."""
    return [choice[1] for choice in dropdown_update["choices"]]


def page_config(url: str) -> str:
    """The page's /config (what a browser gets on load), as text."""
    with urllib.request.urlopen(url.rstrip("/") + "/config", timeout=10) as response:
        return json.dumps(json.loads(response.read().decode()))


def make_referenced_model(folder: Path, name: str = "tiny-ood") -> Path:
    """A tiny multi-label model (64 px input) with an unlike-training reference (``zoo.ood``) fitted on generated
    fundus photos of ``SIZE`` px (``unlike_photo`` is far from them, ``make_fundus`` photos are not)."""
    import warnings

    import torch
    import zoo
    from fundus import make_fundus, preprocess
    from zoo.ood import fit_reference, pooled_features

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("efficientnet_lite0", task="multilabel", labels=["Normal", "Diabetes"],
                                 pretrained=False, head="gap_linear", input_size=64, name=name).eval()

    def features(seeds) -> np.ndarray:
        with torch.no_grad(), pooled_features(model) as found:
            for seed in seeds:
                model(preprocess(make_fundus(SIZE, seed=seed)[0], model.config).tensor)
        return torch.cat(found).numpy()

    fit_reference(model, features(range(30)), features(range(30, 50)), quantile=0.99)
    model.save_pretrained(folder / name)
    return folder / name


def unlike_photo(folder: Path, seed: int) -> Path:
    """A generated fundus photo under a strong gamma (2.2: darker, more contrast, like an underexposed camera): a
    fundus photograph to both stages of the fundus check (content likeness ~1.0), but far from the photos
    ``make_referenced_model``'s reference was fitted on (distance ~3 against a threshold ~1.2). Swapping red and
    green did that too, until the content stage learnt that green fields are rarely fundus photos."""
    from fundus import make_fundus

    rgb = (255 * (make_fundus(SIZE, seed=seed)[0] / 255.0) ** 2.2).astype(np.uint8)
    path = folder / f"unlike-{seed}.png"
    Image.fromarray(np.ascontiguousarray(rgb)).save(path)
    return path
