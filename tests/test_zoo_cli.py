"""``zoo.predict`` and the ``python -m zoo`` CLI on tiny saved models and synthetic fundus photos."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import zoo
from fundus import make_fundus
from zoo.cli import main

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> Path:
    rgb, _ = make_fundus(160, seed=3)
    path = tmp_path_factory.mktemp("photos") / "synthetic_fundus.png"
    Image.fromarray(rgb).save(path)
    return path


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory) -> Path:
    """A saved multilabel model (paper 001's FCN head on EfficientNet-Lite0) in a fake assets folder."""
    assets = tmp_path_factory.mktemp("assets")
    torch.manual_seed(0)
    model = zoo.create_model("efficientnet_lite0", paper="001", pretrained=False, input_size=64, name="tiny-lesions",
                             thresholds=[0.0, 1.0, 0.5, 0.5, 0.5], datasets=["IDRiD (CC BY 4.0)"],
                             metrics={"validation": {"auc_macro": 0.5}})
    model.save_pretrained(assets / "tiny-lesions", dtype=torch.float16)
    return assets / "tiny-lesions"


def test_predict_multilabel_reads_thresholds(lesion_model, photo):
    model = zoo.load(lesion_model, device="cpu")
    (result,) = zoo.predict(model, [photo])
    assert result["source"] == str(photo) and result["task"] == "multilabel"
    probs = result["probabilities"]
    assert list(probs) == ["BP/MA", "HM", "HEX", "CWS", "healthy"]
    assert all(0.0 < p < 1.0 for p in probs.values())
    # Threshold 0.0 always fires, threshold 1.0 never does (paper 001's per-class thresholds).
    assert "BP/MA" in result["predicted"] and "HM" not in result["predicted"]
    assert result["predicted"] == [k for k, t in zip(probs, model.config.thresholds) if probs[k] >= t]
    # The same photo as an array gives the same answer; a non-fundus image is flagged.
    (again,) = zoo.predict(model, np.asarray(Image.open(photo)))
    assert again["probabilities"] == pytest.approx(probs, abs=1e-5)
    (grey,) = zoo.predict(model, np.full((96, 96, 3), 128, np.uint8))
    assert any("field of view" in w for w in grey["warnings"])


def test_predict_multiclass_and_grade_regression(photo, tmp_path):
    multiclass = zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64).eval()
    (r,) = zoo.predict(multiclass, [photo])
    assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
    assert r["predicted"] == max(r["probabilities"], key=r["probabilities"].get)
    grader = zoo.create_model("efficientnet_lite0", paper="004", pretrained=False, input_size=64).eval()
    with torch.no_grad():
        grader.head.fc.bias.fill_(2.2)  # every photo → value ≈ 2.2 → grade 2 with cut-offs 0.5/1.5/2.5/3.5
        grader.head.fc.weight.zero_()
    (g,) = zoo.predict(grader, [photo, photo], batch_size=1)[:1]
    assert g["value"] == pytest.approx(2.2, abs=1e-5) and g["grade"] == 2 and g["grade_label"] == "Moderate"
    with pytest.raises(ValueError, match="synthetic.txt"):
        bad = tmp_path / "synthetic.txt"
        bad.write_text("not an image")
        zoo.predict(grader, [bad])


def test_cli_list_json_shows_papers_architectures_and_shipped_models(lesion_model, monkeypatch, capsys):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(lesion_model.parent))
    assert main(["list", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [p["id"] for p in data["papers"]] == ["000", "001", "002", "003", "004"]
    arch_rows = data["architectures"]
    assert {row["paper"] for row in arch_rows} == {"000", "001", "002", "003", "004"}
    pairs = {(row["name"], row["paper"]) for row in arch_rows}
    for pair in [("fusion_ensemble", "000"), ("resnet50_fcn", "001"), ("simple_cnn", "002"),
                 ("inception_resnet_v2", "003"), ("dr_detection_net", "004")]:
        assert pair in pairs
    for row in arch_rows + data["models"]:
        assert {"name", "paper", "task", "labels", "source", "pretrained"} <= set(row)
    (shipped,) = data["models"]
    assert shipped["name"] == "tiny-lesions" and shipped["source"].startswith("shipped")
    assert shipped["task"] == "multilabel" and shipped["pretrained"] == "random"


def test_cli_info_and_predict_json(lesion_model, photo, monkeypatch, capsys):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(lesion_model.parent))
    assert main(["info", "tiny-lesions"]) == 0
    out = capsys.readouterr().out
    info = json.loads(out[: out.index("\nModel card:")])
    assert info["arch"] == "efficientnet_lite0" and info["cam"] == "score_map"
    assert main(["predict", "tiny-lesions", str(photo), "--json", "--device", "cpu"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    expected = zoo.predict(zoo.load(lesion_model, device="cpu"), [photo])[0]
    assert result["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert main(["predict", "tiny-lesions", str(photo)]) == 0
    assert "predicted" in capsys.readouterr().out


@pytest.mark.slow
def test_cli_errors_exit_2_without_traceback(photo, lesion_model, monkeypatch, capsys):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(lesion_model.parent))
    assert main(["predict", "no-such-model", str(photo)]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'no-such-model'" in err and "tiny-lesions" in err
    assert main(["predict", "tiny-lesions", str(photo), "--batch-size", "0"]) == 2
    # The real process: exit status 2, one line, no traceback.
    done = subprocess.run([sys.executable, "-m", "zoo", "info", "no-such-model"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and "unknown model 'no-such-model'" in done.stderr


def test_cli_list_says_what_shipped_models_were_trained_on(lesion_model, tmp_path, monkeypatch, capsys):
    """A trained shipped model reads "trained: <its config's data sets>", not "weights: imagenet"."""
    import shutil

    assets = tmp_path / "assets"
    shutil.copytree(lesion_model, assets / "tiny-lesions")
    torch.manual_seed(0)
    zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=64,
                     name="untrained").save_pretrained(assets / "untrained")
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(assets))
    assert main(["list"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert rows["tiny-lesions"].endswith("trained: IDRiD (CC BY 4.0)") and "weights:" not in rows["tiny-lesions"]
    assert "not trained" in rows["untrained"] and "trained: " not in rows["untrained"]


def write_image(path: Path, rgb) -> Path:
    Image.fromarray(rgb).save(path)
    return path


@pytest.mark.slow
def test_predict_skips_unreadable_and_non_fundus_photos_and_exits_3(lesion_model, photo, tmp_path, monkeypatch,
                                                                      capsys):
    data = pytest.importorskip("skimage.data")
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(lesion_model.parent))
    coffee = write_image(tmp_path / "coffee.png", data.coffee())
    plain = write_image(tmp_path / "plain.png", np.full((96, 96, 3), (200, 90, 40), np.uint8))
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8 not really a jpeg")
    missing = tmp_path / "missing.png"
    args = ["predict", "tiny-lesions", str(coffee), str(broken), str(photo), str(missing), str(plain)]
    assert main(args + ["--device", "cpu", "--batch-size", "2"]) == 3
    captured = capsys.readouterr()
    lines = captured.out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines if not line.startswith(" ")] == [str(photo)]  # only the fundus
    for path in (coffee, plain):
        assert f"{path}: this does not look like a retinal fundus photograph" in captured.err
        assert str(path) not in captured.out
    assert "not dark" in captured.err  # the coffee cup: a round field is fitted, but the table around it is lit
    assert f"skipping {broken}" in captured.err and f"skipping {missing}" in captured.err
    assert "1 of 5 photos classified" in captured.err and "2 not fundus photographs" in captured.err
    assert main(args + ["--json"]) == 3
    results = json.loads(capsys.readouterr().out)
    assert [r["source"] for r in results] == [str(photo)]  # no grade or labels for the skipped photos
    expected = zoo.predict(zoo.load(lesion_model, device="cpu"), [photo])[0]
    assert results[0]["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-6)
    assert main(["predict", "tiny-lesions", str(photo)]) == 0  # every photo classified: 0


def test_predict_accepts_a_folder(lesion_model, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FUNDUS_ZOO_ASSETS", str(lesion_model.parent))
    folder = tmp_path / "photos"
    (folder / "left").mkdir(parents=True)
    paths = [write_image(folder / "b.png", make_fundus(128, seed=1)[0]),
             write_image(folder / "left" / "a.jpg", make_fundus(128, seed=2)[0]),
             write_image(folder / "c.PNG", make_fundus(128, seed=4)[0])]
    (folder / "notes.txt").write_text("not a photo")  # not a photo suffix: not even tried
    (folder / ".hidden").mkdir()
    write_image(folder / ".hidden" / "x.png", make_fundus(128, seed=5)[0])
    extra = write_image(tmp_path / "single.png", make_fundus(128, seed=3)[0])
    assert main(["predict", "tiny-lesions", str(folder), str(extra), "--json"]) == 0
    sources = [r["source"] for r in json.loads(capsys.readouterr().out)]
    assert sources == sorted(str(p) for p in paths) + [str(extra)]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["predict", "tiny-lesions", str(empty), str(extra)]) == 3
    captured = capsys.readouterr()
    assert "no photos" in captured.err and str(extra) in captured.out


@pytest.mark.slow
def test_predict_process_refuses_a_non_fundus_photo(lesion_model, tmp_path):
    wall = write_image(tmp_path / "wall.png", np.full((96, 96, 3), 128, np.uint8))
    env = {**os.environ, "FUNDUS_ZOO_ASSETS": str(lesion_model.parent), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "zoo", "predict", "tiny-lesions", str(wall), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert json.loads(done.stdout) == [] and "does not look like a retinal fundus photograph" in done.stderr


def test_predict_on_real_photos_finds_the_field_of_view():
    from conftest import shared_dataset

    photos = sorted((shared_dataset("hrf") / "images").glob("*.jpg"))[:2]
    model = zoo.create_model("efficientnet_lite0", paper="003", input_size=128).eval()  # ImageNet backbone
    results = zoo.predict(model, photos)
    assert [r["source"] for r in results] == [str(p) for p in photos]
    for r in results:
        assert not any("field of view" in w for w in r["warnings"])
        assert sum(r["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)
