"""Recipe API and registry: one class per paper's training recipe, run by ``python -m train RECIPE``.

A recipe is a subclass of :class:`Recipe` registered with ``@register``. It states the paper's
defaults as class attributes and overrides small steps; the base class runs the pipeline::

    run(args)                                      # DDP set-up, then rank 0 publishes, then DDP teardown: once, here
      trained = self.train(args, info)             # step: the recipe's training, by default:
        samples  = self.load_samples(args)         #   (FundusDataset, Sample) per photo of each --data/--format
        labelled = self.labelled(samples, args)    #   hook: -> list[LabelledSample] (target per photo)
        train, val = self.split(labelled, args)    #   by patient (fundus.datasets.train_val_test_split)
        model    = self.build_model(args, labels)  #   hook: zoo.create_model(arch, paper, task, labels, head)
        data     = self.prepare_data(...)          #   make_datasets (preprocess once, cache) with rank 0 first
        extra    = self.extra_training_data(...)   #   hook: e.g. DCGAN images (paper 002)
        result   = self.fit(args, model, data)     #   train.loop.fit with the hooks below
        self.finalize(args, model, result, data)   #   hook: e.g. per-class thresholds (paper 001)
      self.publish(args, model, result, data)      # out dir = hub repo (+ --push-to-hub); rank 0 only

Hooks used by ``fit`` (override what differs from the defaults):
    stages(args, model) -> list[Stage]      one stage at --lr by default
    loss(args, train_targets) -> nn.Module  class-weighted BCE/CE by default
    augment(args) -> batched op             none by default (train.augment)
    metric(args) -> Metric                  the task's (train.metrics.default_metric) by default
    selection_metric(args) -> Metric        what --select-on metric selects on: metric(args) by default
    train_indices(args, train_set) -> list  all by default (undersampling hook)
    loop_config(args) -> LoopConfig         from the common flags and the class defaults

Writing a recipe (the others, e.g. paper 000's ensemble, override ``train`` and reuse the steps)::

    @register
    class MyRecipe(Recipe):
        name, paper, task = "my-recipe", "003", MULTICLASS.name
        description = "one line for --help"
        labels = ("a", "b")
        archs = {"resnet50": 224, "efficientnet_lite0": 224}   # arch -> default input size
        defaults = dict(arch="resnet50", epochs=15, batch_size=16, lr=1e-4, optimizer="adam")
        head = "gap_dropout_dense"
        preprocessing = dict(fov_crop=True, clahe=True)

        def target_of(self, sample, dataset, args):  # fundus Sample, FundusDataset -> target or None (skip)
            return sample.label

Common flags of every recipe: --data/--format (repeatable pairs), --preset, --split, --arch, --out,
--push-to-hub, --hub-endpoint, --epochs, --batch-size, --lr, --optimizer, --weight-decay, --input-size,
--seed, --resume, --max-steps, --checkpoint-every, --workers, --loader-workers, --device,
--val-fraction, --patience, --select-on, --limit, --cache-dir, --no-pretrained, --name, --quiet.
``python -m train RECIPE --help`` prints them with the paper's defaults.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch.nn as nn

from train import augment as aug
from train import ddp
from fundus.datasets.splits import TEST_FRACTION, VAL_FRACTION
from fundus.registration import Registry
from fundus.tasks import MULTICLASS, MULTILABEL, task_of
from train.data import CachedImages, default_cache_dir, preprocess_all
from train.frozen import fit_on_frozen_features
from train.losses import WeightedBCE, WeightedCrossEntropy, class_counts, inverse_frequency_weights
from train.loop import FitResult, LoopConfig, Stage, fit
from train.metrics import Metric, default_metric
from train.reproduce import command_line, recorded
from train.run_data import LabelledSample, PreparedData, describe_args
from zoo.helpformat import DefaultsHelpFormatter

# Every module of this package registers its recipes; they are imported on the first lookup (``discover``).
RECIPES: Registry = Registry("recipe", "train.recipes")
# --preprocessing choices: the enhancement step after the field-of-view crop (zoo.config.Preprocessing).
ENHANCEMENTS = {"none": dict(clahe=False, graham=False), "clahe": dict(clahe=True, graham=False),
                "graham": dict(clahe=False, graham=True)}


def register(cls: type["Recipe"]) -> type["Recipe"]:
    """Class decorator: make a recipe available as ``python -m train NAME``; its class attributes are its facts
    (name, paper, task, description, labels, archs, defaults, head, preprocessing).

    Raises:
        ValueError: the recipe has no name or the name is taken by another class.
    """
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a `name`")
    return RECIPES.add(cls.name, cls)


def available_recipes() -> list[str]:
    """Names of all registered recipes.

    Raises:
        Exception: whatever a recipe module raises on import (a broken recipe is an error, never skipped).
    """
    RECIPES.discover()
    return sorted(RECIPES)


def get_recipe(name: str) -> "Recipe":
    """An instance of the recipe registered under ``name``.

    Raises:
        ValueError: unknown recipe name.
    """
    RECIPES.discover()
    return RECIPES.lookup(name)()


@dataclass
class Trained:
    """What a recipe's ``train`` step hands to ``publish``."""

    model: nn.Module
    result: FitResult
    data: PreparedData


def add_transfer_flags(p: argparse.ArgumentParser) -> None:
    """Every recipe's flags for other cameras and CPU speed (none from the papers)."""
    g = p.add_argument_group("transfer to other cameras and CPU speed (not from the papers)")
    g.add_argument("--preprocessing", choices=("paper", *ENHANCEMENTS), default="paper",
                   help="enhancement after the field-of-view crop: the paper's, none, CLAHE, or graham "
                        "(local average colour subtraction)")
    g.add_argument("--camera-augment", action="store_true",
                   help="add train.augment.CameraShift (exposure, colour, gamma, blur, scale, JPEG quality)")
    g.add_argument("--aspect-augment", action="store_true",
                   help="add train.augment.AspectScale: the field squashed or stretched (width : height × "
                        "0.67–1.5) and the photo downscaled to 224–256 px, as redistributed data sets are")
    g.add_argument("--frozen-blocks", type=int, default=0, metavar="K",
                   help="EfficientNet-Lite: keep the stem and blocks[:K] at ImageNet and train on their cached "
                        "outputs (train.frozen; 0: fine-tune everything)")
    g.add_argument("--cached-views", type=int, default=4, metavar="V",
                   help="with --frozen-blocks: views cached per photo (the photo + V-1 augmented ones)")
    g.add_argument("--cpu-bf16", action="store_true",
                   help="bf16 autocast on CPUs with AVX512-BF16/AMX (ignored elsewhere)")
    g.add_argument("--channels-last", action="store_true", help="channels-last memory format on the CPU")


class Recipe:
    """Base class of the training recipes: the paper's defaults plus hooks (see the module docstring)."""

    name: str = ""
    paper: str = ""
    task: str = MULTICLASS.name
    description: str = ""
    labels: Sequence[str] = ()
    archs: dict[str, int] = {}
    head: str | None = None  # zoo head ("gap_linear", "gap_dropout_dense", "fcn", …); None: the paper's
    preprocessing: dict[str, Any] = {"fov_crop": True, "clahe": False}
    defaults: dict[str, Any] = {}

    # ------------------------------------------------------------------ CLI
    def default(self, key: str, fallback: Any = None) -> Any:
        return self.defaults.get(key, fallback)

    def build_parser(self) -> argparse.ArgumentParser:
        """The recipe's argparse parser: common flags with this recipe's defaults, then its own."""
        p = argparse.ArgumentParser(
            prog=f"python -m train {self.name}",
            description=f"{self.description} (paper {self.paper})" if self.paper else self.description,
            formatter_class=DefaultsHelpFormatter,
        )
        self.add_data_flags(p)
        self.add_training_flags(p)
        add_transfer_flags(p)
        self.add_arguments(p)
        return p

    def add_data_flags(self, p: argparse.ArgumentParser) -> None:
        """The data sets, the architecture, where the model goes."""
        d = self.default
        p.add_argument("--data", action="append", type=Path, required=True,
                       help="data set folder; repeat with --format to combine data sets")
        p.add_argument("--format", action="append", dest="formats", metavar="FMT",
                       help="data set format of each --data (fundus.datasets.load_dataset); one value applies to all")
        p.add_argument("--preset", default=None, help="imagefolder preset, e.g. srahim-dr600")
        p.add_argument("--split", default=None,
                       help="data set split to load (default: train, or all for layouts without official splits)")
        p.add_argument("--arch", default=d("arch"), choices=sorted(self.archs) if self.archs else None,
                       help="architecture (zoo.create_model)")
        p.add_argument("--out", type=Path, default=Path(d("out", f"runs/{self.name}")),
                       help="output folder: becomes a hub repo (config.json, model.safetensors, README.md)")
        p.add_argument("--push-to-hub", metavar="REPO_ID", default=None, help="upload the out folder to this hub repo")
        p.add_argument("--hub-endpoint", default=None, help="hub endpoint URL (default: HF_ENDPOINT or huggingface.co)")

    def add_training_flags(self, p: argparse.ArgumentParser) -> None:
        """The loop's settings (with this recipe's defaults), the split, the caches and the model's name."""
        d = self.default
        p.add_argument("--epochs", type=int, default=d("epochs", 10), help="epochs in total")
        p.add_argument("--batch-size", type=int, default=d("batch_size", 16), help="photos per step (per process)")
        p.add_argument("--lr", type=float, default=d("lr", 1e-3), help="learning rate (of the last stage)")
        p.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default=d("optimizer", "adam"),
                       help="optimiser (SGD with momentum 0.9)")
        p.add_argument("--weight-decay", type=float, default=d("weight_decay", 0.0), help="L2 weight decay")
        p.add_argument("--input-size", type=int, default=None,
                       help="input side in px (default: per architecture: "
                            + ", ".join(f"{a} {s}" for a, s in sorted(self.archs.items())) + ")")
        p.add_argument("--output-stride", type=int, choices=(32, 16, 8), default=32,
                       help="the explained layer's stride: 16 / 8 dilate the backbone's last stage(s) instead of "
                            "striding them (DeepLab), a 2× / 4× finer map grid (EfficientNet-Lite, ResNet50; "
                            "--frozen-blocks 4 keeps its cache at 16); default 32, the architecture as designed")
        p.add_argument("--seed", type=int, default=0, help="seeds the split, initialisation and augmentation")
        p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in --out")
        p.add_argument("--max-steps", type=int, default=None, help="stop after N optimizer steps (quick runs)")
        p.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
        p.add_argument("--workers", type=int, default=2, help="processes for preprocessing the photos (once, cached)")
        p.add_argument("--loader-workers", type=int, default=0,
                       help="DataLoader workers during training (0: the preprocessed images are already in memory)")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        p.add_argument("--val-fraction", type=float, default=d("val_fraction", VAL_FRACTION),
                       help="share of each data set's patients held out for validation (early stopping, thresholds)")
        p.add_argument("--test-fraction", type=float, default=TEST_FRACTION,
                       help="share of each data set's patients held out for the test (never trained on nor "
                            "used for choices; `python -m train ship` measures the shipped model on it)")
        p.add_argument("--patience", type=int, default=d("patience", 10), help="early stopping patience (epochs)")
        p.add_argument("--select-on", choices=("metric", "loss"), default=d("select_on", "loss"),
                       help="what picks the best epoch (the weights kept) and counts the patience: the validation "
                            f"loss, or the validation {self.selection_metric_name()} (higher is better)")
        p.add_argument("--limit", type=int, default=None, help="use only the first N photos (quick runs)")
        p.add_argument("--cache-dir", type=Path, default=None,
                       help="preprocessed-image cache (default: $FCZ_CACHE_DIR or ~/.cache/fundus-cam-zoo)")
        p.add_argument("--no-pretrained", dest="pretrained", action="store_false",
                       help="random initialisation instead of ImageNet weights")
        p.add_argument("--name", default=None, help="model name in config.json (default: the recipe name)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Hook: the recipe's own flags."""

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        """Parse and check the flags.

        Raises:
            SystemExit: (argparse) on bad flags, e.g. --data and --format counts that cannot be paired.
        """
        parser = self.build_parser()
        args = parser.parse_args(list(argv))
        formats = args.formats or []
        if not formats:
            parser.error("--format is required (one per --data, or one for all)")
        if len(formats) == 1:
            formats = formats * len(args.data)
        if len(formats) != len(args.data):
            parser.error(f"{len(args.data)} --data but {len(args.formats)} --format: give one, or one per --data")
        args.formats = formats
        args.input_size = args.input_size or self.archs.get(args.arch, 224)
        args.recipe = self.name
        # The command that trains this model from scratch (--resume only continues an interrupted run), as facts
        # (ModelConfig.training: ship parses them again) and as the line the card shows.
        args.training = recorded(self.name, argv)
        args.command = command_line(args.training)
        return args

    # ------------------------------------------------------------------ data
    def load_samples(self, args: argparse.Namespace) -> list[tuple[Any, Any]]:
        """``(FundusDataset, Sample)`` pairs of every --data/--format pair, in order (a preset format such as
        ``--format srahim-dr600`` is ``--format imagefolder --preset srahim-dr600``)."""
        from fundus.datasets.labelled import load_layout

        out: list[tuple[Any, Any]] = []
        for root, fmt in zip(args.data, args.formats):
            ds = load_layout(root, fmt, args.split, preset=args.preset)
            out += [(ds, s) for s in ds]
        return out

    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> Any:
        """Hook: the training target of one sample of ``dataset`` (a fundus FundusDataset), None to leave it out."""
        return sample.label

    def meta_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> np.ndarray | None:
        """Hook: extra per-photo inputs (None: the model takes the image only)."""
        return None

    def labelled(self, samples: list[tuple[Any, Any]], args: argparse.Namespace) -> list[LabelledSample]:
        """Turn data set samples into training samples via ``target_of``; apply --limit."""
        out = []
        for ds, s in samples:
            target = self.target_of(s, ds, args)
            if target is None:
                continue
            pid = str(getattr(s, "patient_id", "") or Path(s.image).stem)
            name = Path(ds.root).name
            out.append(LabelledSample(Path(s.image), target, f"{name}:{pid}", name, self.meta_of(s, ds, args)))
        if args.limit:
            out = out[: args.limit]
        if not out:
            raise ValueError(f"recipe {self.name!r} found no usable photo in {', '.join(map(str, args.data))}")
        return out

    def split(self, samples: list[LabelledSample], args: argparse.Namespace) -> tuple[list[LabelledSample], list[LabelledSample]]:
        """Train/validation split, each data set by patient (``fundus.datasets.train_val_test_split``).

        The test part (``--test-fraction`` of each data set's patients) is kept aside in ``self.test_samples``:
        never trained on, never used for a choice; ``publish`` records it for ``python -m train ship``.
        """
        from fundus.datasets import train_val_test_split

        parts = train_val_test_split(samples, val_fraction=max(args.val_fraction, 0.0),
                                     test_fraction=max(getattr(args, "test_fraction", 0.0), 0.0), seed=args.seed)
        self.test_samples = parts["test"]
        return parts["train"], parts["val"]

    def make_datasets(self, args: argparse.Namespace, config: Any, train: list[LabelledSample],
                      val: list[LabelledSample], labels: list[str]) -> PreparedData:
        """Preprocess every photo once (through the disk cache) into in-memory ``CachedImages``."""
        cache = args.cache_dir or default_cache_dir()
        unreadable: dict[str, str] = {}

        def build(samples: list[LabelledSample]) -> tuple[CachedImages, list[LabelledSample]]:
            imgs, bad = preprocess_all([s.image for s in samples], config, workers=args.workers,
                                       cache_dir=cache, progress=not args.quiet)
            unreadable.update(bad)
            keep = [i for i, im in enumerate(imgs) if im is not None]
            kept = [samples[i] for i in keep]
            targets = np.stack([np.asarray(s.target) for s in kept]) if kept else np.zeros((0,))
            meta = np.stack([s.meta for s in kept]) if kept and kept[0].meta is not None else None
            return CachedImages.from_arrays([imgs[i] for i in keep], targets, meta,
                                            [str(s.image) for s in kept]), kept

        train_set, train_kept = build(train)
        val_set, val_kept = build(val)
        if len(train_set) == 0:
            raise ValueError("no readable training photo")
        return PreparedData(labels, train_set, val_set, train_kept, val_kept, unreadable,
                            sorted({s.source for s in train_kept + val_kept}))

    def extra_training_data(self, args: argparse.Namespace, data: PreparedData) -> CachedImages | None:
        """Hook: more training images (e.g. paper 002's DCGAN samples), appended to the training set."""
        return None

    # ------------------------------------------------------------------ model and training
    def build_model(self, args: argparse.Namespace, labels: list[str]) -> nn.Module:
        """Hook: the zoo model with this recipe's head, preprocessing and input size in its config."""
        import zoo
        from zoo.config import Preprocessing

        model = zoo.create_model(args.arch, paper=self.paper, task=self.task, labels=list(labels),
                                 pretrained=args.pretrained, head=self.head, name=args.name or self.name,
                                 input_size=args.input_size, preprocessing=Preprocessing(**self.preprocessing_of(args)),
                                 output_stride=getattr(args, "output_stride", 32), **self.model_kwargs(args))
        return model

    def preprocessing_of(self, args: argparse.Namespace) -> dict[str, Any]:
        """The paper's preprocessing, with the enhancement --preprocessing chose."""
        choice = getattr(args, "preprocessing", "paper")
        return {**self.preprocessing, **ENHANCEMENTS.get(choice, {})}

    def model_kwargs(self, args: argparse.Namespace) -> dict[str, Any]:
        """Hook: extra keyword arguments for ``zoo.create_model`` (ModelConfig fields)."""
        return {}

    def stages(self, args: argparse.Namespace, model: nn.Module) -> list[Stage]:
        """Hook: the training stages (default: everything at --lr for --epochs)."""
        return [Stage("train", args.epochs, args.lr)]

    def loss(self, args: argparse.Namespace, train_targets: np.ndarray) -> nn.Module:
        """Hook: the loss; default weighted inversely to class frequency (papers 001, 003)."""
        n = len(self.labels)
        counts = class_counts(np.nan_to_num(train_targets), n, self.task)
        w = inverse_frequency_weights(counts)
        return WeightedBCE(w) if task_of(self.task) is MULTILABEL else WeightedCrossEntropy(w)

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        """Hook: batched training augmentation (default: none)."""
        return aug.identity

    def metric(self, args: argparse.Namespace) -> Metric:
        """Hook: the headline metric in the progress bar and the log."""
        return default_metric(self.task)

    def selection_metric(self, args: argparse.Namespace | None = None) -> Metric:
        """Hook: the metric ``--select-on metric`` picks the best epoch by (default: the headline ``metric``)."""
        return self.metric(args)

    def selection_metric_name(self) -> str:
        """The selection metric's name for --help (a recipe whose ``metric`` needs its flags: "metric")."""
        try:
            return self.selection_metric(None).name
        except Exception:  # noqa: BLE001 - a hook that reads the flags: only --help's wording depends on it
            return "metric"

    def train_indices(self, args: argparse.Namespace, train_set: CachedImages) -> list[int] | None:
        """Hook: which training items to draw from (default: all)."""
        return None

    def loop_config(self, args: argparse.Namespace, model: nn.Module) -> LoopConfig:
        """The loop settings from the common flags."""
        c = model.config
        return LoopConfig(out_dir=Path(args.out) / "training", batch_size=args.batch_size, seed=args.seed,
                          device=args.device, workers=args.loader_workers, max_steps=args.max_steps,
                          checkpoint_every=args.checkpoint_every, resume=args.resume, optimizer=args.optimizer,
                          weight_decay=args.weight_decay, patience=args.patience,
                          momentum=self.default("momentum", 0.9), mean=c.mean, std=c.std,
                          progress=not args.quiet, cpu_bf16=getattr(args, "cpu_bf16", False),
                          cpu_channels_last=getattr(args, "channels_last", False),
                          select_on=getattr(args, "select_on", "loss"),
                          select_metric=self.selection_metric(args) if getattr(args, "select_on", "loss") == "metric"
                          else None)

    def training_augment(self, args: argparse.Namespace) -> aug.BatchOp:
        """The recipe's augmentation, followed by ``AspectScale`` with --aspect-augment and ``CameraShift`` with
        --camera-augment."""
        ops = [self.augment(args)]
        if getattr(args, "aspect_augment", False):
            ops.append(aug.AspectScale())
        if getattr(args, "camera_augment", False):
            ops.append(aug.CameraShift())
        return ops[0] if len(ops) == 1 else aug.Compose(ops)

    def fit(self, args: argparse.Namespace, model: nn.Module, data: PreparedData) -> FitResult:
        """Run ``train.loop.fit`` with this recipe's hooks."""
        return self.fit_sets(args, model, data.train, data.val, self.stages(args, model),
                             train_indices=self.train_indices(args, data.train))

    def fit_sets(self, args: argparse.Namespace, model: nn.Module, train_set: CachedImages, val_set: CachedImages,
                 stages: list[Stage], train_indices: list[int] | None = None, cfg: LoopConfig | None = None,
                 augment: aug.BatchOp | None = None) -> FitResult:
        """``train.loop.fit`` on these sets; with --frozen-blocks K on cached features of the frozen bottom.

        ``augment`` replaces the recipe's ``training_augment`` (e.g. paper 000's stage-2 augmentation).
        """
        cfg = cfg or self.loop_config(args, model)
        loss = self.loss(args, train_set.targets.numpy())
        augment = self.training_augment(args) if augment is None else augment
        if not getattr(args, "frozen_blocks", 0):
            return fit(model, loss, train_set, val_set, cfg, stages, augment=augment,
                       metric=self.metric(args), train_indices=train_indices)
        if train_indices is not None:
            train_set = train_set.subset(train_indices)
        return fit_on_frozen_features(model, loss, train_set, val_set, cfg, stages, augment, self.metric(args),
                                      args.frozen_blocks, args.cached_views, progress=not args.quiet)

    def finalize(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> None:
        """Hook: after training, before publishing (e.g. choose decision thresholds on validation)."""

    def fit_grade_decision(self, args: argparse.Namespace, model: nn.Module, result: FitResult) -> None:
        """The DR graders' decision fitted on the best epoch's validation outputs, into the model's config
        (``fundus.tasks.grade_rule`` reads it wherever the model decides): a grade regression's cut-offs
        (``train.metrics.fit_grade_cutoffs``, instead of 0.5 / 1.5 / 2.5 / 3.5), a multiclass grader's argmax or
        expected grade at fitted cut-offs (``train.metrics.choose_grade_rule``), by quadratic kappa. Nothing with
        ``--fixed-decision`` or without validation photos; the fit goes to ``training/grade_rule.json``."""
        from train.metrics import choose_grade_rule, fit_grade_cutoffs

        outputs, targets = np.asarray(result.val_outputs), np.asarray(result.val_targets).reshape(-1)
        if getattr(args, "fixed_decision", False) or not len(targets):
            return
        cfg = model.config
        if task_of(cfg.task).regression:
            start = list(cfg.grade_cutoffs)
            cfg.grade_cutoffs, before, after = fit_grade_cutoffs(outputs, targets, start)
            self.decision_fit = {"rule": "regression cut-offs", "start": start, "cutoffs": cfg.grade_cutoffs,
                                 "kappa_start": before, "kappa_fitted": after, "validation_photos": len(targets)}
        else:
            rule = choose_grade_rule(outputs, targets)
            cfg.expected_grade_cutoffs = rule.expected_cutoffs
            self.decision_fit = {**rule.to_dict(), "validation_photos": len(targets)}
        if not args.quiet:
            print(f"grade decision fitted on validation: {self.decision_fit}")

    # ------------------------------------------------------------------ publishing
    def publish(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> Path:
        """Make ``--out`` a hub repo (config.json, model.safetensors, README.md, report) and push it on request."""
        import json

        from train.report import publish_run

        out = publish_run(self, args, model, result, data)
        if getattr(self, "decision_fit", None):
            (out / "training" / "grade_rule.json").write_text(json.dumps(self.decision_fit, indent=1) + "\n")
        return out

    # ------------------------------------------------------------------ the pipeline
    def run(self, args: argparse.Namespace) -> Path:
        """The whole pipeline (see the module docstring): DDP set-up, ``train``, ``publish`` on rank 0, DDP
        teardown; returns the out folder."""
        info = ddp.init_distributed(args.device)
        trained = self.train(args, info)
        out = Path(args.out)
        if info.is_main:
            out = self.publish(args, trained.model, trained.result, trained.data)
        ddp.barrier(info)
        ddp.cleanup(info)
        return out

    def train(self, args: argparse.Namespace, info: ddp.DistInfo) -> Trained:
        """Step: the model trained and finalized, with its data (recipes with more phases override this)."""
        samples = self.labelled(self.load_samples(args), args)
        train_s, val_s = self.split(samples, args)
        labels = list(self.labels)
        model = self.build_model(args, labels)
        data = self.prepare_data(args, info, model.config, train_s, val_s, labels)
        extra = self.extra_training_data(args, data)
        if extra is not None and len(extra):
            data.train = data.train.concat(extra)
        result = self.fit(args, model, data)
        self.finalize(args, model, result, data)
        return Trained(model, result, data)

    def prepare_data(self, args: argparse.Namespace, info: ddp.DistInfo, config: Any, train: list[LabelledSample],
                     val: list[LabelledSample], labels: list[str]) -> PreparedData:
        """Step: ``make_datasets``; under torchrun rank 0 fills the preprocessing cache, the others then read it."""
        if info.distributed and not info.is_main:
            ddp.barrier(info)
        data = self.make_datasets(args, config, train, val, labels)
        if info.distributed and info.is_main:
            ddp.barrier(info)
        return data

    def main(self, argv: Sequence[str]) -> int:
        """CLI entry of one recipe."""
        args = self.parse_args(argv)
        out = self.run(args)
        if not args.quiet:
            print(f"model written to {out}")
        return 0


__all__ = ["Recipe", "LabelledSample", "PreparedData", "Trained", "register", "get_recipe", "available_recipes",
           "RECIPES", "describe_args", "Stage"]
