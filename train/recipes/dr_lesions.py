"""Paper 001: multi-label DR lesion classification (BP/MA, HM, HEX, CWS, healthy) with a fully
convolutional ResNet50 head, sigmoid outputs and per-class decision thresholds.

- preprocessing: black-border removal, 512×512, CLAHE ("all the training fundus images were enhanced
  by … CLAHE"); augmentation: "image shifting, rotating, flipping and mirroring";
- model: ResNet50 without FC + three convolution layers (``resnet50_fcn``), or any backbone with the
  ``fcn`` head (``--arch efficientnet_lite0``);
- loss: BCE with "a weight that was inversely proportional to the number of each category";
- "two-stage training": the base model frozen at lr 0.01, then all weights at 0.001 (the paper names
  no optimiser; these are SGD-sized rates, so SGD with momentum 0.9);
- "each optimum threshold to each" class, chosen on validation (Youden's J, or F1) and stored in
  ``config.thresholds``.

Labels come from several data sets at once (repeat ``--data DIR --format FMT``): IDRiD segmentation
masks (idrid-seg), YOLO lesion boxes (idrid-grading-boxes, diaretdb1-boxes, yolo), and DR grading sets such as
srahim-dr600 (grade 0: no lesion, healthy; mild DR: microaneurysms only, by the International Clinical DR scale;
worse grades: not healthy, lesion types unknown). A lesion type a data set does not annotate is unknown (NaN) for
its photos and left out of the loss (``fundus.datasets.labels.sample_target``). Beware: when the healthy photos
come from another data set than the lesion photos, a model can learn to tell the data sets apart
(camera, resolution, compression) instead of the lesions; validation on the same mix will not show it.

Beyond paper 001 (which trains on image-level labels only): ``--localisation-weight λ`` adds λ times a
localisation term to the loss, "right for the right reasons" (Ross et al. 2017) in the manner of GAIN
(Li et al. 2018, "Tell me where to look"): for each positive label of a photo with lesion masks
(idrid-seg) or boxes (yolo: hard_exudates → HEX, haemorrhage → HM), the share of the class map's energy
outside the annotated lesions (``train.localisation``; masks through the photo's crop and resize,
``train.lesion_masks``; moved with every flip and rotation, ``train.paired_augment``; with
``--frozen-blocks`` carried into each cached view, ``train.frozen_lesions``). λ = 0 (the default) is
the paper's training, unchanged.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
from typing import Any, Sequence

import numpy as np
import torch.nn as nn

from train import augment as aug
from train.loop import FitResult, LoopConfig, Stage
from train.data import default_cache_dir
from train.frozen import fit_on_frozen_features
from train.frozen_lesions import cache_features_with_lesions
from train.lesion_masks import lesion_masks
from train.localisation import LocalisationTerm, label_weights_from
from train.metrics import choose_thresholds
from train.recipes import PreparedData, Recipe, register
from fundus.datasets.labels import annotation_of, incompletely_boxed, missing_boxes_unknown, sample_target
from fundus.datasets.registry import LESION_BOXES, annotated_formats
from fundus.tasks import MULTILABEL
from zoo.papers import LESION_LABELS


def non_negative(text: str) -> float:
    """argparse type: a number ≥ 0."""
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be ≥ 0, got {text}")
    return value


def head_parameters(model: nn.Module):
    """Stage 1 trains only the new layers (the FCN head); the ImageNet backbone stays frozen."""
    head = getattr(model, "head", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no `head` module to train alone")
    return head.parameters()


@register
class DrLesionsRecipe(Recipe):
    name = "dr-lesions"
    paper = "001"
    task = MULTILABEL.name
    description = ("multi-label DR lesions (BP/MA, HM, HEX, CWS, healthy): 512 px, CLAHE, FCN head, "
                   "inverse-frequency BCE, two-stage training, per-class thresholds")
    labels = tuple(LESION_LABELS)
    archs = {"resnet50_fcn": 512, "efficientnet_lite0": 512, "efficientnet_lite1": 512, "efficientnet_lite2": 512}
    head = "fcn"
    preprocessing = {"fov_crop": True, "clahe": True}
    defaults = dict(arch="resnet50_fcn", epochs=30, batch_size=8, lr=1e-3, optimizer="sgd", momentum=0.9,
                    patience=8)

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--frozen-epochs", type=int, default=5,
                            help="stage 1: epochs with the backbone frozen (0: skip stage 1)")
        parser.add_argument("--frozen-lr", type=float, default=0.01, help="stage 1 learning rate (paper: 0.01)")
        parser.add_argument("--threshold-method", choices=("youden", "f1"), default="youden",
                            help="how each class's decision threshold is chosen on validation")
        parser.add_argument("--max-rotation", type=float, default=30.0, help="rotation range ± degrees")
        parser.add_argument("--max-shift", type=float, default=0.05, help="shift range ± fraction of the size")
        parser.add_argument("--missing-box", choices=("auto", "negative", "unknown"), default="auto",
                            help="box data sets: a lesion class without a box is absent (negative) or unknown "
                                 "(masked out of the loss); auto: the format's fact (python -m fundus.datasets): "
                                 "unknown for diaretdb1-boxes and a plain yolo folder, negative for "
                                 "idrid-grading-boxes")
        parser.add_argument("--fcn-widths", type=int, nargs=2, default=(512, 256), metavar=("C1", "C2"),
                            help="channels of the FCN head's two hidden 3×3 convolutions (paper 001 gives none; "
                                 "128 64 keeps an EfficientNet-Lite0 model under 12 MB in fp16)")
        parser.add_argument("--localisation-weight", type=non_negative, default=0.0, metavar="LAMBDA",
                            help="beyond paper 001: add LAMBDA × the share of each positive label's class map "
                                 "(CAM) energy outside its annotated lesions (idrid-seg masks, yolo boxes; "
                                 "Ross et al. 2017 'Right for the right reasons', Li et al. 2018 GAIN); photos "
                                 "and labels without annotation add nothing; 0: off, the paper's loss")
        parser.add_argument("--localisation-dilate", type=lambda text: int(non_negative(text)), default=1,
                            metavar="CELLS",
                            help="grow each lesion region by this many class-map cells (masks and boxes are "
                                 "coarse) before the localisation term measures the energy outside it")
        parser.add_argument("--localisation-label-weight", nargs="+", default=[], metavar="LABEL=W",
                            help="weight the localisation term per lesion type, e.g. HM=2 (haemorrhages are "
                                 "small: a one-cell dilation mostly fills their region); labels not named weigh 1")

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        """The base flags, and the label weights checked before any photo is read."""
        args = super().parse_args(argv)
        if args.localisation_label_weight and not args.localisation_weight > 0:
            raise SystemExit("error: --localisation-label-weight weights the localisation term: give "
                             "--localisation-weight > 0 too")
        try:
            label_weights_from(args.localisation_label_weight, self.labels)
        except ValueError as err:
            raise SystemExit(f"error: --localisation-label-weight: {err}") from None
        return args

    def model_kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        return {"arch_kwargs": {"fcn_widths": list(args.fcn_widths)}}

    # ------------------------------------------------------------------ the localisation term (beyond paper 001)
    def load_samples(self, args: argparse.Namespace) -> list[tuple[Any, Any]]:
        """The data sets' samples; remembers each annotated photo's masks/boxes for the localisation term."""
        samples = super().load_samples(args)
        annotated = annotated_formats()
        self.annotations = {str(s.image): (ds.format, s) for ds, s in samples if ds.format in annotated}
        return samples

    def make_datasets(self, args: argparse.Namespace, config: Any, train: list, val: list,
                      labels: list[str]) -> PreparedData:
        """The cached photos; with --localisation-weight also the training photos' lesion masks."""
        data = super().make_datasets(args, config, train, val, labels)
        if args.localisation_weight > 0:
            found = getattr(self, "annotations", {})
            masks = lesion_masks([found.get(str(s.image)) for s in data.train_samples],
                                 [s.image for s in data.train_samples], config, labels, workers=args.workers,
                                 cache_dir=args.cache_dir or default_cache_dir(), progress=not args.quiet)
            data.train = dataclasses.replace(data.train, lesions=masks)
            if not args.quiet:
                known = int(masks.flatten(2).amax(-1).sum())
                print(f"localisation term: {known} (photo, label) lesion regions in {len(masks)} training photos")
        return data

    def loop_config(self, args: argparse.Namespace, model: nn.Module) -> LoopConfig:
        cfg = super().loop_config(args, model)
        if args.localisation_weight > 0:
            cfg.localisation = LocalisationTerm.for_model(model, args.localisation_weight, args.localisation_dilate,
                                                          args.localisation_label_weight)
        return cfg

    def fit_sets(self, args: argparse.Namespace, model: nn.Module, train_set: Any, val_set: Any,
                 stages: list[Stage], train_indices: list[int] | None = None, cfg: LoopConfig | None = None,
                 augment: aug.BatchOp | None = None) -> FitResult:
        """The base pipeline; with the term and --frozen-blocks the cached views carry their masks."""
        cfg = cfg or self.loop_config(args, model)
        if cfg.localisation is None or not getattr(args, "frozen_blocks", 0):
            return super().fit_sets(args, model, train_set, val_set, stages, train_indices, cfg, augment)
        if train_indices is not None:
            train_set = train_set.subset(train_indices)
        augment = self.training_augment(args) if augment is None else augment
        return fit_on_frozen_features(model, self.loss(args, train_set.targets.numpy()), train_set, val_set, cfg,
                                      stages, augment, self.metric(args), args.frozen_blocks, args.cached_views,
                                      progress=not args.quiet, cache=cache_features_with_lesions)

    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> np.ndarray | None:
        target = sample_target(sample, dataset, self.labels, self.task)
        unknown = args.missing_box == "unknown" or (args.missing_box == "auto" and incompletely_boxed(dataset))
        if target is not None and annotation_of(dataset) == LESION_BOXES and unknown:
            # Box annotations are often incomplete (DIARETDB1's: 49 of 89 photos without a lesion box,
            # though only 5 are normal): a class without a box is then unknown, not absent.
            return missing_boxes_unknown(target, self.labels)
        return target

    def stages(self, args: argparse.Namespace, model: nn.Module) -> list[Stage]:
        frozen = min(args.frozen_epochs, args.epochs - 1)
        stages = [Stage("frozen-backbone", frozen, args.frozen_lr, trainable=head_parameters)] if frozen > 0 else []
        return stages + [Stage("all", args.epochs - max(frozen, 0), args.lr)]

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        return aug.Compose([
            aug.RandomFlip(horizontal=True, vertical=True),  # "flipping and mirroring"
            aug.RandomAffine(max_rotation=math.radians(args.max_rotation), max_shift=args.max_shift),
        ])

    def finalize(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> None:
        """Paper 001: one decision threshold per class, chosen on the validation photos."""
        if len(result.val_outputs) == 0:
            return
        probs = MULTILABEL.probabilities(result.val_outputs)
        model.config.thresholds = choose_thresholds(probs, result.val_targets, args.threshold_method)
