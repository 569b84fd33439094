"""Paper 004 (ELLG): DR grade regression with iterative explainable lesion generation.

``python -m train ellg`` runs the framework of paper 004's Fig. 1:

1. Lesion learning — the DR detection net (``dr_detection_net``: three conv blocks with 27², 13², 6²
   outputs at 512 px and a regression classifier; or ``--arch efficientnet_lite0`` with a one-output
   head) learns the severity as a value, grades by the cut-offs 0.5, 1.5, 2.5, 3.5.
2. Rounds (``--rounds``, 4 in the paper) of
   - lesion visualisation: the GMSM (eq. 1–3, gate ``--t``) of every *correctly classified* training
     photo with lesions;
   - lesion generation (``train.ellg``): patches where the GMSM exceeds τ ~ U(``--tau-range``) (eq. 4),
     shifted randomly without overlap (≤ 100 tries), Reinhard colour transfer in lαβ to a randomly
     chosen correctly classified normal photo, mixup blend with r ~ U(``--r-range``) (eq. 5) and the
     label mixed the same way and re-graded (eq. 6);
   - training on original + generated photos (``--round-epochs``; the learning rate starts at
     ``--round-lr`` and drops ×0.1 after each third of the round, as the paper's 3e-5 → 3e-6 → 3e-7).
3. Evaluation on held-out patients: quadratic weighted kappa and accuracy.

Paper defaults: Database2 (APTOS 2019) 30 epochs at lr 8e-5, batch 64; rounds of 30 epochs starting
at 3e-5 (Database1); t = 1.0; τ ∈ [0.5, 0.8]. The paper gives no range for r: [0.5, 1.0] keeps the
lesions visible. Loss: mean squared error on the grade (the DR detection net is a regression model).
"""
from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn
from tqdm.auto import tqdm

from train import augment as aug
from train import ddp
from train.attention_crops import fov_mask_of, saliency_maps
from train.data import CachedImages
from train.ellg import classify, generate_lesion_image
from train.loop import FitResult, Prepare, Stage, evaluate_outputs
from train.recipes import PreparedData, Recipe, Trained, register
from fundus.datasets.labels import DR_GRADES, sample_target
from fundus.tasks import GRADE_REGRESSION

LITE_INPUT = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}


class GradeMSE(nn.Module):
    """Mean squared error between the regressed severity (B, 1) and the grade (B,)."""

    def forward(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(outputs.reshape(-1).float(), targets.reshape(-1).float())


@dataclass
class RoundReport:
    """What one generation round produced (for the log and the model card)."""

    round: int
    correct: int = 0
    sources: int = 0
    normals: int = 0
    normals_fallback: bool = False
    generated: int = 0
    no_lesion: int = 0
    overlapping_patches: int = 0
    grades: dict[int, int] = field(default_factory=dict)


def round_stages(epochs: int, lr: float, tag: str) -> list[Stage]:
    """A round's schedule: its epochs in three near-equal parts at lr, lr/10, lr/100 (paper 004, 3.1)."""
    if epochs < 1:
        raise ValueError(f"a round needs at least 1 epoch, got {epochs}")
    parts = [len(p) for p in np.array_split(np.arange(epochs), 3) if len(p)]
    return [Stage(f"{tag}-lr{k}", n, lr * 0.1**k) for k, n in enumerate(parts)]


def select_sources(predicted: np.ndarray, truth: np.ndarray,
                   mode: str = "correct") -> tuple[np.ndarray, np.ndarray, bool]:
    """Indices of lesion sources and of normal targets among the training photos.

    Paper 004: lesions come from correctly classified photos with DR, and are blended into "another
    randomly selected fundus image (from the correctly classified set)" that is normal.

    Args:
        predicted: (N,) predicted grades.
        truth: (N,) true grades.
        mode: "correct" (the paper) or "all" (every photo with DR, e.g. while the model is still weak).

    Returns:
        (sources, normals, fallback): ``fallback`` is True when no normal photo was classified correctly
        and every normal photo is used instead.

    Raises:
        ValueError: unknown mode or shapes that differ.
    """
    if mode not in ("correct", "all"):
        raise ValueError(f"mode must be 'correct' or 'all', got {mode!r}")
    predicted, truth = np.asarray(predicted).reshape(-1), np.asarray(truth).reshape(-1)
    if predicted.shape != truth.shape:
        raise ValueError(f"{predicted.shape[0]} predictions for {truth.shape[0]} grades")
    correct = predicted == truth
    lesion = truth > 0
    sources = np.flatnonzero(lesion & correct) if mode == "correct" else np.flatnonzero(lesion)
    normals = np.flatnonzero(~lesion & correct)
    fallback = len(normals) == 0
    if fallback:
        normals = np.flatnonzero(~lesion)
    return sources, normals, fallback


@register
class EllgRecipe(Recipe):
    name = "ellg"
    paper = "004"
    task = GRADE_REGRESSION.name  # the headline metric: quadratic kappa (paper 004 reports it and accuracy)
    description = ("DR grade regression (DR detection net) with ELLG rounds: GMSM lesion patches (τ), shifted, "
                   "Reinhard-transferred and mixup-blended into normal photos with mixed labels")
    labels = DR_GRADES
    archs = {"dr_detection_net": 512, **LITE_INPUT}
    head = "gap_linear"  # EfficientNet-Lite only: GAP + one linear output (the severity value)
    preprocessing = {"fov_crop": True, "clahe": False}
    # The best epoch of each phase by validation quadratic kappa (at the fixed cut-offs; issue 19), not by loss.
    defaults = dict(arch="dr_detection_net", epochs=30, batch_size=64, lr=8e-5, optimizer="adam", patience=10,
                    select_on="metric")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("paper 004 (ELLG)")
        g.add_argument("--rounds", type=int, default=4, help="lesion generation + training rounds after --epochs")
        g.add_argument("--round-epochs", type=int, default=30, help="epochs per round (in thirds at lr, lr/10, lr/100)")
        g.add_argument("--round-lr", type=float, default=3e-5, help="learning rate at the start of each round")
        g.add_argument("--tau-range", type=float, nargs=2, default=(0.5, 0.8), metavar=("LOW", "HIGH"),
                       help="lesion mask threshold τ drawn uniformly per photo (eq. 4)")
        g.add_argument("--r-range", type=float, nargs=2, default=(0.5, 1.0), metavar=("LOW", "HIGH"),
                       help="mixup blending ratio r drawn uniformly per generated photo (eq. 5–6)")
        g.add_argument("--t", type=float, default=1.0, help="GMSM gate t (eq. 2); 0 gives plain two-layer Grad-CAM++")
        g.add_argument("--max-tries", type=int, default=100, help="random shifts per lesion patch before giving up")
        g.add_argument("--min-lesion-area", type=int, default=4, help="drop lesion components smaller than this (px)")
        g.add_argument("--generate-per-round", type=int, default=0,
                       help="generated photos per round (0: one per lesion source photo)")
        g.add_argument("--lesion-sources", choices=("correct", "all"), default="correct",
                       help="take lesions from correctly classified photos (the paper) or from every photo with DR")
        g.add_argument("--fixed-decision", action="store_true",
                       help="keep the cut-offs 0.5 / 1.5 / 2.5 / 3.5 (the paper) instead of fitting them on "
                            "validation photos after the last round (quadratic kappa)")
        g.add_argument("--flips", action="store_true",
                       help="random horizontal and vertical flips of the training photos (not in paper 004; "
                            "against over-fitting on small data sets)")

    def parse_args(self, argv: Sequence[str]) -> argparse.Namespace:
        args = super().parse_args(argv)
        for flag, (low, high), bound in (("--tau-range", args.tau_range, 1.0), ("--r-range", args.r_range, 1.0)):
            if not 0.0 <= low <= high <= bound:
                raise SystemExit(f"error: {flag} needs 0 <= LOW <= HIGH <= {bound:g}, got {low} {high}")
        if args.rounds < 0 or args.round_epochs < 1 or args.max_tries < 1 or args.generate_per_round < 0:
            raise SystemExit("error: --rounds >= 0, --round-epochs >= 1, --max-tries >= 1, --generate-per-round >= 0")
        return args

    # ---------------------------------------------------------------- data, model, loss
    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> float | None:
        """The DR grade 0–4 as a float (the regression target); other photos are left out."""
        return sample_target(sample, dataset, self.labels, self.task)

    def build_model(self, args: argparse.Namespace, labels: list[str]) -> nn.Module:
        """The DR detection net (its own regression classifier) or an EfficientNet-Lite with one output."""
        import zoo
        from zoo.config import Preprocessing

        head = None if args.arch == "dr_detection_net" else self.head
        return zoo.create_model(args.arch, paper=self.paper, task=self.task, labels=list(labels),
                                pretrained=args.pretrained, head=head, name=args.name or self.name,
                                input_size=args.input_size, preprocessing=Preprocessing(**self.preprocessing_of(args)),
                                t=args.t, tau=round(float(np.mean(args.tau_range)), 3),
                                output_stride=getattr(args, "output_stride", 32))

    def loss(self, args: argparse.Namespace, train_targets: np.ndarray) -> nn.Module:
        return GradeMSE()

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        return aug.Compose([aug.RandomFlip(horizontal=True, vertical=True)]) if args.flips else aug.identity

    # ---------------------------------------------------------------- helpers
    def _fit(self, args: argparse.Namespace, model: nn.Module, train_set: CachedImages, val_set: CachedImages,
             stages: list[Stage], tag: str) -> FitResult:
        cfg = self.loop_config(args, model)
        cfg.out_dir = Path(args.out) / "training" / tag  # own checkpoints per phase: --resume works per phase
        return self.fit_sets(args, model, train_set, val_set, stages, cfg=cfg)

    def _outputs(self, args: argparse.Namespace, model: nn.Module, dataset: CachedImages) -> np.ndarray:
        """The model's regressed severities for every photo of ``dataset``, in order."""
        cfg = self.loop_config(args, model)
        info = ddp.init_distributed(args.device)
        prepare = Prepare(next(model.parameters()).device, cfg.mean, cfg.std)
        outputs, _ = evaluate_outputs(model, dataset, cfg, info, prepare)
        return outputs.reshape(-1)

    def generate(self, args: argparse.Namespace, model: nn.Module, data: PreparedData, rng: np.random.Generator,
                 round_index: int) -> tuple[CachedImages | None, RoundReport]:
        """One round of ELLG lesion generation from the current model (paper 004, 2.3)."""
        from explain import lesion_mask

        report = RoundReport(round_index)
        cutoffs = list(model.config.grade_cutoffs)
        truth = np.rint(data.train.targets.numpy().reshape(-1)).astype(np.int64)
        predicted = classify(self._outputs(args, model, data.train), cutoffs)
        report.correct = int((predicted == truth).sum())
        sources, normals, report.normals_fallback = select_sources(predicted, truth, args.lesion_sources)
        report.sources, report.normals = len(sources), len(normals)
        if not len(sources) or not len(normals):
            return None, report
        count = args.generate_per_round or len(sources)
        chosen = rng.choice(sources, size=count, replace=count > len(sources))
        explained = np.unique(chosen)
        images = data.train.images.permute(0, 2, 3, 1).numpy()  # (N, S, S, 3) uint8 views
        maps = dict(zip(explained.tolist(), saliency_maps(
            model, images[explained], "predicted", "gmsm", mean=model.config.mean, std=model.config.std,
            t=args.t, progress=not args.quiet, desc=f"GMSM round {round_index}")))
        fov_cache: dict[int, np.ndarray] = {}

        def fov(i: int) -> np.ndarray:
            if i not in fov_cache:
                fov_cache[i] = fov_mask_of(images[i])
            return fov_cache[i]

        out_images, out_targets, names = [], [], []
        for source in tqdm(chosen.tolist(), desc=f"generating round {round_index}", disable=args.quiet, leave=False):
            tau = float(rng.uniform(*args.tau_range))
            r = float(rng.uniform(*args.r_range))
            other = int(rng.choice(normals))
            mask = lesion_mask(maps[source], tau, fov_mask=fov(source), min_area=args.min_lesion_area).mask
            made = generate_lesion_image(images[source], mask, float(truth[source]), images[other],
                                         float(truth[other]), r, rng, source_fov=fov(source), other_fov=fov(other),
                                         max_tries=args.max_tries, min_area=args.min_lesion_area, cutoffs=cutoffs)
            if not made.patches:
                report.no_lesion += 1
                continue
            report.overlapping_patches += sum(p.overlaps for p in made.patches)
            report.grades[made.label] = report.grades.get(made.label, 0) + 1
            out_images.append(made.image)
            out_targets.append(float(made.label))
            names.append(f"ellg-round{round_index}:{data.train.names[source]}+{data.train.names[other]}"
                         f"(tau={tau:.2f},r={r:.2f})")
        report.generated = len(out_images)
        if not out_images:
            return None, report
        self._save_examples(args, out_images[:4], round_index)
        return CachedImages.from_arrays(out_images, np.asarray(out_targets, np.float32), names=names), report

    def _save_examples(self, args: argparse.Namespace, images: list[np.ndarray], round_index: int) -> None:
        """A few generated photos as PNG under ``--out/training/round<k>/`` (rank 0 only), to look at."""
        from PIL import Image

        if not ddp.init_distributed(args.device).is_main:
            return
        folder = Path(args.out) / "training" / f"round{round_index}"
        folder.mkdir(parents=True, exist_ok=True)
        for k, image in enumerate(images):
            Image.fromarray(image).save(folder / f"generated-{k}.png")

    # ---------------------------------------------------------------- the pipeline
    def train(self, args: argparse.Namespace, info: ddp.DistInfo) -> Trained:
        """Training on the originals, then ``--rounds`` rounds of generation + training (paper 004, Fig. 1)."""
        samples = self.labelled(self.load_samples(args), args)
        train_s, val_s = self.split(samples, args)
        torch.manual_seed(args.seed)  # reproducible random initialisation (head, or all without ImageNet weights)
        model = self.build_model(args, list(self.labels))
        data = self.prepare_data(args, info, model.config, train_s, val_s, list(self.labels))
        history: list[dict[str, Any]] = []

        result = self._fit(args, model, data.train, data.val, [Stage("base", args.epochs, args.lr)], "base")
        history += [{"phase": "base", **row} for row in result.history]
        rng = np.random.default_rng(args.seed)
        reports = []
        for k in range(1, args.rounds + 1):
            generated, report = self.generate(args, model, data, rng, k)
            reports.append(report)
            if not args.quiet:
                tqdm.write(f"ELLG round {k}: {report}")
            train_set = data.train.concat(generated) if generated is not None else data.train
            stages = round_stages(args.round_epochs, args.round_lr, f"round{k}")
            result = self._fit(args, model, train_set, data.val, stages, f"round{k}")
            history += [{"phase": f"round{k}", "generated": report.generated, **row} for row in result.history]
        result.history = history
        self.fit_grade_decision(args, model, result)  # after the rounds: they pick sources by the fixed cut-offs
        made = sum(r.generated for r in reports)
        model.config.description = (
            f"Paper 004 ELLG: {args.arch} grade regression, {args.epochs} epochs on the originals, then "
            f"{args.rounds} round(s) of {args.round_epochs} epochs on originals + GMSM lesion generation "
            f"(t = {args.t:g}, τ ∈ [{args.tau_range[0]:g}, {args.tau_range[1]:g}], r ∈ [{args.r_range[0]:g}, "
            f"{args.r_range[1]:g}], lesions from {args.lesion_sources} photos): {made} generated photos in all.")
        self.round_reports = reports
        return Trained(model, result, data)

    def publish(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> Path:
        """The hub repo, with each round's report in ``training/ellg_rounds.json``."""
        out = super().publish(args, model, result, data)
        (out / "training" / "ellg_rounds.json").write_text(
            json.dumps([r.__dict__ for r in getattr(self, "round_reports", [])], indent=1, default=str) + "\n")
        return out
