"""Paper 002 (ODIR-5K, 8 labels N D G C A H M O): simple CNN, VGG13-BN, Inception v3; BCE + SGD.

- augmentation: "random Gaussian noise of variance 0.01", "random rotation between -π/4 and π/4",
  "rescaled the intensity between its 0.2 and 99.8 percentile"; no flips ("due to the asymmetric
  structure of the left and right eyes");
- loss and optimiser: binary cross entropy, SGD "with a weight decay parameter adding a L2-regularization";
- "The training data was undersampled as some classes were too prominent": photos whose rarest label
  is a dominant class are randomly dropped down to ``--undersample-factor`` × the median class count;
- ``--dcgan``: one DCGAN per class at 64×64 (LeakyReLU generator, ``train.dcgan``), its samples added
  to the training set with that class as label;
- ``--metadata``: normalised age and digit-encoded sex concatenated to the pooled image features,
  then two dense layers ("concatenation … to flattened image features … passed through two
  additional dense layers"): the zoo's ``metadata_fusion`` architecture
  (``zoo.architectures.metadata_fusion``);
- score: micro F1.
"""
from __future__ import annotations

import argparse
import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn

from train import augment as aug
from train.data import CachedImages
from train.losses import WeightedBCE
from train.recipes import PreparedData, Recipe, register
from zoo.architectures import get_spec
from zoo.architectures.metadata_fusion import METADATA_FIELDS
from fundus.datasets.labels import DIAGNOSIS_NAMES, is_diagnosis_space, sample_target
from fundus.tasks import MULTILABEL
from zoo.papers import ODIR_LABELS


def encode_metadata(meta: dict[str, Any]) -> np.ndarray:
    """Paper 002's extra inputs: age / 100 (0.5 when missing) and sex as a digit (male 1, female 0, else 0.5)."""
    age = meta.get("age")
    sex = str(meta.get("sex") or "").strip().lower()
    return np.array([0.5 if age is None else float(age) / 100.0,
                     1.0 if sex in ("male", "m") else 0.0 if sex in ("female", "f") else 0.5], dtype=np.float32)


# ---------------------------------------------------------------------------- undersampling


def undersample(targets: np.ndarray, factor: float = 2.0, seed: int = 0) -> list[int]:
    """Indices kept after undersampling the dominant classes of a multi-hot training set.

    Each photo is grouped by its rarest positive label; a group larger than ``factor`` × the median
    class count is randomly cut down to that size. Photos with no label are kept.

    Raises:
        ValueError: factor <= 0 or targets not (N, C).
    """
    t = np.nan_to_num(np.asarray(targets, dtype=np.float64))
    if t.ndim != 2:
        raise ValueError(f"targets must be (N, C) multi-hot, got shape {t.shape}")
    if factor <= 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    counts = t.sum(0)
    present = counts[counts > 0]
    if present.size == 0:
        return list(range(len(t)))
    cap = max(1, int(math.ceil(factor * float(np.median(present)))))
    rarest = np.where(t.any(1), np.argmin(np.where(t > 0, counts[None, :], np.inf), axis=1), -1)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for group in np.unique(rarest):
        idx = np.flatnonzero(rarest == group)
        if group >= 0 and len(idx) > cap:
            idx = np.sort(rng.choice(idx, cap, replace=False))
        keep += idx.tolist()
    return sorted(keep)


# ---------------------------------------------------------------------------- the recipe


@register
class OdirRecipe(Recipe):
    name = "odir"
    paper = "002"
    task = MULTILABEL.name
    description = ("ocular diseases (ODIR-5K, N D G C A H M O): Gaussian noise, rotation ±π/4, percentile "
                   "contrast, no flips; BCE + SGD with weight decay; undersampling; optional DCGAN and metadata")
    labels = tuple(ODIR_LABELS)
    archs = {"simple_cnn": 512, "vgg13_bn": 224, "inception_v3": 299, "efficientnet_lite0": 224,
             "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    head = None  # the paper's: VGG13-BN's own classifier, Inception's GAP head, simple CNN's dense layers
    preprocessing = {"fov_crop": True, "clahe": False}
    defaults = dict(arch="vgg13_bn", epochs=50, batch_size=16, lr=0.01, optimizer="sgd", momentum=0.9,
                    weight_decay=5e-4, patience=10)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--labels", nargs="+", default=list(ODIR_LABELS), metavar="LABEL",
                            help="the ODIR-5K diagnoses to train, by letter or name, Normal included (e.g. Normal "
                                 "Diabetes Glaucoma Cataract); other sources are read into them by "
                                 "fundus.datasets.labels.diagnosis_target")
        parser.add_argument("--no-undersample", dest="undersample", action="store_false",
                            help="keep every training photo (no undersampling of dominant classes)")
        parser.add_argument("--undersample-factor", type=float, default=2.0,
                            help="cap each rarest-label group at this × the median class count")
        parser.add_argument("--metadata", action="store_true",
                            help="concatenate normalised age and digit-encoded sex to the image features")
        parser.add_argument("--dcgan", action="store_true", help="add per-class DCGAN images (64×64) to training")
        parser.add_argument("--dcgan-epochs", type=int, default=100, help="DCGAN epochs per class")
        parser.add_argument("--dcgan-per-class", type=int, default=100, help="generated photos added per class")
        parser.add_argument("--dcgan-min-images", type=int, default=16,
                            help="train a class's DCGAN only with at least this many photos")
        parser.add_argument("--dcgan-width", type=int, default=64, help="DCGAN channel multiplier")
        parser.add_argument("--dcgan-batch-size", type=int, default=64, help="DCGAN batch size")

    def parse_args(self, argv):
        args = super().parse_args(argv)
        if not is_diagnosis_space(args.labels):
            raise SystemExit(f"error: --labels must be distinct ODIR-5K diagnoses including Normal "
                             f"({', '.join(f'{k} {v}' for k, v in DIAGNOSIS_NAMES.items())}), got {args.labels}")
        self.labels = tuple(args.labels)
        return args

    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> np.ndarray | None:
        return sample_target(sample, dataset, self.labels, self.task)

    def meta_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> np.ndarray | None:
        return encode_metadata(getattr(sample, "meta", None) or {}) if args.metadata else None

    def build_model(self, args: argparse.Namespace, labels: list[str]) -> nn.Module:
        if not args.metadata:
            return super().build_model(args, labels)
        import zoo
        from zoo.config import Preprocessing

        if not hasattr(get_spec(args.arch), "heads") or "gap_linear" not in get_spec(args.arch).heads:
            raise ValueError(f"--metadata needs a backbone architecture with a GAP head, not {args.arch!r}")
        return zoo.create_model(
            "metadata_fusion", paper=self.paper, task=self.task, labels=list(labels), pretrained=args.pretrained,
            name=args.name or f"{self.name}-metadata", input_size=args.input_size,
            output_stride=getattr(args, "output_stride", 32),
            preprocessing=Preprocessing(**self.preprocessing_of(args)), mean=get_spec(args.arch).mean, std=get_spec(args.arch).std,
            arch_kwargs={"base_arch": args.arch, "base_kwargs": {"head": "gap_linear"},
                         "metadata": list(METADATA_FIELDS), "hidden": 256})

    def loss(self, args: argparse.Namespace, train_targets: np.ndarray) -> nn.Module:
        return WeightedBCE(None)  # plain BCE: the paper balances by undersampling instead

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        return aug.Compose([aug.GaussianNoise(0.01), aug.RandomAffine(max_rotation=math.pi / 4),
                            aug.PercentileContrast(0.2, 99.8, p=0.5)])

    def train_indices(self, args: argparse.Namespace, train_set: CachedImages) -> list[int] | None:
        if not args.undersample:
            return None
        # Only real photos are undersampled; DCGAN samples (appended last) are all kept.
        real = [i for i, n in enumerate(train_set.names) if not n.startswith("dcgan:")] if train_set.names \
            else list(range(len(train_set)))
        kept = undersample(train_set.targets.numpy()[real], args.undersample_factor, args.seed)
        return [real[i] for i in kept] + sorted(set(range(len(train_set))) - set(real))

    def extra_training_data(self, args: argparse.Namespace, data: PreparedData) -> CachedImages | None:
        """``--dcgan``: a DCGAN per class with enough photos; its samples labelled with that class."""
        if not args.dcgan:
            return None
        from train.dcgan import generate, train_dcgan
        from train.ddp import resolve_device

        device = resolve_device(args.device)
        targets = np.nan_to_num(data.train.targets.numpy())
        images, labels, metas = [], [], []
        for k, name in enumerate(self.labels):
            idx = np.flatnonzero(targets[:, k] > 0)
            if len(idx) < max(2, args.dcgan_min_images):
                continue
            gen, _ = train_dcgan(data.train.images[torch.as_tensor(idx)], epochs=args.dcgan_epochs,
                                 batch_size=args.dcgan_batch_size, width=args.dcgan_width, seed=args.seed + k,
                                 device=device, progress=not args.quiet)
            fake = generate(gen, args.dcgan_per_class, data.train.images.shape[-1], seed=args.seed + k)
            images.append(fake)
            one_hot = np.zeros((len(fake), len(self.labels)), np.float32)
            one_hot[:, k] = 1.0
            labels.append(one_hot)
            if data.train.meta is not None:
                metas.append(data.train.meta[torch.as_tensor(idx)].mean(0, keepdim=True).expand(len(fake), -1))
        if not images:
            return None
        meta = torch.cat(metas) if metas else None
        return CachedImages(torch.cat(images), torch.from_numpy(np.concatenate(labels)), meta,
                            [f"dcgan:{self.labels[int(np.argmax(row))]}" for row in np.concatenate(labels)])

    def fit(self, args: argparse.Namespace, model: nn.Module, data: PreparedData):
        if args.metadata and data.train.meta is not None and hasattr(model, "meta_default"):
            model.meta_default.copy_(data.train.meta.mean(0))  # image-only callers get the training mean
        return super().fit(args, model, data)
