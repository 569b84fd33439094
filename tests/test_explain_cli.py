"""``python -m explain`` (one photo) and ``python -m explain evaluate`` on generated fixtures + real data."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import shared_dataset

zoo = pytest.importorskip("zoo")
fundus = pytest.importorskip("fundus")
from explain.cli import lesion_truth, main  # noqa: E402

SIZE = 64  # model input side: tiny, the test is about the command's mechanics


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("model")
    model = zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=SIZE)
    model.save_pretrained(folder)
    return folder


def write_photo(path, seed=0, lesions=("HE", "EX")):
    rgb, info = fundus.make_fundus(128, seed=seed, lesions={kind: 3 for kind in lesions})
    Image.fromarray(rgb).save(path)
    return rgb, info


def test_explain_one_photo_writes_maps_overlays_panel(model_dir, tmp_path, capsys):
    photo = tmp_path / "eye.png"
    write_photo(photo)
    out = tmp_path / "out"
    code = main([str(model_dir), str(photo), "--methods", "cam,gradcam,guided-gradcam,gmsm", "--t", "0",
                 "--theta", "100", "--tau", "0.5", "--out", str(out), "--on-original"])
    printed = capsys.readouterr().out
    assert code == 0
    for name in ("cam", "gradcam", "guided_gradcam", "gmsm"):
        saliency = np.load(out / f"{name}.npy")
        assert saliency.shape == (SIZE, SIZE) and 0 <= saliency.min() and saliency.max() <= 1
        assert cv2.imread(str(out / f"{name}_overlay.png")).shape == (SIZE, SIZE, 3)
        assert cv2.imread(str(out / f"{name}_overlay_original.png")).shape == (128, 128, 3)
    assert cv2.imread(str(out / "panel.png")) is not None and (out / "attention_crop.png").is_file()
    assert "No DR:" in printed and "explained target(s):" in printed and "time explain (one pass):" in printed
    assert main([str(model_dir), str(photo), "--methods", "lime", "--out", str(out)]) == 2
    assert main([str(model_dir), str(photo), "--target", "Blindness", "--out", str(out)]) == 2


def test_lesion_truth_lands_where_the_lesions_are(model_dir, tmp_path):
    from fundus.datasets import load_dataset

    data = make_yolo(tmp_path / "boxes", count=1)
    sample = load_dataset("yolo", data).samples[0]
    rgb = fundus.load_image(sample.image)
    model = zoo.load(str(model_dir), device="cpu")
    pre = fundus.preprocess(rgb, model.config)
    truth = lesion_truth(sample, "EX", "yolo", pre)
    assert truth.shape == (SIZE, SIZE) and truth.any()
    back = pre.to_original(truth.astype(np.float32), rgb.shape) > 0.5
    drawn = np.zeros(rgb.shape[:2], bool)
    for kind, x0, y0, x1, y1 in sample.boxes:
        if kind == "hard_exudates":
            h, w = rgb.shape[:2]
            drawn[int(y0 * h):int(np.ceil(y1 * h)), int(x0 * w):int(np.ceil(x1 * w))] = True
    assert (back & drawn).sum() / back.sum() > 0.5  # the exudate boxes land where they were drawn
    assert not lesion_truth(sample, "MA", "yolo", pre).any()  # DIARETDB1 bundles MA into haemorrhage


def make_idrid(root, count=2):
    base = root / "A. Segmentation"
    images = base / "1. Original Images" / "a. Training Set"
    truths = base / "2. All Segmentation Groundtruths" / "a. Training Set"
    folders = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
               "SE": "4. Soft Exudates", "OD": "5. Optic Disc"}
    for folder in folders.values():
        (truths / folder).mkdir(parents=True)
    images.mkdir(parents=True)
    for index in range(count):
        stem = f"IDRiD_{index + 1:02d}"
        rgb, info = write_photo(images / f"{stem}.jpg", seed=index)
        for kind, mask in info["masks"].items():
            Image.fromarray(mask.astype(np.uint8) * 255).convert("1").save(truths / folders[kind] / f"{stem}_{kind}.tif")
    return root


def make_yolo(root, count=2):
    images = root / "images"
    images.mkdir(parents=True)
    (root / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    codes = {"EX": 1, "HE": 2}
    for index in range(count):
        rgb, info = write_photo(images / f"{index:04d}.jpg", seed=10 + index)
        height, width = rgb.shape[:2]
        lines = []
        for kind, x0, y0, x1, y1 in info["boxes"]:
            cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            lines.append(f"{codes[kind]} {cx:.5f} {cy:.5f} {(x1 - x0) / width:.5f} {(y1 - y0) / height:.5f}")
        (images / f"{index:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("fmt", ["idrid-seg", "yolo"])
def test_evaluate_json_and_report(model_dir, tmp_path, capsys, fmt):
    data = make_idrid(tmp_path / "idrid") if fmt == "idrid-seg" else make_yolo(tmp_path / "boxes")
    report = tmp_path / "report.html"
    code = main(["evaluate", str(model_dir), "--data", str(data), "--format", fmt, "--lesions", "HE,EX",
                 "--methods", "gradcam,gmsm", "--t", "0", "--json", "--report", str(report)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"gradcam", "gmsm", "baseline-gaussian", "baseline-uniform"}
    for method, per_lesion in result.items():
        assert set(per_lesion) == {"HE", "EX"}, method
        for row in per_lesion.values():
            assert row["images"] == 2
            for key in ("pointing_game", "energy_pointing_game", "best_iou", "best_tau"):
                assert 0.0 <= row[key] <= 1.0
    # Chance baseline: the uniform map's energy share is the lesion share of the field of view (< 1).
    assert 0 < result["baseline-uniform"]["EX"]["energy_pointing_game"] < 0.5
    html = report.read_text()
    assert "plotly" in html and "baseline-uniform" in html
    assert main(["evaluate", str(model_dir), "--data", str(data), "--format", fmt, "--lesions", "XX"]) == 2


@pytest.mark.slow
def test_evaluate_on_two_real_idrid_images(model_dir, tmp_path, capsys):
    root = shared_dataset("idrid-seg-dev")
    code = main(["evaluate", str(model_dir), "--data", str(root), "--format", "idrid-seg", "--lesions", "EX,HE",
                 "--methods", "gradcam", "--limit", "2", "--json", "--report", str(tmp_path / "r.html")])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["gradcam"]["EX"]["images"] == 2 and 0 <= result["gradcam"]["EX"]["best_iou"] <= 1
