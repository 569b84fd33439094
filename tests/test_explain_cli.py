"""``python -m explain`` (one photo) and ``python -m explain evaluate`` on generated fixtures + real data."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from conftest import REPO, shared_dataset

zoo = pytest.importorskip("zoo")
fundus = pytest.importorskip("fundus")
from explain.cli import BASELINES as BASELINE_NAMES, lesion_truth, main  # noqa: E402

SIZE = 64  # model input side: tiny, the test is about the command's mechanics


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    import torch

    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(2)  # random weights that grade the test photo 'Moderate': a disease answer, so regions are drawn
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
    for name in ("cam", "gradcam", "guided_gradcam", "gmsm"):  # every output is prefixed with the photo's name
        saliency = np.load(out / f"eye_{name}.npy")
        assert saliency.shape == (SIZE, SIZE) and saliency.min() >= 0 and saliency.max() <= 1
        assert cv2.imread(str(out / f"eye_{name}_overlay.png")).shape == (SIZE, SIZE, 3)
        assert cv2.imread(str(out / f"eye_{name}_overlay_original.png")).shape == (128, 128, 3)
    assert cv2.imread(str(out / "eye_panel.png")) is not None and (out / "eye_attention_crop.png").is_file()
    assert not (out / "cam.npy").exists() and not (out / "panel.png").exists()
    assert "No DR:" in printed and "explained target(s):" in printed and "time explain (one pass):" in printed
    record = json.loads((out / "eye_prediction.json").read_text())
    assert record["image"] == str(photo) and record["model"]["task"] == "multiclass"
    probabilities = record["prediction"]["probabilities"]
    assert list(probabilities) == list(zoo.load(str(model_dir)).config.labels)
    assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-5)
    assert record["prediction"]["predicted"] == max(probabilities, key=probabilities.get)
    assert record["parameters"]["theta"] == 100 and record["parameters"]["tau"] == 0.5
    assert record["not_for_clinical_use"] is True and "eye_panel.png" in record["files"]
    assert all((out / name).is_file() for name in record["files"])
    assert main([str(model_dir), str(photo), "--methods", "lime", "--out", str(tmp_path / "lime")]) == 2
    assert main([str(model_dir), str(photo), "--target", "Blindness", "--out", str(tmp_path / "blind")]) == 2


def explained_by_cli(model: Path, photo: Path, out: Path) -> dict:
    assert main([str(model), str(photo), "--target", "all-predicted", "--methods", "gradcam", "--out", str(out)]) == 0
    return json.loads((out / f"{photo.stem}_prediction.json").read_text())


@pytest.mark.slow
def test_all_predicted_never_explains_a_no_disease_label(tmp_path, capsys):
    """`--target all-predicted` explains the model's decided disease labels (the app's exclusive decision,
    FundusNet.decide), never healthy / normal / No DR / N, even where they reach their thresholds."""
    import torch

    from appcore import Analyser, ModelCache
    from appcore.catalogue import Catalogue
    from support import make_biased_lesion_model
    from fundus.datasets.labels import is_no_disease

    photo = tmp_path / "eye.png"
    write_photo(photo, seed=4)
    # healthy and BP/MA over their thresholds (BP/MA at ~12 %, over a low threshold that is above
    # fundus.tasks.FINDING_FLOOR, so that the fitted threshold decides)
    lean = {"BP/MA": -2, "HM": -6, "HEX": -6, "CWS": -6, "healthy": 6}
    thresholds = [0.06, 0.5, 0.5, 0.5, 0.5]
    disease = make_biased_lesion_model(tmp_path, "tiny-disease", {**lean, "HM": 8}, thresholds)
    healthy = make_biased_lesion_model(tmp_path, "tiny-healthy", lean, thresholds)
    # Three labels reach their thresholds; the decision keeps the lesion side (HM is further above its own).
    record = explained_by_cli(disease, photo, tmp_path / "disease")
    assert record["prediction"]["predicted"] == ["BP/MA", "HM"]
    assert record["explained_targets"] == ["HM", "BP/MA"]  # most probable first; "healthy" is overruled
    # The same classes as the app's "all predicted", in the same order.
    analyser = Analyser(ModelCache(catalogue=Catalogue([disease])), capacity=1)
    rgb = fundus.load_image(photo)
    assert analyser.analyse(rgb, "tiny-disease", "all predicted").explanation.targets[0] == [1, 0]
    # The model answers "healthy": the CLI explains the most probable disease label, not the answer itself.
    record = explained_by_cli(healthy, photo, tmp_path / "healthy")
    assert record["prediction"]["predicted"] == ["healthy"]
    probabilities = record["prediction"]["probabilities"]
    assert record["explained_targets"] == [max(["BP/MA", "HM", "HEX", "CWS"], key=probabilities.get)]
    # A multi-class grader whose answer is "No DR": the most probable DR grade, never "No DR" (nor every grade).
    torch.manual_seed(0)
    grader = zoo.create_model("efficientnet_lite0", paper="003", pretrained=False, input_size=SIZE, name="no-dr")
    with torch.no_grad():
        grader.head.fc.weight.mul_(1e-3)
        grader.head.fc.bias.copy_(torch.tensor([6.0, 1.0, 2.0, 0.0, 0.0]))
    grader.save_pretrained(tmp_path / "no-dr")
    record = explained_by_cli(tmp_path / "no-dr", photo, tmp_path / "grades")
    assert record["prediction"]["predicted"] == "No DR" and record["explained_targets"] == ["Moderate"]
    assert not any(is_no_disease(label) for label in record["explained_targets"])
    assert "explained target(s): Moderate" in capsys.readouterr().out


def test_a_second_photo_does_not_overwrite_the_first(model_dir, tmp_path, capsys):
    """Two photos into one --out (in one run, or two with --overwrite): each keeps its own maps, panel and
    prediction."""
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first, second, twin = tmp_path / "a" / "left.png", tmp_path / "a" / "right.png", tmp_path / "b" / "right.png"
    write_photo(first, seed=1)
    write_photo(second, seed=2)
    write_photo(twin, seed=3)
    out = tmp_path / "out"
    assert main([str(model_dir), str(first), "--methods", "gradcam", "--out", str(out)]) == 0
    kept = np.load(out / "left_gradcam.npy")
    assert main([str(model_dir), str(second), str(twin), "--methods", "gradcam", "--out", str(out),
                 "--overwrite"]) == 0
    capsys.readouterr()
    np.testing.assert_array_equal(np.load(out / "left_gradcam.npy"), kept)  # the first run's files are intact
    for prefix, photo in (("left", first), ("right", second), ("right-2", twin)):  # same name in one run: -2
        record = json.loads((out / f"{prefix}_prediction.json").read_text())
        assert record["image"] == str(photo) and (out / f"{prefix}_panel.png").is_file()
    assert not np.array_equal(np.load(out / "right_gradcam.npy"), kept)


@pytest.mark.slow
def test_a_folder_with_files_is_refused_unless_overwrite(model_dir, tmp_path, capsys):
    """A second run into the same --out is refused (exit status 2, nothing written); with --overwrite the photo's
    earlier outputs go first, so a stale file of the first run (its θ crop) does not stay among the new ones."""
    import subprocess
    import sys

    photo = tmp_path / "eye.png"
    write_photo(photo)
    out = tmp_path / "out"
    assert main([str(model_dir), str(photo), "--methods", "gradcam,guided-gradcam", "--out", str(out)]) == 0
    assert (out / "eye_attention_crop.png").is_file() and (out / "eye_guided_gradcam.npy").is_file()
    (out / "mine.txt").write_text("the user's own file")
    before = {p.name: p.stat().st_mtime_ns for p in out.iterdir()}
    capsys.readouterr()
    assert main([str(model_dir), str(photo), "--methods", "cam", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"--out {out} is not empty" in err and "--overwrite" in err and "Traceback" not in err
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing written, nothing removed
    # --overwrite: only this run's files for the photo, plus files that are not this command's outputs.
    assert main([str(model_dir), str(photo), "--methods", "cam", "--out", str(out), "--overwrite"]) == 0
    record = json.loads((out / "eye_prediction.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted([*record["files"], "mine.txt"])
    assert not (out / "eye_attention_crop.png").exists() and not (out / "eye_guided_gradcam.npy").exists()
    # A file given as --out is refused too; the real process exits with 2 and the help names the flag.
    assert main([str(model_dir), str(photo), "--out", str(out / "mine.txt")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    done = subprocess.run([sys.executable, "-m", "explain", str(model_dir), str(photo), "--out", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "is not empty" in done.stderr and "Traceback" not in done.stderr
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "--overwrite" in capsys.readouterr().out


def test_photos_that_are_not_fundus_photos_get_no_prediction(model_dir, tmp_path, capsys):
    data = pytest.importorskip("skimage.data")
    coffee, wall, unreadable, eye = (tmp_path / n for n in ("coffee.png", "wall.png", "notes.png", "eye.png"))
    Image.fromarray(data.coffee()).save(coffee)
    Image.fromarray(np.full((128, 128, 3), (200, 90, 40), np.uint8)).save(wall)
    unreadable.write_text("not an image")
    write_photo(eye)
    out = tmp_path / "out"
    code = main([str(model_dir), str(coffee), str(wall), str(unreadable), str(eye), "--methods", "gradcam",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 3  # non-zero at the end; the fundus photo was still explained
    assert sorted(p.name.split("_")[0] for p in out.iterdir()) == ["eye"] * len(list(out.iterdir()))
    assert (out / "eye_prediction.json").is_file()
    for photo in (coffee, wall):
        assert f"{photo}: this does not look like a retinal fundus photograph" in captured.err
        assert str(photo) not in captured.out  # no prediction printed for it
    assert "not dark" in captured.err  # the coffee cup's reason
    assert f"{unreadable}: cannot read it" in captured.err and "1 of 4 photos explained" in captured.err
    assert "photo: " + str(eye) in captured.out


@pytest.mark.slow
def test_the_real_process_refuses_a_non_fundus_photo(model_dir, tmp_path):
    import subprocess
    import sys

    wall = tmp_path / "wall.png"
    Image.fromarray(np.full((128, 128, 3), 128, np.uint8)).save(wall)
    done = subprocess.run([sys.executable, "-m", "explain", str(model_dir), str(wall), "--out", str(tmp_path / "o")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 3 and "Traceback" not in done.stderr
    assert "does not look like a retinal fundus photograph" in done.stderr and "No DR" not in done.stdout
    assert not any((tmp_path / "o").iterdir())


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
    # Box class names are read by the alias table training reads its labels by (fundus.datasets.labels).
    from dataclasses import replace

    respelled = replace(sample, boxes=[("HEX" if kind == "hard_exudates" else kind, *box) for kind, *box in sample.boxes])
    assert np.array_equal(lesion_truth(respelled, "EX", "yolo", pre), truth)


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


def make_yolo(root, count=2, disc=None):
    """A YOLO layout of generated photos with their lesion boxes; ``disc``: an optic_disc box (cx, cy, w, h),
    normalised, in every photo."""
    images = root / "images"
    images.mkdir(parents=True)
    (root / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    codes = {"EX": 1, "HE": 2}
    for index in range(count):
        rgb, info = write_photo(images / f"{index:04d}.jpg", seed=10 + index)
        height, width = rgb.shape[:2]
        lines = [] if disc is None else ["0 " + " ".join(f"{v:.5f}" for v in disc)]
        for kind, x0, y0, x1, y1 in info["boxes"]:
            cx, cy = (x0 + x1) / 2 / width, (y0 + y1) / 2 / height
            lines.append(f"{codes[kind]} {cx:.5f} {cy:.5f} {(x1 - x0) / width:.5f} {(y1 - y0) / height:.5f}")
        (images / f"{index:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.mark.parametrize("fmt", ["idrid-seg", "yolo"])
def test_evaluate_json_and_report(model_dir, tmp_path, capsys, fmt):
    data = make_idrid(tmp_path / "idrid") if fmt == "idrid-seg" else make_yolo(tmp_path / "boxes")
    report = tmp_path / "report.html"
    code = main(["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(data), "--format", fmt, "--lesions", "HE,EX",
                 "--methods", "gradcam,gmsm", "--t", "0", "--json", "--html", str(report)])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {"gradcam", "gmsm", "spot-filter", "baseline-gaussian", "baseline-uniform"}
    for method, per_lesion in result.items():
        assert set(per_lesion) == {"HE", "EX"}, method
        for row in per_lesion.values():
            assert row["images"] == 2
            for key in ("pointing_game", "energy_pointing_game", "pr_auc", "best_iou", "best_tau"):
                assert 0.0 <= row[key] <= 1.0
    # Chance baseline: the uniform map's energy share is the lesion share of the field of view (< 1).
    assert 0 < result["baseline-uniform"]["EX"]["energy_pointing_game"] < 0.5
    html = report.read_text()
    assert "plotly" in html and "baseline-uniform" in html
    assert main(["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(data), "--format", fmt, "--lesions", "XX"]) == 2


@pytest.mark.slow
def test_evaluate_writes_html_only_where_asked(model_dir, tmp_path, capsys, monkeypatch):
    data = make_yolo(tmp_path / "boxes")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    common = ["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(data), "--format", "yolo", "--lesions", "HE,EX",
              "--methods", "gradcam", "--t", "0"]
    assert main(common) == 0
    assert "no HTML report" in capsys.readouterr().out
    assert list(work.iterdir()) == []  # nothing written into the working directory unasked
    assert main(common + ["--json"]) == 0 and list(work.iterdir()) == []
    assert main(common + ["--out", str(tmp_path / "results")]) == 0
    assert (tmp_path / "results" / "explain-evaluate.html").is_file() and list(work.iterdir()) == []
    assert main(common + ["--html", str(tmp_path / "mine.html")]) == 0 and (tmp_path / "mine.html").is_file()


def test_report_figure_autoscales_iou_and_keeps_one_colour_per_method():
    from explain.cli import report_figure
    from explain.metrics import LocalisationSummary

    class Small(LocalisationSummary):  # IoU curves all under 0.05, as real saliency maps give
        def curves(self):
            taus = len(self.taus)
            return {(m, lesion): [0.01 * (i + 1) * (j + 1) / taus for j in range(taus)]
                    for i, m in enumerate(["gradcam", "gmsm", "baseline-uniform"]) for lesion in ("EX", "HE", "MA")}

    figure = report_figure(Small(taus=(0.2, 0.4, 0.6), tolerance=15), "t")
    for axis in ("yaxis", "yaxis2", "yaxis3"):
        assert figure.layout[axis].range is None and figure.layout[axis].autorange is True
    colours: dict[str, set] = {}
    for trace in figure.data:
        colours.setdefault(trace.name, set()).add(trace.line.color)
        assert trace.marker.color == trace.line.color
    assert all(len(c) == 1 for c in colours.values())  # one colour per method in every panel
    assert len({next(iter(c)) for c in colours.values()}) == 3  # and different methods differ
    assert sorted(t.name for t in figure.data if t.showlegend) == ["baseline-uniform", "gmsm", "gradcam"]
    assert all(t.line.dash == "dot" for t in figure.data if t.name == "baseline-uniform")


@pytest.mark.slow
def test_evaluate_on_two_real_idrid_images(model_dir, tmp_path, capsys):
    root = shared_dataset("idrid-seg-dev")
    code = main(["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(root), "--format", "idrid-seg", "--lesions", "EX,HE",
                 "--methods", "gradcam", "--limit", "2", "--json", "--html", str(tmp_path / "r.html")])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["gradcam"]["EX"]["images"] == 2 and 0 <= result["gradcam"]["EX"]["best_iou"] <= 1


# -- the optic disc and the split of `evaluate` ---------------------------------------------------------------------

DISC = (0.3, 0.5, 0.14, 0.14)  # cx, cy, w, h: left of the centre, where a right eye's disc lies
MIRRORED = (0.7, 0.5, 0.14, 0.14)  # the same box on the other side: no part of the disc


def test_tau_patches_on_the_optic_disc():
    from explain.metrics import boxes_to_mask, optic_disc_patches

    disc = boxes_to_mask([(0.2, 0.4, 0.4, 0.6)], (100, 100))
    on, off = np.zeros((100, 100), np.float32), np.zeros((100, 100), np.float32)
    on[45:55, 25:35] = 1.0
    off[45:55, 65:75] = 1.0
    assert optic_disc_patches(on, disc, tau=0.5) == (1, 1)
    assert optic_disc_patches(on + off, disc, tau=0.5) == (2, 1)
    grazing = np.zeros((100, 100), np.float32)
    grazing[45:55, 38:50] = 1.0  # overlaps the box's edge, centred outside it
    assert optic_disc_patches(grazing, disc, tau=0.5) == (1, 0)
    assert optic_disc_patches(np.ones((100, 100), np.float32), disc, tau=0.5) == (1, 0)  # the whole field, centred
    fov = np.zeros((100, 100), bool)
    fov[:, 50:] = True
    assert optic_disc_patches(off, disc, tau=0.5, fov_mask=fov) is None  # the disc is outside the field


@pytest.mark.slow
@pytest.mark.parametrize("place, share", [(DISC, 1.0), (MIRRORED, 0.0)])
def test_evaluate_reports_the_share_of_tau_patches_on_the_optic_disc(model_dir, tmp_path, capsys, monkeypatch,
                                                                      place, share):
    """The maps' energy placed on the optic_disc box (share 1) or on the mirrored box (share 0): text, JSON, HTML."""
    from explain.explainer import Explanation
    from explain.metrics import boxes_to_mask

    data = make_yolo(tmp_path / "boxes", count=3, disc=DISC)
    prepared = []
    real_preprocess = fundus.preprocess
    monkeypatch.setattr(fundus, "preprocess", lambda rgb, config: prepared.append(real_preprocess(rgb, config)) or prepared[-1])
    cx, cy, w, h = place

    def placed(self, t=None, **_):
        pre = prepared[-1]
        box = boxes_to_mask([(cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)], pre.original_shape[:2])
        return {m: pre.to_model(box).astype(np.float32) for m in self.methods}

    monkeypatch.setattr(Explanation, "maps", placed)
    common = ["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(data), "--format", "yolo", "--lesions", "HE,EX",
              "--methods", "gradcam,gmsm,guided-gradcam", "--t", "0"]
    assert main(common + ["--json", "--html", str(tmp_path / "r.html")]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    disc = result["gmsm"]["optic_disc"]
    assert disc["photos"] == 3 and disc["patches"] == 3 and disc["tau"] == zoo.load(str(model_dir)).config.tau
    assert disc["patch_share"] == share and disc["photo_share"] == share
    assert result["guided_gradcam"]["optic_disc"]["patch_share"] == share  # its outlines are τ patches too
    assert "optic_disc" not in result["gradcam"]  # no region tool at τ
    for baseline in ("baseline-gaussian", "baseline-uniform"):  # centred: never on a disc left of the centre
        assert result[baseline]["optic_disc"]["photo_share"] == 0.0 and set(result[baseline]) >= {"HE", "EX"}
    assert set(result["gmsm"]) == {"HE", "EX", "optic_disc"}
    report = (tmp_path / "r.html").read_text()
    assert "Optic disc" in report and f"<td>{share:.3f}</td>" in report and "baseline-gaussian" in report
    assert main(common + ["--tau", "0.3"]) == 0
    printed = capsys.readouterr().out
    assert "optic disc" in printed and "all photos" in printed
    gmsm_row = next(line for line in printed.splitlines() if line.startswith("gmsm") and "0.30" in line.split()[1])
    assert gmsm_row.split()[-2:] == [f"{share:.3f}"] * 2


def lesion_model(folder):
    model = zoo.create_model("efficientnet_lite0", paper="001", task="multilabel", pretrained=False, input_size=SIZE)
    model.save_pretrained(folder)
    return folder


def evaluated_photos(monkeypatch, argv) -> list[str]:
    """The photos ``python -m explain evaluate`` reads."""
    read = []
    real = fundus.load_image
    monkeypatch.setattr(fundus, "load_image", lambda source: read.append(Path(source).name) or real(source))
    assert main(argv) == 0
    monkeypatch.setattr(fundus, "load_image", real)
    return read


@pytest.mark.slow
def test_evaluate_split_test_scores_the_photos_zoo_evaluate_scores(tmp_path, capsys, monkeypatch):
    import zoo.evaluation.cli

    model = lesion_model(tmp_path / "lesions")
    data = make_yolo(tmp_path / "boxes", count=12)
    scored = {}
    real_collect = zoo.evaluation.cli.collect_outputs

    def collect(model, items, *args, **kwargs):
        scored["zoo"] = sorted(Path(item.image).name for item in items)
        return real_collect(model, items, *args, **kwargs)

    monkeypatch.setattr(zoo.evaluation.cli, "collect_outputs", collect)
    argv = [str(model), "--data", str(data), "--format", "yolo", "--split", "test", "--json"]
    assert zoo.evaluation.cli.main(argv) == 0
    common = ["evaluate", str(model), "--road-percentiles", "none", "--data", str(data), "--format", "yolo", "--methods", "gradcam", "--t", "0"]
    tested = evaluated_photos(monkeypatch, common + ["--split", "test"])
    assert sorted(tested) == scored["zoo"] and 0 < len(tested) < 12
    assert "as python -m zoo evaluate" in capsys.readouterr().out
    parts = {part: evaluated_photos(monkeypatch, common + ["--split", part]) for part in ("train", "val")}
    assert not set(parts["train"]) & set(tested) and not set(parts["val"]) & set(tested)
    assert sorted(parts["train"] + parts["val"] + tested) == [f"{i:04d}.jpg" for i in range(12)]
    assert evaluated_photos(monkeypatch, common + ["--split", "test", "--limit", "1"]) == tested[:1]
    other = evaluated_photos(monkeypatch, common + ["--split", "test", "--seed", "3", "--test-fraction", "0.4"])
    assert len(other) > len(tested)  # zoo evaluate's --seed and --test-fraction


@pytest.mark.slow
def test_evaluate_split_of_a_model_whose_labels_do_not_apply(model_dir, tmp_path, capsys, monkeypatch):
    """A DR grader on lesion boxes: zoo evaluate has no target to score; the split uses the data set's labels."""
    data = make_yolo(tmp_path / "boxes", count=10)
    common = ["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(data), "--format", "yolo", "--methods", "gradcam", "--t", "0"]
    parts = {part: evaluated_photos(monkeypatch, common + ["--split", part]) for part in ("train", "val", "test")}
    assert "by the data set's own labels" in capsys.readouterr().out
    assert all(parts.values()) and sorted(sum(parts.values(), [])) == [f"{i:04d}.jpg" for i in range(10)]
    assert main(common + ["--split", "test", "--test-fraction", "0.9"]) == 2  # val + test fractions over 1


@pytest.mark.slow
def test_evaluate_split_test_on_real_idrid_grading_boxes(model_dir, tmp_path, capsys):
    root = shared_dataset("idrid-grading-boxes")
    code = main(["evaluate", str(model_dir), "--road-percentiles", "none", "--data", str(root), "--format", "yolo", "--split", "test",
                 "--methods", "gmsm", "--limit", "2", "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    disc = result["gmsm"]["optic_disc"]
    assert disc["photos"] == 2 and 0 <= disc["photo_share"] <= 1 and set(result) >= set(("gmsm",) + BASELINE_NAMES)
