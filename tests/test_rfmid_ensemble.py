"""Paper 000's `rfmid-ensemble` recipe: stage-2 augmentation, attention crops, and the pipeline end to end
on a tiny generated RFMiD-layout fixture (2 folds, 1–2 steps per network, the crop stage and the fusion)."""
from __future__ import annotations

import csv
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fundus import make_fundus
from fundus.datasets import RFMID_DISEASES

N_PHOTOS = 12


def _find(tree, key):
    """The value of ``key`` anywhere in nested dicts (the metrics layout belongs to train.report)."""
    if isinstance(tree, dict):
        if key in tree:
            return tree[key]
        for value in tree.values():
            found = _find(value, key)
            if found is not None:
                return found
    return None


def write_rfmid_fixture(root: Path, n: int = N_PHOTOS, size: int = 96) -> Path:
    """RFMiD's official training layout: Training_Set/RFMiD_Training_Labels.csv + Training/<ID>.png."""
    folder = root / "Training_Set"
    (folder / "Training").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(1, n + 1):
        diseases = np.zeros(len(RFMID_DISEASES), int)
        if i % 4:  # three photos in four are diseased: DR, MH, or one of the "Others" (column 30+)
            diseases[rng.choice([0, 2, 30], size=1 + (i % 3 == 0), replace=False)] = 1
        rgb, _ = make_fundus(size, seed=i, lesions=("HE", "EX") if diseases[0] else 0)
        Image.fromarray(rgb).save(folder / "Training" / f"{i}.png")
        rows.append([str(i), str(int(diseases.any())), *map(str, diseases)])
    with open(folder / "RFMiD_Training_Labels.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ID", "Disease_Risk", *RFMID_DISEASES])
        writer.writerows(rows)
    return root


def test_stage2_augmentation_is_random_per_sample_and_keeps_range():
    from train.recipes.rfmid_ensemble import RandomPhotometric, RandomZoomCrop, stage2_augment

    torch.manual_seed(0)
    x = torch.rand(4, 3, 32, 32)
    x[1] = x[0]
    out = RandomPhotometric()(x)
    assert out.shape == x.shape and float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out[0], out[1])  # same image, different draws
    identity = RandomPhotometric(brightness=(1, 1), gamma=(1, 1), saturation=(1, 1))(x)
    assert torch.allclose(identity, x, atol=1e-6)
    # A crop of side 1 is the identity; a smaller one zooms in (a centred dot grows).
    assert torch.allclose(RandomZoomCrop(scale=(1.0, 1.0))(x), x, atol=1e-5)
    dot = torch.zeros(1, 3, 33, 33)
    dot[..., 14:19, 14:19] = 1.0
    zoomed = RandomZoomCrop(scale=(0.5, 0.5))(dot.expand(8, -1, -1, -1).clone())
    assert float((zoomed > 0.5).float().sum((1, 2, 3)).mean()) > 2.5 * float((dot > 0.5).sum())
    assert stage2_augment()(x).shape == x.shape


def test_attention_crops_follow_eq5_on_the_true_labels():
    import zoo
    from explain import Explainer, attention_crop
    from train.attention_crops import attention_crop_images, positive_labels

    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = zoo.create_model("efficientnet_lite0", paper="000", pretrained=False).eval()
    images = np.stack([make_fundus(64, seed=s)[0] for s in range(3)])
    targets = np.zeros((3, 28), np.float32)
    targets[0, [0, 2]] = 1  # DR + MH: integrated over both (eq. 4)
    targets[2, 27] = 1  # photo 1 has no label: no crop
    assert positive_labels(targets) == [[0, 2], [], [27]]
    crops = attention_crop_images(model, images, targets, theta=100, mean=model.config.mean, std=model.config.std)
    assert crops.skipped_no_label == 1 and len(crops) + crops.skipped_empty == 2
    assert crops.images.shape == (len(crops), 64, 64, 3)
    # The same crop, computed directly with the explanation engine for photo 0's true labels.
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in (model.config.mean, model.config.std))
    x = (torch.from_numpy(images[:1]).permute(0, 3, 1, 2).float() / 255 - mean) / std
    from train.attention_crops import fov_mask_of

    expl = Explainer(model).explain(x, target=[0, 2], fov_mask=fov_mask_of(images[0]), methods=("guided_gradcam",))
    direct = attention_crop(expl.maps()["guided_gradcam"], 100, images[0])
    assert crops.source_index[0] == 0 and crops.boxes[0] == direct.box
    assert np.array_equal(crops.images[0], direct.enlarged)
    x0, y0, x1, y1 = direct.box
    assert (x1 - x0) * (y1 - y0) < 64 * 64  # a real crop, smaller than the photo
    with pytest.raises(ValueError, match=r"theta must lie in \[0, 255\]"):
        attention_crop_images(model, images, targets, theta=300, mean=model.config.mean, std=model.config.std)


def test_parse_args_checks_paper_flags(tmp_path):
    from train.recipes import get_recipe

    recipe = get_recipe("rfmid-ensemble")
    args = recipe.parse_args(["--data", str(tmp_path), "--format", "rfmid"])
    assert (args.folds, args.theta, args.lam, args.sigma, args.lr, args.patience) == (5, 128.0, 0.6, 0.4, 1e-4, 20)
    assert args.arch == "vgg16+vgg19+resnet50" and recipe.architectures(args) == ("vgg16", "vgg19", "resnet50")
    lite = recipe.parse_args(["--data", str(tmp_path), "--format", "rfmid", "--arch", "efficientnet_lite0"])
    assert recipe.architectures(lite) == ("efficientnet_lite0",) * 3
    for bad in (["--folds", "0"], ["--theta", "256"], ["--lam", "0.7"]):
        with pytest.raises(SystemExit):
            recipe.parse_args(["--data", str(tmp_path), "--format", "rfmid", *bad])


def test_two_stage_transfer_learning_freezes_the_backbone_first(tmp_path):
    from train.recipes import get_recipe

    recipe = get_recipe("rfmid-ensemble")
    args = recipe.parse_args(["--data", str(tmp_path), "--format", "rfmid", "--arch", "efficientnet_lite0",
                              "--no-pretrained", "--input-size", "64", "--frozen-epochs", "2", "--epochs", "3"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = recipe.build_arch(args, "efficientnet_lite0", "m")
    assert model.config.arch_kwargs["head"] == "gap_linear" and model.config.input_size == 64
    frozen, finetune = recipe.stages(args, model)
    assert (frozen.epochs, frozen.lr, finetune.epochs, finetune.lr) == (2, 1e-4, 3, 1e-4)
    assert {id(p) for p in frozen.trainable(model)} == {id(p) for p in model.head.parameters()}
    assert finetune.trainable is None  # every layer
    cfg = recipe.loop_config(args, model)
    assert (cfg.plateau_patience, cfg.plateau_factor, cfg.min_lr, cfg.patience) == (8, 0.1, 1e-7, 20)
    targets = np.zeros((4, 28), np.float32)
    targets[:3, 0] = 1
    targets[3, 5] = 1
    loss = recipe.loss(args, targets)
    assert loss.gamma == 2.0 and float(loss.alpha[5]) == pytest.approx(3 * float(loss.alpha[0]))  # rarer, heavier


@pytest.mark.slow
def test_rfmid_ensemble_end_to_end(tmp_path, monkeypatch):
    import zoo
    from train.recipes import get_recipe

    monkeypatch.setenv("FCZ_CACHE_DIR", str(tmp_path / "cache"))
    data = write_rfmid_fixture(tmp_path / "rfmid")
    out = tmp_path / "out"
    recipe = get_recipe("rfmid-ensemble")
    # One epoch per stage (frozen backbone, then fine-tuning) of one batch of 8 (a trailing single is dropped).
    argv = ["--data", str(data), "--format", "rfmid", "--arch", "efficientnet_lite0", "--no-pretrained",
            "--input-size", "64", "--folds", "2", "--theta", "100", "--frozen-epochs", "1", "--epochs", "1",
            "--batch-size", "8", "--workers", "0", "--val-fraction", "0.25", "--quiet", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert recipe.main(argv) == 0

    # One hub repo: the fused ensemble of 2 folds × 2 networks, with paper 000's λ and σ.
    config = json.loads((out / "config.json").read_text())
    assert config["arch"] == "fusion_ensemble" and config["task"] == "multilabel" and len(config["labels"]) == 28
    assert config["arch_kwargs"]["folds"] == 2
    assert (config["arch_kwargs"]["lam"], config["arch_kwargs"]["sigma"]) == (0.6, 0.4)
    assert config["theta"] == 100 and "attention crops" in config["description"]
    assert _find(config["metrics"], "f1_micro") is not None  # measured on the held-out patients
    assert "python -m train rfmid-ensemble" in config["reproduce"]
    # Every network trained in its own folder: stage 1 and the four fold models.
    runs = sorted(p.name for p in (out / "training").iterdir() if p.is_dir())
    assert runs == ["fold0-g1-efficientnet_lite0", "fold0-g2-efficientnet_lite0", "fold1-g1-efficientnet_lite0",
                    "fold1-g2-efficientnet_lite0", "stage1"]

    model = zoo.load(str(out), device="cpu")
    assert len(model.g1) == len(model.g2) == 2
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        fused = model.probabilities(model(x))
        g1 = torch.stack([m.probabilities(m(x)) for m in model.g1]).mean(0)
        g2 = torch.stack([m.probabilities(m(x)) for m in model.g2]).mean(0)
    assert torch.allclose(fused, 0.6 * g1 + 0.4 * g2, atol=1e-4)  # paper 000 eq. 6
    validation = json.loads((out / "training" / "validation.json").read_text())
    assert _find(validation, "n_images") == 3  # 25 % of 12 single-photo patients held out


@pytest.mark.slow
def test_bagging_never_trains_on_crops_of_a_fold_s_validation_photos(tmp_path, monkeypatch):
    """The networks' training is replaced by a recorder: the data each fold model would see is checked."""
    from train.loop import FitResult
    from train.recipes import get_recipe
    from train.recipes.rfmid_ensemble import RfmidEnsembleRecipe

    seen = []

    def record(self, args, model, train_set, val_set, tag, augment, seed_offset=0):
        seen.append((tag, list(train_set.names), list(val_set.names), augment, seed_offset))
        return FitResult(history=[], best_val_loss=0.0, best_epoch=0, global_step=0, steps_run=0,
                         resumed_from=None, stopped_early=False)

    monkeypatch.setattr(RfmidEnsembleRecipe, "train_one", record)
    monkeypatch.setenv("FCZ_CACHE_DIR", str(tmp_path / "cache"))
    data = write_rfmid_fixture(tmp_path / "rfmid", size=64)
    argv = ["--data", str(data), "--format", "rfmid", "--arch", "efficientnet_lite0", "--no-pretrained",
            "--input-size", "64", "--folds", "3", "--theta", "60", "--workers", "0", "--val-fraction", "0.25",
            "--quiet", "--out", str(tmp_path / "out")]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_recipe("rfmid-ensemble").main(argv) == 0

    assert [tag for tag, *_ in seen] == ["stage1"] + [f"fold{f}-{g}-efficientnet_lite0" for f in range(3)
                                                      for g in ("g1", "g2")]
    stage1_train = set(seen[0][1])
    assert not any("#crop" in n for n in stage1_train)  # stage 1: whole images only
    crops_seen = 0
    val_parts = []
    assert len({offset for *_, offset in seen[1:]}) == 6  # each member its own batch order and views
    for tag, train_names, val_names, augment, _ in seen[1:]:
        originals = {n for n in train_names if "#crop" not in n}
        crops = [n for n in train_names if "#crop" in n]
        crops_seen += len(crops)
        assert originals | set(val_names) == stage1_train and not originals & set(val_names)
        assert all(n.split("#crop")[0] in originals for n in crops)  # never a crop of a validation photo
        assert len(augment.ops) == 4  # brightness/gamma/saturation, crop, rotation, flip
        val_parts.append(frozenset(val_names))
    assert crops_seen > 0
    folds = set(val_parts)
    assert len(folds) == 3 and set().union(*folds) == stage1_train  # every photo validates exactly one fold
    assert sum(len(f) for f in folds) == len(stage1_train)


def test_one_fold_means_no_bagging_each_structure_on_the_whole_training_part(tmp_path, monkeypatch):
    from train.loop import FitResult
    from train.recipes import get_recipe
    from train.recipes.rfmid_ensemble import RfmidEnsembleRecipe

    seen = []

    def record(self, args, model, train_set, val_set, tag, augment, seed_offset=0):
        seen.append((tag, [n for n in train_set.names if "#crop" not in n], list(val_set.names), seed_offset))
        return FitResult(history=[], best_val_loss=0.0, best_epoch=0, global_step=0, steps_run=0,
                         resumed_from=None, stopped_early=False)

    monkeypatch.setattr(RfmidEnsembleRecipe, "train_one", record)
    monkeypatch.setenv("FCZ_CACHE_DIR", str(tmp_path / "cache"))
    data = write_rfmid_fixture(tmp_path / "rfmid", size=64)
    out = tmp_path / "out"
    argv = ["--data", str(data), "--format", "rfmid", "--arch", "efficientnet_lite0", "--no-pretrained",
            "--input-size", "64", "--folds", "1", "--no-attention-crops", "--workers", "0", "--val-fraction", "0.25",
            "--quiet", "--out", str(out)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert get_recipe("rfmid-ensemble").main(argv) == 0
    split = json.loads((out / "training" / "split.json").read_text())
    (_, g1_train, g1_val, g1_seed), (_, g2_train, g2_val, g2_seed) = seen
    assert sorted(g1_train) == sorted(g2_train) == sorted(x["image"] for x in split["train"])
    assert sorted(g1_val) == sorted(g2_val) == sorted(x["image"] for x in split["val"])  # early stopping
    assert g1_seed != g2_seed
    assert "without bagging" in json.loads((out / "config.json").read_text())["description"]


@pytest.mark.slow
def test_ablation_has_a_bagged_row_only_for_a_structure_of_several_networks(monkeypatch):
    """--folds 1: each structure is one network, whose "fold 0 alone" row says it all (no "bagged (1 folds)")."""
    from types import SimpleNamespace

    from train.recipes import rfmid_ensemble
    from train.recipes.rfmid_ensemble import RfmidEnsembleRecipe

    recipe = RfmidEnsembleRecipe()
    labels = list(recipe.labels)
    rng = np.random.default_rng(0)
    targets = (rng.random((8, len(labels))) > 0.7).astype(np.float32)
    monkeypatch.setattr(rfmid_ensemble, "evaluate_outputs",
                        lambda model, *rest: (rng.normal(size=targets.shape).astype(np.float32), targets))

    def member(arch):
        model = torch.nn.Linear(1, 1)
        model.config = SimpleNamespace(arch=arch)
        return model

    ensemble = SimpleNamespace(config=SimpleNamespace(thresholds=[0.5] * len(labels)))
    data, info = SimpleNamespace(val=None), SimpleNamespace(device="cpu")
    one = recipe.ablation({"g1": [member("a")], "g2": [member("b")]}, ensemble, data, None, info, None)
    assert sorted(one) == ["validation, ablation: G1 a fold 0 alone", "validation, ablation: G2 b fold 0 alone"]
    two = recipe.ablation({"g1": [member("a"), member("a")], "g2": [member("b")]}, ensemble, data, None, info, None)
    assert "validation, ablation: G1 bagged (2 folds)" in two and not any("G2 bagged" in k for k in two)
    assert all("f1_micro" in row for row in two.values())
