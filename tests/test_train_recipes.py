"""The recipes end to end on small generated data sets in the official layouts (a few steps each,
64 px inputs, EfficientNet-Lite0 with its packaged ImageNet weights), plus their building blocks:
undersampling, the DCGAN, the recipe registry and CLI."""
from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import REPO
from fundus import make_fundus
from train.__main__ import main as train_main
from train.recipes import available_recipes, get_recipe

GRADE_FOLDERS = {0: "1 - No DR", 1: "2 - Mild DR without maculopathy", 2: "4 - Moderate DR without maculopathy",
                 3: "6 - Severe DR without maculopathy", 4: "8 - PDR without maculopathy"}
IDRID_FOLDERS = {"MA": "1. Microaneurysms", "HE": "2. Haemorrhages", "EX": "3. Hard Exudates",
                 "SE": "4. Soft Exudates", "OD": "5. Optic Disc"}


def _photo(path: Path, seed: int, lesions=(), size: int = 96) -> dict:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb, info = make_fundus(size, seed=seed, lesions=lesions)
    Image.fromarray(rgb).save(path, quality=92)
    return info


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("fundus_data")
    # srahim-dr600 layout: <N - class>/PatientNNN_{L,R}.jpg, both eyes of a patient in one grade folder.
    srahim = root / "srahim-dr600"
    for p in range(10):
        grade = [0, 0, 0, 0, 1, 2, 2, 3, 4, 1][p]
        for eye in "LR":
            _photo(srahim / GRADE_FOLDERS[grade] / f"Patient{p:03d}_{eye}.jpg", seed=10 * p + (eye == "R"),
                   lesions=() if grade == 0 else ("MA", "HE"))
    # IDRiD segmentation layout with lesion masks.
    seg = root / "idrid-seg-dev" / "A. Segmentation"
    for n in range(21, 29):
        kinds = [("MA", "HE", "EX"), ("HE", "EX", "SE"), ("MA", "EX"), ("HE",)][n % 4]
        info = _photo(seg / "1. Original Images" / "a. Training Set" / f"IDRiD_{n}.jpg", seed=100 + n, lesions=kinds)
        truth = seg / "2. All Segmentation Groundtruths" / "a. Training Set"
        for kind, folder in IDRID_FOLDERS.items():
            (truth / folder).mkdir(parents=True, exist_ok=True)
            if kind in info["masks"]:
                Image.fromarray(info["masks"][kind]).save(truth / folder / f"IDRiD_{n}_{kind}.tif")
    # YOLO boxes (diaretdb1 layout): 0 optic_disc, 1 hard_exudates, 2 haemorrhage.
    yolo = root / "diaretdb1-boxes"
    (yolo / "images").mkdir(parents=True)
    (yolo / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    for n in range(6):
        _photo(yolo / "images" / f"{n:04d}.jpg", seed=200 + n, lesions=("EX", "HE") if n % 2 else ())
        lines = ["0 0.7 0.5 0.1 0.1"] + (["1 0.4 0.4 0.05 0.05", "2 0.6 0.6 0.05 0.05"] if n % 2 else [])
        (yolo / "images" / f"{n:04d}.txt").write_text("\n".join(lines) + "\n")
    # ODIR-5K layout: full_df.csv + Training Images/, both eyes per patient, age and sex.
    odir = root / "odir"
    header = ["ID", "Patient Age", "Patient Sex", "Left-Fundus", "Right-Fundus", "Left-Diagnostic Keywords",
              "Right-Diagnostic Keywords", "N", "D", "G", "C", "A", "H", "M", "O"]
    rows = []
    for p in range(12):
        labels = [0] * 8
        labels[[0, 0, 0, 0, 1, 1, 1, 2, 3, 0, 1, 6][p]] = 1
        rows.append([p, 40 + 3 * p, "Male" if p % 2 else "Female", f"{p}_left.jpg", f"{p}_right.jpg", "", ""] + labels)
        for eye in ("left", "right"):
            _photo(odir / "Training Images" / f"{p}_{eye}.jpg", seed=300 + 2 * p + (eye == "right"))
    # A patient whose photos are damaged: counted as unreadable, never fatal.
    rows.append([12, 50, "Male", "12_left.jpg", "12_right.jpg", "", "", 0, 0, 0, 0, 0, 0, 0, 1])
    for eye in ("left", "right"):
        (odir / "Training Images" / f"12_{eye}.jpg").write_bytes(b"\xff\xd8\xff not a photo")
    with (odir / "full_df.csv").open("w", newline="") as f:
        csv.writer(f).writerows([header] + rows)
    return {"srahim": srahim, "idrid": root / "idrid-seg-dev", "yolo": yolo, "odir": odir, "root": root}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run_recipe(argv: list[str], tmp_path: Path) -> Path:
    out = tmp_path / "out"
    code = train_main(argv + ["--out", str(out), "--cache-dir", str(tmp_path / "cache"), "--quiet",
                              "--arch", "efficientnet_lite0", "--input-size", "64", "--batch-size", "4",
                              "--workers", "1"])
    assert code == 0
    return out


def read_config(out: Path) -> dict:
    return json.loads((out / "config.json").read_text())


def test_registry_and_cli_help(capsys):
    assert {"aptos", "dr-lesions", "odir"} <= set(available_recipes())
    assert train_main(["--help"]) == 0
    assert "dr-lesions" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        train_main(["odir", "--help"])
    text = capsys.readouterr().out
    assert "--dcgan" in text and "--metadata" in text and "(default: 0.01)" in text  # the paper's SGD lr
    assert train_main(["no-such-recipe"]) == 2
    assert train_main(["aptos", "--data", "/no/such/folder", "--format", "aptos"]) == 2
    assert "data set folder not found" in capsys.readouterr().err


def test_the_dr_graders_select_the_epoch_on_validation_kappa_and_the_others_on_loss():
    import torch.nn as nn

    class Configured(nn.Module):
        config = type("C", (), {"mean": (0.5,) * 3, "std": (0.5,) * 3})()

    flags = ["--data", ".", "--format", "imagefolder"]
    for name, select, metric in (("aptos", "metric", "quadratic_kappa"), ("ellg", "metric", "quadratic_kappa"),
                                 ("odir", "loss", None), ("dr-lesions", "loss", None)):
        recipe = get_recipe(name)
        args = recipe.parse_args(flags)
        cfg = recipe.loop_config(args, Configured())
        assert (args.select_on, cfg.select_on) == (select, select), name
        assert (cfg.select_metric.name if cfg.select_metric else None) == metric, name
    aptos = get_recipe("aptos")
    assert aptos.metric(aptos.parse_args(flags)).name == "accuracy"  # the logged headline stays the paper's
    assert aptos.loop_config(aptos.parse_args(flags + ["--select-on", "loss"]), Configured()).select_metric is None


def test_preset_format_and_imagefolder_preset_load_the_same(data):
    recipe = get_recipe("aptos")
    a = recipe.parse_args(["--data", str(data["srahim"]), "--format", "srahim-dr600"])
    b = recipe.parse_args(["--data", str(data["srahim"]), "--format", "imagefolder", "--preset", "srahim-dr600"])
    la, lb = recipe.labelled(recipe.load_samples(a), a), recipe.labelled(recipe.load_samples(b), b)
    assert [(s.image, s.target) for s in la] == [(s.image, s.target) for s in lb]
    assert sorted({s.target for s in la}) == [0, 1, 2, 3, 4] and len(la) == 20
    assert a.input_size == 299 and a.arch == "inception_v3"  # paper 003: 299 px for Inception


@pytest.mark.slow
def test_aptos_end_to_end_split_by_patient_and_pushed(data, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants
    from hub_server import HubServer

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the hub here is 127.0.0.1
    monkeypatch.setenv("HF_TOKEN", "test-token")
    with HubServer() as hub:
        out = run_recipe(["aptos", "--data", str(data["srahim"]), "--format", "srahim-dr600", "--epochs", "2",
                          "--max-steps", "3", "--val-fraction", "0.3", "--push-to-hub", "fundus-org/aptos-tiny",
                          "--hub-endpoint", hub.url], tmp_path)
    assert hub.repos == ["fundus-org/aptos-tiny"]
    pushed = hub.files["fundus-org/aptos-tiny"]
    assert set(pushed) == {"config.json", "model.safetensors", "README.md"}
    assert pushed["model.safetensors"] == (out / "model.safetensors").read_bytes()
    cfg = read_config(out)
    assert cfg["labels"] == ["No DR", "Mild", "Moderate", "Severe", "Proliferative DR"]
    assert cfg["task"] == "multiclass" and cfg["arch"] == "efficientnet_lite0" and cfg["input_size"] == 64
    assert cfg["preprocessing"]["clahe"] and cfg["arch_kwargs"]["head"] == "gap_dropout_dense" and cfg["dropout"] == 0.5
    assert cfg["pretrained"].startswith("imagenet")
    assert cfg["reproduce"].startswith("python -m train aptos --data ")
    assert "srahim-dr600" in cfg["datasets"] and "academic" in cfg["data_license"]
    val = cfg["metrics"]["validation"]
    assert 0.0 <= val["accuracy"] <= 1.0 and "quadratic_kappa" in val
    # The decision (argmax, or the expected grade at fitted cut-offs) chosen on validation, kept in the config.
    rule = json.loads((out / "training" / "grade_rule.json").read_text())
    assert cfg["expected_grade_cutoffs"] == rule["expected_cutoffs"]
    assert rule["rule"] == ("expected grade" if rule["expected_cutoffs"] else "argmax")
    assert val["quadratic_kappa"] == pytest.approx(max(rule["kappa_argmax"], rule["kappa_expected_grade"]))
    split = json.loads((out / "training" / "split.json").read_text())
    train_p = {x["patient"] for x in split["train"]}
    val_p = {x["patient"] for x in split["val"]}
    test_p = {x["patient"] for x in split["test"]}  # the test part: never trained on (train.ship measures it)
    assert train_p and val_p and test_p and not train_p & val_p and not (train_p | val_p) & test_p
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 20
    assert {x["source"] for x in split["test"]} == {"srahim-dr600"}
    card = (out / "README.md").read_text()
    assert "model-index" in card and "accuracy" in card
    assert "plotly" in (out / "training" / "report.html").read_text()[:200000].lower()
    rows = list(csv.DictReader((out / "training" / "metrics.csv").open()))
    assert rows[-1]["global_step"] == "3"
    # The out folder is a loadable hub repo whose validation numbers match a fresh evaluation.
    import zoo
    from zoo.evaluation.cli import main as evaluate_main

    model = zoo.load(out)
    assert model.config.metrics["validation"]["accuracy"] == val["accuracy"]
    capsys.readouterr()
    assert evaluate_main([str(out), "--data", str(data["srahim"]), "--format", "srahim-dr600", "--split", "val",
                          "--val-fraction", "0.3", "--json", "--quiet"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n_images"] == len(split["val"])  # evaluate's --split val is training's validation split
    assert evaluated["accuracy"] == pytest.approx(val["accuracy"])


@pytest.mark.slow
def test_cli_resume_continues_where_max_steps_stopped(data, tmp_path):
    base = ["aptos", "--data", str(data["srahim"]), "--format", "srahim-dr600", "--epochs", "2", "--val-fraction", "0.3"]
    out = run_recipe(base + ["--max-steps", "2"], tmp_path)
    first = list(csv.DictReader((out / "training" / "metrics.csv").open()))
    assert len(first) == 1 and first[0]["global_step"] == "2" and first[0]["partial_epoch"] == "True"
    run_recipe(base + ["--resume"], tmp_path)
    rows = list(csv.DictReader((out / "training" / "metrics.csv").open()))
    n = len(json.loads((out / "training" / "split.json").read_text())["train"])
    per_epoch = -(-n // 4) - (1 if n % 4 == 1 and n > 4 else 0)  # a trailing batch of one is dropped
    assert rows[0] == first[0]  # the history carries over
    assert [r["epoch"] for r in rows] == ["1", "1", "2"]  # epoch 1 finished from batch 3 on, then epoch 2
    assert [int(r["global_step"]) for r in rows] == [2, per_epoch, 2 * per_epoch]
    assert "--resume" not in read_config(out)["reproduce"]  # the command that trains it from scratch


@pytest.mark.slow
def test_dr_lesions_combines_masks_boxes_and_healthy_folder(data, tmp_path):
    out = run_recipe(["dr-lesions", "--data", str(data["idrid"]), "--format", "idrid-seg",
                      "--data", str(data["yolo"]), "--format", "yolo",
                      "--data", str(data["srahim"]), "--format", "srahim-dr600",
                      "--epochs", "2", "--frozen-epochs", "1", "--val-fraction", "0.3",
                      "--fcn-widths", "32", "16"], tmp_path)
    cfg = read_config(out)
    assert cfg["labels"] == ["BP/MA", "HM", "HEX", "CWS", "healthy"] and cfg["task"] == "multilabel"
    assert cfg["arch_kwargs"]["head"] == "fcn" and cfg["cam"] == "score_map"
    assert cfg["arch_kwargs"]["fcn_widths"] == [32, 16]
    assert len(cfg["thresholds"]) == 5 and all(0.0 <= t <= 1.0 for t in cfg["thresholds"])
    assert cfg["thresholds"] != [0.5] * 5  # chosen on validation (paper 001)
    rows = list(csv.DictReader((out / "training" / "metrics.csv").open()))
    assert [r["stage"] for r in rows] == ["frozen-backbone", "all"]
    assert [float(r["lr"]) for r in rows] == [0.01, 0.001]
    counts = json.loads((out / "training" / "data.json").read_text())
    # 8 IDRiD + 3 boxed DIARETDB1 photos (its 3 unboxed ones say nothing: fundus.datasets.labels) + all 20
    # graded photos: grade 0 healthy, mild "MA only", worse "not healthy".
    assert counts["n_train"] + counts["n_val"] + counts["n_test"] == 8 + 3 + 20
    split = json.loads((out / "training" / "split.json").read_text())
    assert any("1 - No DR" in x["image"] for x in split["train"] + split["val"] + split["test"])
    assert any("PDR" in x["image"] for x in split["train"] + split["val"] + split["test"])
    # Each data set is split on its own: every one has a test part.
    assert {x["source"] for x in split["test"]} == {"idrid-seg-dev", "diaretdb1-boxes", "srahim-dr600"}
    assert set(cfg["datasets"]) == {"idrid-seg-dev", "diaretdb1-boxes", "srahim-dr600"}


@pytest.mark.slow
def test_dr_lesions_missing_box_unknown_masks_unboxed_classes(data):
    from fundus import datasets
    from train.recipes import get_recipe

    recipe = get_recipe("dr-lesions")
    yolo = datasets.load_dataset("yolo", data["yolo"], "all")
    common = ["--data", str(data["yolo"]), "--format", "yolo"]
    negative = recipe.parse_args(common + ["--missing-box", "negative"])
    unknown = recipe.parse_args(common + ["--missing-box", "unknown"])
    auto = recipe.parse_args(common)  # diaretdb1-boxes is boxed incompletely (its format's fact): unknown
    for sample in yolo:
        a, b = recipe.target_of(sample, yolo, auto), recipe.target_of(sample, yolo, unknown)
        assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True)
    complete = dataclasses.replace(yolo, format="idrid-grading-boxes")  # boxed completely: its format says so
    for sample in complete:
        a, b = recipe.target_of(sample, complete, auto), recipe.target_of(sample, complete, negative)
        assert (a is None and b is None) or np.array_equal(a, b, equal_nan=True)
    for sample in yolo:
        a, b = recipe.target_of(sample, yolo, negative), recipe.target_of(sample, yolo, unknown)
        if a is None:
            continue
        boxed = np.nan_to_num(a[:4]) > 0
        if b is None:  # no lesion box at all: nothing is known
            assert not boxed.any()
            continue
        assert np.array_equal(b[:4][boxed], a[:4][boxed])  # boxes stay positive
        assert np.isnan(b[:4][~boxed]).all() and b[4] == 0  # the rest is unknown; not healthy
    # A photo with a hard-exudate box only: haemorrhages absent (negative) or unknown.
    only_ex = dataclasses.replace(yolo[0], label=np.array([1, 1, 0], np.float32))
    assert recipe.target_of(only_ex, yolo, negative)[[1, 2, 4]].tolist() == [0, 1, 0]
    got = recipe.target_of(only_ex, yolo, unknown)
    assert np.isnan(got[1]) and got[[2, 4]].tolist() == [1, 0]


@pytest.mark.slow
def test_odir_with_dcgan_metadata_and_undersampling(data, tmp_path):
    out = run_recipe(["odir", "--data", str(data["odir"]), "--format", "odir", "--epochs", "1", "--max-steps", "2",
                      "--dcgan", "--dcgan-epochs", "2", "--dcgan-per-class", "3", "--dcgan-min-images", "4",
                      "--dcgan-width", "4", "--metadata"], tmp_path)
    cfg = read_config(out)
    assert cfg["arch"] == "metadata_fusion" and cfg["arch_kwargs"]["base_arch"] == "efficientnet_lite0"
    assert cfg["labels"] == ["N", "D", "G", "C", "A", "H", "M", "O"] and cfg["cam"] is None
    counts = json.loads((out / "training" / "data.json").read_text())
    # 26 photos: 2 damaged ones (unreadable, left out), the rest in the parts (the test part is read at ship time).
    assert counts["n_unreadable"] == 2 and counts["n_train"] + counts["n_val"] + counts["n_test"] == 24
    # Only N (10 photos) and D (8) reach --dcgan-min-images in the training part: 3 generated each at most.
    assert 0 < counts["n_generated"] <= 6 and counts["n_generated"] % 3 == 0
    import zoo

    model = zoo.load(out)  # the metadata architecture is the zoo's own (zoo.architectures.metadata_fusion)
    x = torch.zeros(2, 3, 64, 64)
    with torch.no_grad():
        meta = torch.tensor([[0.3, 1.0], [0.9, 0.0]])
        assert model(x).shape == (2, 8)
        assert not torch.allclose(model(x, meta)[0], model(x, meta)[1])  # metadata reaches the output
    args = json.loads((out / "training" / "args.json").read_text())
    assert args["dcgan"] and args["metadata"] and args["undersample"]
    # A fresh interpreter loads it without the training recipe (zoo never imports train).
    code = "import sys, zoo; m = zoo.load(sys.argv[1]); print(type(m).__name__, 'train.recipes.odir' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code, str(out)], capture_output=True, text=True, cwd=REPO,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["MetadataFusionNet", "False"]


def test_undersample_caps_dominant_groups():
    from train.recipes.odir import undersample

    t = np.zeros((30, 3))
    t[:20, 0] = 1  # dominant
    t[20:25, 1] = 1
    t[25:29, 2] = 1
    t[3, 2] = 1  # a dominant-class photo that also has a rare label counts for the rare group
    keep = undersample(t, factor=1.0, seed=0)
    assert 29 in keep and 3 in keep and all(i in keep for i in range(20, 29))
    assert sum(1 for i in keep if t[i, 0] and not t[i, 1:].any()) == 5  # capped at the median count (5)
    assert keep == undersample(t, factor=1.0, seed=0)
    with pytest.raises(ValueError, match="factor"):
        undersample(t, factor=0)


def test_dcgan_trains_per_class_and_generates_reproducibly():
    from train.dcgan import Generator, generate, train_dcgan

    images = torch.empty(8, 3, 32, 32, dtype=torch.uint8)
    images[:, 0], images[:, 1], images[:, 2] = 220, 40, 20
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in Generator(width=4).modules())  # paper 002's change
    assert not any(isinstance(m, torch.nn.ReLU) for m in Generator(width=4).modules())
    untrained = generate(Generator(width=4), 4, 64, seed=1)
    gen, hist = train_dcgan(images, epochs=3, batch_size=4, width=4, seed=0, progress=False)
    again, _ = train_dcgan(images, epochs=3, batch_size=4, width=4, seed=0, progress=False)
    out = generate(gen, 5, 96, seed=1)
    assert out.shape == (5, 3, 96, 96) and out.dtype == torch.uint8
    # Same seed, same images (to one grey level: two generator instances may run different kernels).
    assert (out.int() - generate(again, 5, 96, seed=1).int()).abs().max() <= 1
    assert not torch.equal(generate(gen, 4, 64, seed=1), untrained)  # training moved the generator
    assert len(hist) == 3 and all(np.isfinite([h["d_loss"], h["g_loss"]]).all() for h in hist)
    with pytest.raises(ValueError, match="uint8"):
        train_dcgan(images.float())
    with pytest.raises(ValueError, match="at least 2"):
        train_dcgan(images[:1])
