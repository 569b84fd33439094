"""Paper 000 (RFMiD, 28 categories): Grad-CAM attention-crop augmentation, focal loss, 5-fold bagging, fusion.

The paper's pipeline (sections 3 and 4.2), as ``python -m train rfmid-ensemble`` runs it:

1. Stage 1 — VGG16 with a GAP + linear head trained on whole images ("the VGG16-based framework network
   was trained on the entire fundus image in the first step").
2. Attention crops — the stage-1 model's integrated Guided Grad-CAM over each photo's true labels,
   thresholded at θ (eq. 5), cropped and enlarged (Fig. 2); the crops join the training set
   (``train.attention_crops``).
3. Stage 2 — VGG19 (G1) and ResNet50 (G2) trained on originals + crops with random brightness,
   gamma, saturation, crop, rotation and horizontal flip, by 5-fold bagging over patients
   ("an integration of 10 disease label classifier models (2 structures, each with 5 folds)").
4. Fusion — G_f = λ·G1 + σ·G2 with λ = 0.6, σ = 0.4 (eq. 6) into one ``fusion_ensemble`` zoo model,
   evaluated on held-out patients and written as a hub repo.

Every network is trained the same way: transfer learning with the backbone frozen, then fine-tuning
of everything; Adam at 1e-4, reduced by 0.1 when the validation loss has not improved for 8 epochs,
down to 1e-7; early stopping after 20 epochs without improvement, keeping the best model by
validation loss; focal loss (eq. 7, γ = 2) with per-class α inversely proportional to the class
frequency ("our deployed up-sampling and class weighting approach"). ``--arch efficientnet_lite0``
replaces all three CNNs by EfficientNet-Lite0 (the only ImageNet weights available offline here);
``--arch efficientnet_lite0+efficientnet_lite0+efficientnet_lite1`` makes G1 and G2 two different Lite
backbones, as the paper's two structures.

Beyond the paper: ``--labels`` trains ODIR-5K's diagnoses instead of RFMiD's categories (the shipped
``eye-diseases-ensemble``, same label rule and splits as paper 002's ``eye-diseases``); ``--stage1-model``
reuses a trained model of the same labels as the stage-1 network; with ``--frozen-blocks`` every network
trains on cached features of its frozen bottom (CPU). The card's ablation (single networks vs the fusion, on
the validation patients) comes from the same run.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from train import augment as aug
from train import ddp
from train.attention_crops import attention_crop_images
from train.data import CachedImages
from train.loop import FitResult, LoopConfig, Prepare, Stage, evaluate_outputs
from train.losses import FocalLoss, class_counts, inverse_frequency_weights
from train.recipes import LabelledSample, PreparedData, Recipe, Trained, register
from fundus.datasets.labels import is_diagnosis_space, no_disease_index, sample_target
from fundus.tasks import MULTILABEL
from zoo.papers import RFMID_LABELS

PAPER_ARCHS = "vgg16+vgg19+resnet50"  # stage 1, G1, G2
LITE_ARCHS = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
LITE_PAIR = "efficientnet_lite0+efficientnet_lite0+efficientnet_lite1"  # two Lite structures as G1 / G2


# ------------------------------------------------------------------ stage-2 augmentation (paper 000, 4.2)


@dataclass
class RandomPhotometric:
    """Random brightness, gamma and saturation per sample (paper 000: "random brightness, random gamma
    transform, random saturation"). Factors are drawn uniformly from the ranges; 1 leaves the image.

    The paper gives no ranges; ±20 % is a mild choice that keeps fundus colours plausible.
    """

    brightness: tuple[float, float] = (0.8, 1.2)
    gamma: tuple[float, float] = (0.8, 1.25)
    saturation: tuple[float, float] = (0.8, 1.2)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        aug._check_batch(x)
        b = x.shape[0]

        def draw(lo_hi: tuple[float, float]) -> torch.Tensor:
            lo, hi = lo_hi
            return (lo + (hi - lo) * torch.rand(b, device=x.device, dtype=x.dtype)).view(-1, 1, 1, 1)

        x = (x * draw(self.brightness)).clamp(0.0, 1.0)
        x = x.clamp_min(0.0) ** draw(self.gamma)
        grey = TF.rgb_to_grayscale(x, num_output_channels=1)  # saturation blends with the grey image
        factor = draw(self.saturation)
        return (x * factor + grey * (1.0 - factor)).clamp(0.0, 1.0)


@dataclass
class RandomZoomCrop:
    """Random crop of a random side fraction in ``scale``, resized back to the input size, per sample
    (paper 000: "random cropping")."""

    scale: tuple[float, float] = (0.8, 1.0)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        aug._check_batch(x)
        b = x.shape[0]
        lo, hi = self.scale
        side = lo + (hi - lo) * torch.rand(b, device=x.device, dtype=x.dtype)
        # In affine_grid's [-1, 1] coordinates a crop of side s may be centred anywhere within ±(1 - s).
        centre = (torch.rand(b, 2, device=x.device, dtype=x.dtype) * 2 - 1) * (1 - side)[:, None]
        zero = torch.zeros_like(side)
        theta = torch.stack([torch.stack([side, zero, centre[:, 0]], 1), torch.stack([zero, side, centre[:, 1]], 1)], 1)
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def stage2_augment(max_rotation_deg: float = 15.0) -> aug.Compose:
    """Paper 000's stage-2 augmentation: brightness, gamma, saturation, crop, rotation, horizontal flip."""
    return aug.Compose([
        RandomPhotometric(),
        RandomZoomCrop(),
        aug.RandomAffine(max_rotation=math.radians(max_rotation_deg), max_shift=0.0),
        aug.RandomFlip(horizontal=True, vertical=False),
    ])


# ------------------------------------------------------------------ k-fold bagging by patient


def patient_folds(samples: Sequence[LabelledSample], k: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """Paper 000's k-fold bagging by patient: (train indices, validation indices) of ``samples`` per fold."""
    from fundus.datasets import patient_kfold

    index = {id(s): i for i, s in enumerate(samples)}
    return [([index[id(s)] for s in tr], [index[id(s)] for s in va])
            for tr, va in patient_kfold(list(samples), k=k, seed=seed)]


@dataclass
class Stage1Crops:
    """Stage 1's attention crops of the training photos (paper 000, Fig. 2) as stage 2's extra training images
    (``train.attention_crops.AttentionCropImages`` is what cutting them returns)."""

    images: CachedImages | None  # None: no crop
    sources: np.ndarray  # the training photo (index) of each crop
    note: str  # how they were made, for the card

    def of(self, train_indices: Sequence[int]) -> CachedImages | None:
        """The crops of these training photos (None: none)."""
        if self.images is None:
            return None
        own = np.flatnonzero(np.isin(self.sources, train_indices))
        return self.images.subset(own.tolist()) if len(own) else None


def log_run(history: list[dict[str, Any]], tag: str, result: FitResult) -> None:
    """One network's epochs into the ensemble's history, tagged with the network."""
    history.extend({"model": tag, **row} for row in result.history)


# ------------------------------------------------------------------ the recipe


@register
class RfmidEnsembleRecipe(Recipe):
    name = "rfmid-ensemble"
    paper = "000"
    task = MULTILABEL.name
    description = ("RFMiD 28 categories: VGG16 stage 1, Guided Grad-CAM attention crops (θ), VGG19 + ResNet50 "
                   "5-fold bagging with focal loss, fusion 0.6·G1 + 0.4·G2")
    labels = tuple(RFMID_LABELS)  # 27 named diseases of Table 1 + "OTHER"
    archs = {PAPER_ARCHS: 224, LITE_PAIR: 224, **{a: 224 for a in LITE_ARCHS}}
    head = "gap_linear"  # "the global average pooling layer is added after the last convolutional layer"
    preprocessing = {"fov_crop": True, "clahe": False}  # "fundus image with black edges removed", 224²
    defaults = dict(arch=PAPER_ARCHS, epochs=50, batch_size=16, lr=1e-4, optimizer="adam", patience=20,
                    val_fraction=0.2)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("paper 000")
        g.add_argument("--labels", nargs="+", default=list(RFMID_LABELS), metavar="LABEL",
                       help="RFMiD's 28 categories (default), or ODIR-5K diagnoses with Normal (e.g. Normal Diabetes "
                            "Glaucoma Cataract; read from other sources by fundus.datasets.labels.diagnosis_target)")
        g.add_argument("--stage1-model", default=None, metavar="MODEL",
                       help="a trained model with the same labels (shipped name, folder or hub id) used as the "
                            "stage-1 network for the attention crops instead of training one")
        g.add_argument("--folds", type=int, default=5,
                       help="k of the k-fold bagging by patient (models per architecture)")
        g.add_argument("--theta", type=float, default=128.0,
                       help="attention-crop mask threshold θ ∈ [0, 255] on the integrated Guided Grad-CAM (eq. 5)")
        g.add_argument("--no-attention-crops", dest="attention_crops", action="store_false",
                       help="ablation: stage 2 without the Grad-CAM crops (skips stage 1)")
        g.add_argument("--frozen-epochs", type=int, default=10,
                       help="transfer-learning epochs with the backbone frozen, before --epochs of fine-tuning")
        g.add_argument("--gamma", type=float, default=2.0, help="focal loss focusing parameter γ (eq. 7)")
        g.add_argument("--lam", type=float, default=0.6, help="fusion weight λ of G1 (eq. 6)")
        g.add_argument("--sigma", type=float, default=0.4, help="fusion weight σ of G2 (eq. 6; λ + σ = 1)")
        g.add_argument("--plateau-patience", type=int, default=8,
                       help="epochs without a better validation loss before the learning rate drops ×0.1")
        g.add_argument("--min-lr", type=float, default=1e-7, help="floor of the learning-rate reductions")
        g.add_argument("--max-rotation", type=float, default=15.0, help="stage-2 random rotation range, ± degrees")

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        args = super().parse_args(argv)
        if args.folds < 1:
            raise SystemExit(f"error: --folds must be at least 1 (1: no bagging), got {args.folds}")
        if not 0 <= args.theta <= 255:
            raise SystemExit(f"error: --theta must lie in [0, 255], got {args.theta}")
        if args.lam < 0 or args.sigma < 0 or not math.isclose(args.lam + args.sigma, 1.0, abs_tol=1e-6):
            raise SystemExit(f"error: --lam and --sigma must be >= 0 and add up to 1, got {args.lam} + {args.sigma}")
        if list(args.labels) != list(RFMID_LABELS) and not is_diagnosis_space(args.labels):
            raise SystemExit(f"error: --labels must be RFMiD's 28 categories or distinct ODIR-5K diagnoses with "
                             f"Normal, got {args.labels}")
        self.labels = tuple(args.labels)
        return args

    def architectures(self, args: argparse.Namespace) -> tuple[str, str, str]:
        """(stage 1, G1, G2) architectures: VGG16, VGG19, ResNet50 — or one EfficientNet-Lite for all three."""
        if "+" in args.arch:
            return tuple(args.arch.split("+"))  # type: ignore[return-value]
        return (args.arch, args.arch, args.arch)

    # ---------------------------------------------------------------- data
    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> np.ndarray | None:
        """Paper 000's 28-category multi-hot target; RFMiD's 45 diseases are mapped (27 named + Others)."""
        from fundus.datasets import PAPER000_CATEGORIES, RFMID_DISEASES, to_paper000

        label = getattr(sample, "label", None)
        if label is None:
            return None
        if is_diagnosis_space(self.labels):
            return sample_target(sample, dataset, self.labels, self.task)
        row = np.asarray(label, dtype=np.float32).reshape(-1)
        names = tuple(getattr(dataset, "labels", ()))
        if names == RFMID_DISEASES:
            return to_paper000(row).astype(np.float32)
        if names == PAPER000_CATEGORIES or names == self.labels:
            return row
        raise ValueError(f"rfmid-ensemble needs RFMiD labels (its 45 diseases or paper 000's 28 categories), "
                         f"got {len(names)} classes from format {getattr(dataset, 'format', '?')!r}")

    # ---------------------------------------------------------------- models and training
    def build_arch(self, args: argparse.Namespace, arch: str, name: str, seed_offset: int = 0) -> nn.Module:
        """One network with paper 000's GAP + linear head, input size and preprocessing.

        The random parts (a head, or everything without ImageNet weights) are seeded from --seed, so that
        a run is reproducible and the bagged members start differently (``seed_offset``).
        """
        import zoo
        from zoo.config import Preprocessing

        torch.manual_seed(args.seed * 1000 + seed_offset)

        model = zoo.create_model(arch, paper=self.paper, task=self.task, labels=list(self.labels),
                                 pretrained=args.pretrained, head=self.head,
                                 output_stride=getattr(args, "output_stride", 32))
        model.config.name = name
        model.config.input_size = args.input_size
        model.config.preprocessing = Preprocessing(**self.preprocessing_of(args))
        return model

    def stages(self, args: argparse.Namespace, model: nn.Module) -> list[Stage]:
        """Transfer learning (only the head trains), then fine-tuning of every layer, both at --lr."""
        head = getattr(model, "head", None)
        out = []
        if args.frozen_epochs > 0 and isinstance(head, nn.Module):
            out.append(Stage("frozen", args.frozen_epochs, args.lr, trainable=lambda m: m.head.parameters()))
        out.append(Stage("fine-tune", args.epochs, args.lr))
        return out

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        """Stage 2's augmentation (stage 1 trains on the plain images)."""
        return stage2_augment(args.max_rotation)

    def loss(self, args: argparse.Namespace, train_targets: np.ndarray) -> nn.Module:
        """Focal loss (eq. 7), γ = --gamma, α_c inversely proportional to class c's frequency."""
        counts = class_counts(np.nan_to_num(train_targets), len(self.labels), self.task)
        alpha = inverse_frequency_weights(counts) if counts.sum() > 0 else None
        return FocalLoss(alpha=alpha, gamma=args.gamma, task=self.task)

    def loop_config(self, args: argparse.Namespace, model: nn.Module) -> LoopConfig:
        cfg = super().loop_config(args, model)
        cfg.plateau_patience = args.plateau_patience
        cfg.plateau_factor = 0.1
        cfg.min_lr = args.min_lr
        return cfg

    def train_one(self, args: argparse.Namespace, model: nn.Module, train_set: CachedImages,
                  val_set: CachedImages, tag: str, augment: aug.BatchOp, seed_offset: int = 0) -> FitResult:
        """Fit one network into ``--out/training/<tag>`` (its own checkpoints, so --resume works per model).

        ``seed_offset`` gives each member its own batch order and augmentation draws (bagged members and the
        two structures must not see the same views in the same order)."""
        cfg = self.loop_config(args, model)
        cfg.out_dir = Path(args.out) / "training" / tag
        cfg.seed = args.seed * 1000 + seed_offset
        return self.fit_sets(args, model, train_set, val_set, self.stages(args, model), cfg=cfg, augment=augment)

    # ---------------------------------------------------------------- the pipeline
    def train(self, args: argparse.Namespace, info: ddp.DistInfo) -> Trained:
        """Stage 1, the attention crops, stage 2's bagged networks, their fusion evaluated on held-out patients."""
        samples = self.labelled(self.load_samples(args), args)
        pool, holdout = self.split(samples, args)  # held-out patients evaluate the fused ensemble
        stage1_arch, g1_arch, g2_arch = self.architectures(args)
        name = args.name or self.name
        stage1 = self.build_arch(args, stage1_arch, f"{name}.stage1")
        data = self.prepare_data(args, info, stage1.config, pool, holdout, list(self.labels))
        if args.stage1_model:
            stage1 = self.load_stage1(args, stage1.config)
            stage1_arch = f"{stage1.config.name} ({stage1.config.arch}, reused)"
        history: list[dict[str, Any]] = []
        crops = self.attention_crops(args, stage1, stage1_arch, data, history)
        del stage1
        archs = {"g1": g1_arch, "g2": g2_arch}
        members = self.bagged_members(args, data, crops, archs, name, history)
        ensemble = self.fuse(args, members, archs, crops.note, name)
        return Trained(ensemble, self.evaluate_ensemble(args, ensemble, data, history), data)

    def attention_crops(self, args: argparse.Namespace, stage1: nn.Module, stage1_arch: str, data: PreparedData,
                        history: list[dict[str, Any]]) -> "Stage1Crops":
        """Stage 1 (trained here unless --stage1-model) and its attention crops of the training photos
        (paper 000, Fig. 1–2); none with --no-attention-crops."""
        if not args.attention_crops:
            return Stage1Crops(None, np.zeros(0, dtype=np.int64), "no attention crops (ablation)")
        if not args.stage1_model:
            log_run(history, "stage1", self.train_one(args, stage1, data.train, data.val, "stage1", aug.identity))
        # Crops of "local lesion features" (4.2): a no-disease label (Normal) has none to attend to.
        lesion_targets = data.train.targets.numpy().copy()
        normal = no_disease_index(list(self.labels))
        if normal is not None:
            lesion_targets[:, normal] = 0.0
        found = attention_crop_images(stage1, data.train.images, lesion_targets, args.theta,
                                      mean=stage1.config.mean, std=stage1.config.std, progress=not args.quiet)
        sources = np.asarray(found.source_index, dtype=np.int64)
        images = None
        if len(found):
            images = CachedImages.from_arrays(list(found.images), data.train.targets.numpy()[sources],
                                              names=[f"{data.train.names[i]}#crop{found.boxes[k]}"
                                                     for k, i in enumerate(sources)])
        note = (f"{len(found)} Guided Grad-CAM attention crops (θ = {args.theta:g}) of the {stage1_arch} "
                f"stage-1 model ({found.skipped_no_label} photos without a disease label and "
                f"{found.skipped_empty} with no pixel above θ gave none)")
        return Stage1Crops(images, sources, note)

    def bagged_members(self, args: argparse.Namespace, data: PreparedData, crops: "Stage1Crops",
                       archs: dict[str, str], name: str, history: list[dict[str, Any]]) -> dict[str, list[nn.Module]]:
        """Stage 2: k-fold bagging of G1 and G2 on the originals + the crops of the fold's training photos."""
        members: dict[str, list[nn.Module]] = {group: [] for group in archs}
        augment = self.training_augment(args)  # stage 2's, + CameraShift with --camera-augment
        # --folds 1: no bagging, each structure once on the whole training part, early-stopped on validation.
        folds = patient_folds(data.train_samples, args.folds, args.seed) if args.folds > 1 \
            else [(list(range(len(data.train))), None)]
        for fold, (train_idx, val_idx) in enumerate(folds):
            train_set = data.train.subset(train_idx)
            own = crops.of(train_idx)  # never a crop of a validation photo
            if own is not None:
                train_set = train_set.concat(own)
            val_set = data.val if val_idx is None else data.train.subset(val_idx)
            for group, arch in archs.items():
                tag = f"fold{fold}-{group}-{arch}"
                seed_offset = 1 + 2 * fold + (group == "g2")
                model = self.build_arch(args, arch, f"{name}.{group}.{fold}", seed_offset=seed_offset)
                log_run(history, tag, self.train_one(args, model, train_set, val_set, tag, augment,
                                                     seed_offset=seed_offset))
                members[group].append(model.cpu().eval())
        return members

    def fuse(self, args: argparse.Namespace, members: dict[str, list[nn.Module]], archs: dict[str, str],
             crop_note: str, name: str) -> nn.Module:
        """Fusion (eq. 6): λ · mean(G1) + σ · mean(G2) as one ``fusion_ensemble`` zoo model, described for its card."""
        from zoo.architectures.fusion import assemble

        ensemble = assemble(members["g1"], members["g2"], name=name, lam=args.lam, sigma=args.sigma)
        ensemble.config.theta = int(round(args.theta))
        bagging = (f"by {args.folds}-fold bagging over patients" if args.folds > 1 else
                   "without bagging (one network per structure on the whole training part, early-stopped on the "
                   "validation patients; the paper bags 5 folds)")
        ensemble.config.description = (
            f"Paper 000 fusion ensemble: {args.lam}·mean({args.folds}× {archs['g1']}) + {args.sigma}·mean("
            f"{args.folds}× {archs['g2']}) {bagging}, trained on the originals + {crop_note}, with focal loss "
            f"γ = {args.gamma:g}.")
        return ensemble

    ablation_rows: dict[str, dict[str, float]] = {}

    def publish(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> Path:
        """The hub repo, with the ablation rows in the card's metrics."""
        out = super().publish(args, model, result, data)
        if self.ablation_rows:
            model.config.metrics.update(self.ablation_rows)
            model.save_pretrained(out)
        return out

    def load_stage1(self, args: argparse.Namespace, config: Any) -> nn.Module:
        """--stage1-model, checked against this run's labels, input size and preprocessing.

        Raises:
            SystemExit: the model does not fit this run.
        """
        import zoo

        model = zoo.load(args.stage1_model)
        c = model.config
        if list(c.labels) != list(self.labels) or c.input_size != config.input_size \
                or c.preprocessing != config.preprocessing:
            raise SystemExit(f"error: --stage1-model {args.stage1_model!r} has labels {c.labels}, {c.input_size} px, "
                             f"{c.preprocessing}; this run needs {list(self.labels)}, {config.input_size} px, "
                             f"{config.preprocessing}")
        return model.float().eval()

    def ablation(self, members: dict[str, list[nn.Module]], ensemble: nn.Module, data: PreparedData,
                 cfg: LoopConfig, info: Any, prepare: Any) -> dict[str, dict[str, float]]:
        """Paper 000's ablation on the validation patients: each network alone, each structure's bagged mean,
        the fusion. Card rows "validation, ablation: …" (``python -m train ship`` keeps them)."""
        from train.report import flat_metrics_row
        from zoo.evaluation.metrics import compute_metrics

        def row(outputs: np.ndarray, targets: np.ndarray) -> dict[str, float]:
            m = compute_metrics(self.task, outputs, targets, list(self.labels), thresholds=ensemble.config.thresholds)
            return {k: v for k, v in flat_metrics_row(m).items() if k.startswith("auc") or k == "f1_micro"}

        rows: dict[str, dict[str, float]] = {}
        logits: dict[str, list[np.ndarray]] = {}
        targets = None
        for group, models in members.items():
            for fold, model in enumerate(models):
                model.to(info.device).eval()
                out, targets = evaluate_outputs(model, data.val, cfg, info, prepare)
                model.cpu()
                logits.setdefault(group, []).append(out)
                rows[f"validation, ablation: {group.upper()} {model.config.arch} fold {fold} alone"] = row(out, targets)
        for group, outs in ((g, o) for g, o in logits.items() if len(o) > 1):  # one network: its row says it
            # The bagged mean of one structure, as fusion_ensemble averages its members' probabilities.
            probs = np.mean([MULTILABEL.probabilities(o) for o in outs], axis=0).clip(1e-7, 1 - 1e-7)
            rows[f"validation, ablation: {group.upper()} bagged ({len(outs)} folds)"] = row(np.log(probs / (1 - probs)), targets)
        return rows

    def evaluate_ensemble(self, args: argparse.Namespace, ensemble: nn.Module, data: PreparedData,
                          history: list[dict[str, Any]]) -> FitResult:
        """The fused model's outputs on the held-out photos, as a ``FitResult`` for ``publish``."""
        cfg = self.loop_config(args, ensemble)
        info = ddp.init_distributed(args.device)
        ensemble.to(info.device).eval()
        prepare = Prepare(info.device, cfg.mean, cfg.std)
        outputs, targets = np.zeros((0, len(self.labels))), np.zeros((0, len(self.labels)))
        val_loss = float("nan")
        if len(data.val):
            outputs, targets = evaluate_outputs(ensemble, data.val, cfg, info, prepare)
            loss = self.loss(args, data.train.targets.numpy())
            val_loss = float(loss(torch.from_numpy(outputs).float(), torch.from_numpy(targets).float()))
            self.ablation_rows = self.ablation({"g1": list(ensemble.g1), "g2": list(ensemble.g2)}, ensemble, data,
                                               cfg, info, prepare)
        ensemble.cpu()
        return FitResult(history=history, best_val_loss=val_loss, best_epoch=-1, global_step=0, steps_run=0,
                         resumed_from=None, stopped_early=False, val_outputs=outputs, val_targets=targets)
