"""Paper 003 (APTOS 2019): five DR grades, CLAHE, flips, GAP + dropout 0.5 + dense head, class-weighted loss.

"We resolve the class imbalance problem by incorporating weights of the classes into the loss
function", "both vertical and horizontal flips", images resized "to either 224×224 or 299×299
depending on the pre-trained model", CLAHE, "a Global Average Pooling (GAP) layer, followed by a
dropout (with 50% probability) layer and finally a dense layer", trained for 15 epochs.
The paper does not give the optimiser; Adam at 1e-4 is the usual Keras fine-tuning choice.
Works on APTOS / EyePACS layouts and on image folders (``--format imagefolder --preset srahim-dr600``
or ``--format srahim-dr600``), split by patient.
"""
from __future__ import annotations

import argparse
from typing import Any

import torch.nn as nn

from train import augment as aug
from train.loop import FitResult
from train.metrics import Metric, kappa_metric
from train.recipes import PreparedData, Recipe, register
from fundus.datasets.labels import DR_GRADES, sample_target
from fundus.tasks import MULTICLASS


@register
class AptosRecipe(Recipe):
    name = "aptos"
    paper = "003"
    task = MULTICLASS.name  # the headline metric: accuracy (the paper reports accuracy and per-class AUC)
    description = "DR grading (5 grades): CLAHE, flips, GAP + dropout 0.5 + dense head, class-weighted loss"
    labels = DR_GRADES
    archs = {"vgg16": 224, "resnet50": 224, "inception_v3": 299, "inception_resnet_v2": 299,
             "efficientnet_lite0": 224,
             "efficientnet_lite1": 240, "efficientnet_lite2": 260}
    head = "gap_dropout_dense"  # zoo sets dropout 0.5 for it
    preprocessing = {"fov_crop": True, "clahe": True}
    # The best epoch by validation quadratic kappa (issue 19: the graders are judged by it), not by loss.
    defaults = dict(arch="inception_v3", epochs=15, batch_size=16, lr=1e-4, optimizer="adam", patience=5,
                    select_on="metric")

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--no-flips", dest="flips", action="store_false",
                            help="turn off the horizontal and vertical flips")
        parser.add_argument("--fixed-decision", action="store_true",
                            help="decide by the argmax (the paper) instead of choosing on validation between it "
                                 "and the expected grade at fitted cut-offs (by quadratic kappa)")

    def target_of(self, sample: Any, dataset: Any, args: argparse.Namespace) -> int | None:
        # The grade, from any layout whose classes are the five DR grades (zoo.evaluate does the same).
        return sample_target(sample, dataset, self.labels, self.task)

    def augment(self, args: argparse.Namespace) -> aug.BatchOp:
        return aug.Compose([aug.RandomFlip(horizontal=True, vertical=True)]) if args.flips else aug.identity

    def selection_metric(self, args: argparse.Namespace | None = None) -> Metric:
        """Quadratic kappa of the argmax grade (the logged headline stays the paper's accuracy)."""
        return kappa_metric(self.task)

    def finalize(self, args: argparse.Namespace, model: nn.Module, result: FitResult, data: PreparedData) -> None:
        """The decision (argmax or the expected grade at fitted cut-offs) chosen on validation photos."""
        self.fit_grade_decision(args, model, result)
