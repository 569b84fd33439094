"""The one pipeline (photo → pictures) that the apps and ``python -m explain`` share, and the controls declared once."""
from __future__ import annotations

import io
import json
import shlex

import numpy as np
import pytest
from PIL import Image

from support import SIZE, make_biased_lesion_model, make_tiny_models


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pipeline")
    found = make_tiny_models(folder)
    lean = {"BP/MA": -6, "HM": -6, "HEX": -6, "CWS": -6, "healthy": 6}
    found["healthy"] = make_biased_lesion_model(folder, "tiny-healthy", lean, [0.001, 0.5, 0.5, 0.5, 0.5])
    return found


@pytest.fixture(scope="module")
def analyser(models):
    from appcore import Analyser, ModelCache
    from appcore.catalogue import Catalogue

    return Analyser(ModelCache(capacity=3, catalogue=Catalogue(list(models.values()))), capacity=4)


def photo_file(folder, seed: int = 8):
    from fundus import make_fundus

    path = folder / "eye.png"
    Image.fromarray(make_fundus(SIZE, seed=seed)[0]).save(path)
    return path


@pytest.mark.parametrize("name, target, params", [
    ("tiny-lesions", "all predicted", dict(theta=60, tau=0.4, t=0.5, alpha=0.3, colormap="turbo", outlines=False,
                                           extras=("layercam",))),
    ("tiny-lesions", "class:1", dict(theta=100, tau=0.55, t=0.0, colormap="viridis", compare="gmsm")),
    ("tiny-healthy", "all predicted", dict()),  # a no-disease answer: no regions, in both
    ("tiny-grading", "predicted", dict(theta=200, tau=0.7, t=1.5)),
])
def test_the_recorded_command_draws_the_apps_picture_exactly(analyser, models, tmp_path, name, target, params):
    """The view JSON's reproduce command gives the downloaded panels and maps, pixel for pixel."""
    from appcore import photos
    from appcore.exports import downloads
    from explain.cli import main as explain_main
    from explain.views import ViewParams, render

    photo = photo_file(tmp_path)
    analysis = analyser.analyse(photos.load_photo(photo), name, target)
    chosen = ViewParams.from_config(analysis.config, **params)
    view = render(analysis, chosen)
    made = downloads(analysis, chosen, view, image_name=photo.name)
    record = json.loads(made["eye-view.json"]())
    words = shlex.split(record["reproduce"])
    assert words[3:5] == [name, photo.name]
    folder = next(path for path in models.values() if path.name == name)
    args = [str(folder), str(photo), *words[5:]]
    args[args.index("--out") + 1] = str(tmp_path / "cli")
    assert explain_main(args) == 0
    drawn = np.asarray(Image.open(tmp_path / "cli" / "eye_panel.png").convert("RGB"))
    downloaded = np.asarray(Image.open(io.BytesIO(made["eye-panels.png"]())).convert("RGB"))
    assert drawn.shape == downloaded.shape and np.array_equal(drawn, downloaded)
    maps = np.load(io.BytesIO(made["eye-maps.npy"]()))
    for index, method in enumerate(record["maps_npy"]["order"]):
        assert np.array_equal(np.load(tmp_path / "cli" / f"eye_{method}.npy"), maps[index]), method
    cli_record = json.loads((tmp_path / "cli" / "eye_prediction.json").read_text())
    assert cli_record["regions"] == view.regions


def test_controls_are_declared_once_and_redraw_what_the_registry_says():
    from explain.controls import BY_NAME, CONTROLS
    from explain.views import ViewParams

    assert [c.name for c in CONTROLS] == ["theta", "tau", "t", "alpha", "colormap", "outlines", "compare", "extras"]
    assert BY_NAME["theta"].redraws() == {"guided_gradcam", "crop"}  # the θ crop's panel and the enlarged crop
    assert BY_NAME["tau"].redraws() == {"guided_gradcam", "gmsm"}  # outlines and the lesion mask
    assert BY_NAME["t"].redraws() == {"gmsm"}  # GMSM's own parameter
    assert BY_NAME["compare"].redraws() == frozenset() and BY_NAME["extras"].redraws() == {"layercam"}
    assert {"cam", "gradcam", "layercam", "crop"} <= BY_NAME["alpha"].redraws()
    params = ViewParams(theta=77.0, tau=1, extras=["layercam"])
    assert params.theta == 77 and isinstance(params.theta, int) and params.tau == 1.0 and params.extras == ("layercam",)
    assert params.panels == ("cam", "gradcam", "guided_gradcam", "gmsm", "layercam")
    for bad in (dict(theta=77.5), dict(extras=["lime"]), dict(t=-0.1)):
        with pytest.raises(ValueError):
            ViewParams(**bad)
    config = type("Config", (), {"theta": 48, "tau": 0.35, "t": 0.0})()
    assert (ViewParams.from_config(config).theta, ViewParams.from_config(config).t) == (48, 0.0)


def test_the_command_lines_flags_come_from_the_controls(capsys):
    from explain.cli import main

    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for flag in ("--theta", "--tau", "--t ", "--alpha", "--colormap", "--outlines, --no-outlines"):
        assert flag in text, flag
    with pytest.raises(SystemExit):
        main(["model", "eye.png", "--theta", "300", "--out", "x"])
    assert "theta must be in [0, 255]" in capsys.readouterr().err
