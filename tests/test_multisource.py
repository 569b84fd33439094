"""Several data sets in one run: per-source train/val/test parts, the label rules, camera augmentation,
Graham preprocessing, training on cached frozen features, and ``python -m train ship``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus import make_fundus
from fundus.datasets import DR_GRADES, PARTS, train_val_test_split
from fundus.datasets.labels import (DR_GRADE_NAMES, REFERABLE_GRADE, any_dr, incompletely_boxed,
                                    missing_boxes_unknown, referable_dr)

GRADE_FOLDERS = {0: "1 - No DR", 1: "2 - Mild DR without maculopathy", 2: "4 - Moderate DR without maculopathy",
                 3: "6 - Severe DR without maculopathy", 4: "8 - PDR without maculopathy"}


class _S:
    def __init__(self, source: str, patient: str, label: int) -> None:
        self.source, self.patient_id, self.label = source, patient, label


def _samples(source: str, patients: int, eyes: int = 2) -> list[_S]:
    return [_S(source, f"{source}:{p}", p % 5) for p in range(patients) for _ in range(eyes)]


# ------------------------------------------------------------------------------ splits


def test_each_source_is_split_by_patient_into_three_parts():
    a, b = _samples("a", 100), _samples("b", 40, eyes=1)
    parts = train_val_test_split(a + b, val_fraction=0.15, test_fraction=0.2, seed=0)
    assert set(parts) == set(PARTS)
    patients = {part: {s.patient_id for s in samples} for part, samples in parts.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    assert sum(len(v) for v in parts.values()) == len(a) + len(b)
    for source, n in (("a", 100), ("b", 40)):
        test = {p for p in patients["test"] if p.startswith(source)}
        val = {p for p in patients["val"] if p.startswith(source)}
        assert abs(len(test) - 0.2 * n) <= 1.5 and abs(len(val) - 0.15 * n) <= 1.5
        # Stratified: every grade of the source reaches its test part.
        assert {s.label for s in parts["test"] if s.source == source} == {0, 1, 2, 3, 4}


def test_a_sources_parts_do_not_depend_on_the_other_sources():
    a, b = _samples("a", 60), _samples("b", 30)
    alone = train_val_test_split(a, seed=0)
    combined = train_val_test_split(a + b, seed=0)
    for part in PARTS:
        assert [id(s) for s in alone[part]] == [id(s) for s in combined[part] if s.source == "a"]
    other_seed = train_val_test_split(a, seed=1)
    assert {id(s) for s in other_seed["test"]} != {id(s) for s in alone["test"]}


def test_split_rejects_fractions_that_leave_no_training_data():
    with pytest.raises(ValueError, match="sum"):
        train_val_test_split(_samples("a", 10), val_fraction=0.5, test_fraction=0.5)


# ------------------------------------------------------------------------------ label rules


def test_dr_grade_rules():
    assert [any_dr(g) for g in range(5)] == [False, True, True, True, True]
    assert [referable_dr(g) for g in range(5)] == [False, False, True, True, True]
    assert REFERABLE_GRADE == 2 and len(DR_GRADE_NAMES) == 5


def test_missing_box_rule_is_the_formats_fact():
    class DS:
        root = Path("/data/idrid-grading-boxes")  # the folder's name says nothing

        def __init__(self, fmt: str) -> None:
            self.format = fmt

    assert incompletely_boxed(DS("diaretdb1-boxes")) and incompletely_boxed(DS("yolo"))  # yolo: boxes of unknown care
    assert not incompletely_boxed(DS("idrid-grading-boxes")) and not incompletely_boxed(DS("idrid-seg"))
    labels = ["BP/MA", "HM", "HEX", "CWS", "healthy"]
    only_ex = missing_boxes_unknown(np.array([0, 0, 1, 0, 0], np.float32), labels)
    assert np.isnan(only_ex[[0, 1, 3]]).all() and only_ex[[2, 4]].tolist() == [1, 0]
    assert missing_boxes_unknown(np.array([0, 0, 0, 0, 1], np.float32), labels) is None  # nothing boxed: unknown


def _boxed(root: Path) -> Path:
    """A tiny set in the YOLO layout of CODRAS's boxes: a hard-exudate box, the optic disc only, both lesions."""
    (root / "images").mkdir(parents=True)
    (root / "retinal.names").write_text("optic_disc\nhard_exudates\nhaemorrhage\n")
    photos = (["1 0.4 0.4 0.05 0.05"], ["0 0.7 0.5 0.1 0.1"], ["1 0.4 0.4 0.05 0.05", "2 0.6 0.6 0.05 0.05"])
    for n, lines in enumerate(photos):
        Image.fromarray(make_fundus(64, seed=n)[0]).save(root / "images" / f"{n:04d}.jpg")
        (root / "images" / f"{n:04d}.txt").write_text("\n".join(lines) + "\n")
    return root


def _trained_on(fmt: str, root: Path) -> np.ndarray:
    """What training reads from each photo's boxes: the dr-lesions recipe's targets (--missing-box auto), one row
    a photo (NaN: unknown; a row of NaN: nothing known)."""
    from train.recipes import get_recipe

    recipe = get_recipe("dr-lesions")
    args = recipe.parse_args(["--data", str(root), "--format", fmt])
    targets = [recipe.target_of(s, ds, args) for ds, s in recipe.load_samples(args)]
    return np.stack([np.full(5, np.nan, np.float32) if t is None else t for t in targets])


def test_renaming_a_box_folder_does_not_change_what_its_labels_mean(tmp_path):
    import shutil

    for name, hm_without_box in (("diaretdb1-boxes", np.nan), ("idrid-grading-boxes", 0.0)):
        original = _boxed(tmp_path / name)
        renamed = Path(shutil.copytree(original, tmp_path / f"copy-of-{name}"))
        by_format = _trained_on(name, original)
        assert np.array_equal(by_format, _trained_on(name, renamed), equal_nan=True)
        # The photo with a hard-exudate box only: HM absent where every lesion was boxed, else unknown.
        assert np.array_equal(by_format[0, [1, 2, 4]], [hm_without_box, 1, 0], equal_nan=True)
        with pytest.warns(UserWarning, match=f"say --format {name}"):  # the shipped commands' --format yolo
            assert np.array_equal(_trained_on("yolo", original), by_format, equal_nan=True)
        # A plain yolo folder (any name) never says more than its boxes: a missing box is unknown, never absent.
        assert np.array_equal(_trained_on("yolo", renamed), _trained_on("diaretdb1-boxes", original),
                              equal_nan=True)


def test_odir_class_folders_give_normal_glaucoma_cataract(tmp_path):
    from fundus.datasets import load_dataset
    from fundus.datasets.labels import sample_target

    for cls, ids in (("normal", (1, 2)), ("glaucoma", (3,)), ("cataract", (2,))):
        for i in ids:
            path = tmp_path / "odir-ngc" / cls / f"{i}_left.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make_fundus(64, seed=i)[0]).save(path)
    ds = load_dataset("imagefolder", tmp_path / "odir-ngc", "all")
    assert sorted(ds.labels) == ["cataract", "glaucoma", "normal"]
    got = {(Path(s.image).parent.name, s.patient_id): sample_target(s, ds, ["normal", "glaucoma", "cataract"],
                                                                     "multiclass") for s in ds}
    assert got[("glaucoma", "3")] == 1 and got[("cataract", "2")] == 2 and got[("normal", "2")] == 0
    # One patient, one normal and one diseased eye: the patient id groups them for the split.
    assert len({s.patient_id for s in ds if s.patient_id == "2"}) == 1


def test_grading_metrics_include_any_and_referable_dr_auc():
    from zoo.evaluation.metrics import compute_metrics

    grades = np.array([0, 0, 1, 2, 3, 4, 0, 2])
    values = grades + np.array([0.1, -0.2, 0.3, -0.1, 0.2, 0.0, 0.9, 0.4])  # one No DR eye scores 0.9
    m = compute_metrics("grade-regression", values, grades, ["No DR", "Mild", "Moderate", "Severe", "PDR"])
    from sklearn.metrics import roc_auc_score

    assert m["auc_any_dr"] == pytest.approx(roc_auc_score(grades >= 1, values))
    assert m["auc_referable_dr"] == pytest.approx(roc_auc_score(grades >= 2, values))
    logits = np.eye(5)[grades] * 3.0
    m = compute_metrics("multiclass", logits, grades, list(DR_GRADES))
    assert m["auc_any_dr"] == 1.0 and m["auc_referable_dr"] == 1.0


# ------------------------------------------------------------------------------ preprocessing, augmentation


def test_graham_preprocessing_removes_the_photos_colour_cast():
    from fundus import preprocess
    from zoo.config import ModelConfig, Preprocessing

    rgb, _ = make_fundus(256, seed=1)
    warm = np.clip(rgb.astype(np.float32) * [1.3, 0.9, 0.7], 0, 255).astype(np.uint8)  # another camera's balance
    cfg = ModelConfig(name="x", paper="", arch="efficientnet_lite0", task="multiclass", labels=["a", "b"],
                      input_size=128, preprocessing=Preprocessing(graham=True))
    a, b = preprocess(rgb, cfg), preprocess(warm, cfg)
    inside = a.fov_mask
    plain_cfg = ModelConfig(**{**cfg.to_dict(), "preprocessing": Preprocessing()})
    pa, pb = preprocess(rgb, plain_cfg), preprocess(warm, plain_cfg)

    def mean_colour(p):
        return p.image[inside].reshape(-1, 3).astype(np.float64).mean(0)

    # The local average is subtracted: the two colour balances end up close; without it they are far apart.
    raw_gap = np.abs(mean_colour(pa) - mean_colour(pb)).max()
    graham_gap = np.abs(mean_colour(a) - mean_colour(b)).max()
    assert raw_gap > 20 and graham_gap < 0.25 * raw_gap
    assert np.abs(mean_colour(a) - 128).max() < 20  # centred on grey
    assert (a.image[~inside] == 128).all() and (b.image[~inside] == 128).all()


def test_camera_shift_changes_photos_within_range_and_is_seeded():
    from train.augment import CameraShift

    x = torch.from_numpy(np.stack([make_fundus(64, seed=s)[0] for s in range(6)])).permute(0, 3, 1, 2).float() / 255
    torch.manual_seed(0)
    a = CameraShift()(x)
    torch.manual_seed(0)
    b = CameraShift()(x)
    assert a.shape == x.shape and a.min() >= 0 and a.max() <= 1
    assert torch.allclose(a, b)
    assert (a - x).abs().mean() > 0.01
    jpeg_only = CameraShift(brightness=0, contrast=0, colour=0, gamma=1.0, p_blur=0, p_scale=0, p_jpeg=1.0,
                            jpeg_quality=20)(x)
    assert 0 < (jpeg_only - x).abs().mean() < 0.1  # JPEG artefacts: small, but real


# ------------------------------------------------------------------------------ cached frozen features


def test_frozen_bottom_and_trained_top_are_the_model():
    import zoo
    from train.frozen import FrozenBottom, TrainedTop

    model = zoo.create_model("efficientnet_lite0", paper="004", task="grade-regression", head="gap_linear",
                             input_size=64, pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(TrainedTop(model, 3)(FrozenBottom(model, 3)(x)), model(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="frozen-blocks"):
        FrozenBottom(model, 99)


def test_cache_features_keeps_view_zero_plain_and_augments_the_others():
    import zoo
    from train.data import CachedImages
    from train.frozen import FrozenBottom, cache_features

    model = zoo.create_model("efficientnet_lite0", paper="004", task="grade-regression", head="gap_linear",
                             input_size=64, pretrained=False)
    images = CachedImages.from_arrays([make_fundus(64, seed=s)[0] for s in range(3)], np.array([0.0, 1.0, 2.0]))
    bottom = FrozenBottom(model, 2)
    feats = cache_features(bottom, images, model.config.mean, model.config.std, views=2,
                           augment=lambda x: x.flip(-1), progress=False, dtype=torch.float32)
    assert len(feats) == 6 and feats.targets.tolist() == [0.0, 1.0, 2.0] * 2
    x = images.images.float() / 255
    m, s = torch.tensor(model.config.mean).view(1, 3, 1, 1), torch.tensor(model.config.std).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(feats.images[:3], bottom.eval()((x - m) / s))
        torch.testing.assert_close(feats.images[3:], bottom((x.flip(-1) - m) / s))
    # The bottom runs on a few photos at a time (CPU caches); the features and the augmentation's draws (per
    # batch_size batch) are those of one pass over the whole batch.
    noisy = lambda x: x + 0.05 * torch.rand_like(x)  # noqa: E731
    one_pass = cache_features(bottom, images, model.config.mean, model.config.std, views=3, augment=noisy,
                              progress=False, dtype=torch.float32, forward_batch=32, seed=5)
    in_twos = cache_features(bottom, images, model.config.mean, model.config.std, views=3, augment=noisy,
                             progress=False, dtype=torch.float32, forward_batch=2, seed=5)
    torch.testing.assert_close(in_twos.images, one_pass.images, rtol=1e-5, atol=1e-5)


# ------------------------------------------------------------------------------ a run on two sources, shipped


@pytest.fixture(scope="module")
def two_sources(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("two_sources")
    srahim = root / "srahim-dr600"
    for p in range(15):
        grade = p % 5
        for eye in "LR":
            path = srahim / GRADE_FOLDERS[grade] / f"Patient{p:03d}_{eye}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb, _ = make_fundus(80, seed=10 * p + (eye == "R"), lesions=() if grade == 0 else ("MA", "HE"))
            Image.fromarray(rgb).save(path, quality=90)
    eyepacs = root / "eyepacs-1k"
    (eyepacs / "train").mkdir(parents=True)
    rows = ["image,level"]
    for p in range(20):
        for eye in ("left", "right"):
            rgb, _ = make_fundus(80, seed=500 + 2 * p + (eye == "right"), lesions=() if p % 5 == 0 else ("EX",))
            Image.fromarray(rgb).save(eyepacs / "train" / f"{p}_{eye}.jpeg", quality=90)
            rows.append(f"{p}_{eye},{p % 5}")
    (eyepacs / "trainLabels.csv").write_text("\n".join(rows) + "\n")
    return {"root": root, "srahim": srahim, "eyepacs": eyepacs}


@pytest.mark.slow
def test_frozen_feature_run_on_two_sources_then_ship(two_sources, tmp_path, one_torch_thread):
    from train.__main__ import main as train_main
    from train.ship import PREDICTIONS
    from zoo.config import ModelConfig
    from zoo.evaluation.metrics import compute_metrics

    run, shipped = tmp_path / "run", tmp_path / "shipped"
    common = ["--arch", "efficientnet_lite0", "--input-size", "64", "--epochs", "2", "--batch-size", "8",
              "--workers", "0", "--quiet", "--cache-dir", str(tmp_path / "cache")]
    assert train_main(["ellg", "--data", str(two_sources["srahim"]), "--format", "srahim-dr600", "--rounds", "0",
                       "--frozen-blocks", "4", "--cached-views", "2", "--camera-augment",
                       "--preprocessing", "graham", *common, "--out", str(run)]) == 0
    before = ModelConfig.load(run / "config.json")
    assert before.preprocessing.graham and not before.preprocessing.clahe
    assert "validation" in before.metrics
    # eyepacs-1k was not trained on: its test part measures the transfer to an unseen source.
    assert train_main(["ship", str(run), "--out", str(shipped), "--also-test", str(two_sources["eyepacs"]),
                       "eyepacs", "--theta", "48", "--leave-out", str(run), str(two_sources["eyepacs"]), "eyepacs",
                       "--limit", "a known limit", "--selection", "the only candidate", "--quiet",
                       "--compare", str(run), "the run itself"]) == 0
    cfg = ModelConfig.load(shipped / "config.json")
    # The unlike-training indicator: fitted on the run's training / validation photos, its share per test source.
    assert cfg.ood["threshold"] > 0 and cfg.ood["layer"] == cfg.target_layer and "validation photos" in cfg.ood["fitted_on"]
    for key in ("test", "test: srahim-dr600", "test: eyepacs-1k (not trained on)"):
        assert 0.0 <= cfg.metrics[key]["unlike_training_share"] <= 1.0
    import zoo

    shipped_model = zoo.load(str(shipped), device="cpu")
    answer = zoo.predict(shipped_model, next((two_sources["srahim"]).rglob("*.jpg")))[0]["unlike_training"]
    assert answer["threshold"] == pytest.approx(cfg.ood["threshold"])
    # Either distance flags it (zoo.ood.with_content): the model's own, and for a model trained on the content
    # reference's sources (srahim-dr600) the content distance, which a generated photo exceeds.
    assert ("model" in answer["flagged_by"]) == (answer["distance"] > answer["threshold"])
    assert answer["unlike_training"] == bool(answer["flagged_by"])
    # --compare: another run's validation numbers on the same validation patients, as an ablation row.
    assert cfg.metrics["validation, ablation: the run itself"] == before.metrics["validation"]
    assert cfg.name == "shipped" and cfg.theta == 48 and cfg.t == before.t
    assert set(cfg.metrics) >= {"test", "test: srahim-dr600", "test: eyepacs-1k (not trained on)", "validation"}
    assert cfg.reproduce.startswith("python -m train ellg ") and " && python -m train ship " in cfg.reproduce
    assert "--also-test" in cfg.reproduce and "--leave-out" in cfg.reproduce
    # Here the run itself was trained without eyepacs-1k: its fp32 numbers match the shipped fp16 file's.
    without = cfg.metrics["test: eyepacs-1k, the same recipe trained without it"]
    unseen = cfg.metrics["test: eyepacs-1k (not trained on)"]
    assert without["n_images"] == unseen["n_images"] and without["accuracy"] == pytest.approx(unseen["accuracy"], abs=0.1)
    log = (shipped / "training_log.txt").read_text()
    assert log.startswith(cfg.reproduce) and "# training/base" in log and "epoch" in log
    card = (shipped / "README.md").read_text()
    assert "Confusion matrix, test: eyepacs-1k (not trained on)" in card and "a known limit" in card
    assert "Unlike-training indicator" in card and "unlike_training_share" in card
    assert "the only candidate" in card
    stored = json.loads((shipped / PREDICTIONS).read_text())
    split = json.loads((run / "training" / "split.json").read_text())
    srahim_test = [p for p in stored["photos"] if p["source"] == "srahim-dr600"]
    assert [str(two_sources["root"] / p["path"]) for p in srahim_test] == [x["image"] for x in split["test"]]
    # The card's numbers are those of the stored end-to-end outputs.
    for source in ("srahim-dr600", "eyepacs-1k"):
        photos = [p for p in stored["photos"] if p["source"] == source]
        out = np.array([p["output"] for p in photos], np.float32)
        y = np.array([p["target"][0] for p in photos], np.float32)
        m = compute_metrics("grade-regression", out, y, cfg.labels, grade_cutoffs=cfg.grade_cutoffs)
        key = "test: srahim-dr600" if source == "srahim-dr600" else "test: eyepacs-1k (not trained on)"
        assert cfg.metrics[key]["accuracy"] == pytest.approx(m["accuracy"])
        assert cfg.metrics[key]["n_images"] == len(photos)
    # zoo evaluate --split test is the same part of eyepacs-1k as the ship step measured.
    from fundus.datasets.labelled import labelled_photos

    items = labelled_photos([two_sources["eyepacs"]], ["eyepacs"], cfg.labels, cfg.task, split="test",
                            val_fraction=0.15, test_fraction=0.2, seed=0)
    assert sorted(str(i.image) for i in items) == sorted(
        str(two_sources["root"] / p["path"]) for p in stored["photos"] if p["source"] == "eyepacs-1k")


@pytest.mark.slow
def test_a_run_ships_the_same_from_its_training_facts_as_from_an_older_reproduce_line(two_sources, tmp_path,
                                                                                         one_torch_thread):
    """Golden comparison of one ship: a run whose config records its training as facts (``ModelConfig.training``)
    and the same run as configs written before that field carry it (the command in ``reproduce`` only) ship to the
    same config, card, test outputs and weights."""
    from safetensors.torch import load_file

    from train.__main__ import main as train_main

    run = tmp_path / "run"
    assert train_main(["ellg", "--data", str(two_sources["srahim"]), "--format", "srahim-dr600", "--rounds", "0",
                       "--arch", "efficientnet_lite0", "--input-size", "64", "--epochs", "1", "--batch-size", "8",
                       "--workers", "0", "--quiet", "--cache-dir", str(tmp_path / "cache"), "--out", str(run)]) == 0
    config_file = run / "config.json"
    facts = json.loads(config_file.read_text())["training"]
    assert facts["recipe"] == "ellg" and facts["args"][:2] == ["--data", str(two_sources["srahim"])]

    def shipped(kind: str) -> dict:
        out = tmp_path / kind / "shipped"  # the same folder name: the model's name
        assert train_main(["ship", str(run), "--out", str(out), "--theta", "48", "--also-test",
                           str(two_sources["eyepacs"]), "eyepacs", "--quiet", "--ood-photos", "10"]) == 0
        texts = {name: (out / name).read_text().replace(str(out), "OUT")
                 for name in ("config.json", "README.md", PREDICTIONS, "training_log.txt")}
        return {**texts, "config.json": json.loads(texts["config.json"]),
                "weights": {k: v.tolist() for k, v in load_file(out / "model.safetensors").items()}}

    from train.ship import PREDICTIONS

    from_facts = shipped("facts")
    older = json.loads(config_file.read_text())
    del older["training"]
    config_file.write_text(json.dumps(older, indent=2) + "\n")
    from_line = shipped("line")
    assert from_line == from_facts
    written = from_facts["config.json"]
    assert written["training"] == {**facts, "ship": [str(run), "--out", "OUT", "--theta", "48", "--also-test",
                                                     str(two_sources["eyepacs"]), "eyepacs", "--ood-photos", "10"]}
    assert written["reproduce"] == f"{older['reproduce']} && python -m train ship {run} --out OUT --theta 48 " \
                                   f"--also-test {two_sources['eyepacs']} eyepacs --ood-photos 10"


def test_loop_cpu_options_train_where_supported(tmp_path):
    import torch.nn as nn

    from train.data import CachedImages
    from train.loop import LoopConfig, Stage, cpu_has_fast_bf16, fit

    images = CachedImages.from_arrays([make_fundus(64, seed=s)[0] for s in range(8)], np.array([0, 1] * 4))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2))
    cfg = LoopConfig(out_dir=tmp_path, batch_size=4, progress=False, cpu_bf16=True, cpu_channels_last=True)
    res = fit(model, nn.CrossEntropyLoss(), images, images, cfg, [Stage("all", 2, 0.01)])
    # bf16 autocast only where the CPU computes bf16 natively; fp32 elsewhere. Either way training works.
    assert isinstance(cpu_has_fast_bf16(), bool)
    assert len(res.history) == 2 and all(np.isfinite(r["train_loss"]) for r in res.history)
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)
