"""Per-paper defaults: data set, task, labels, input size, preprocessing, architectures.

``create_model(arch, paper=...)`` fills whatever the caller leaves out from here, so a recipe only
names the architecture and the paper.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fundus.datasets.labels import DR_GRADES
from fundus.tasks import GRADE_REGRESSION, MULTICLASS, MULTILABEL
from zoo.config import Preprocessing

# RFMiD's 28 disease categories (its label columns after Disease_Risk), paper 000.
RFMID_LABELS = [
    "DR", "ARMD", "MH", "DN", "MYA", "BRVO", "TSLN", "ERM", "LS", "MS", "CSR", "ODC", "CRVO", "TV",
    "AH", "ODP", "ODE", "ST", "AION", "PT", "RT", "RS", "CRS", "EDN", "RPEC", "MHL", "RP", "OTHER",
]
# Paper 001: bleeding point/microaneurysm, haemorrhage, hard exudate, cotton wool spot, healthy.
LESION_LABELS = ["BP/MA", "HM", "HEX", "CWS", "healthy"]
# ODIR-5K, paper 002: normal, diabetes, glaucoma, cataract, AMD, hypertension, myopia, other.
ODIR_LABELS = ["N", "D", "G", "C", "A", "H", "M", "O"]


@dataclass(frozen=True)
class Paper:
    id: str
    title: str
    dataset: str
    task: str
    labels: list[str]
    input_size: int | None  # None: each architecture's own default (paper 003: 224 or 299)
    preprocessing: Preprocessing
    architectures: tuple[str, ...]
    recipe: str  # what train/ reproduces
    extra: dict = field(default_factory=dict)
    reported: ReportedResult | None = None  # the paper's own numbers, shown beside ours in the card


@dataclass(frozen=True)
class ReportedResult:
    """A per-label result table of a paper, to compare a model of its recipe with on the same data set's test split."""
    where: str  # the paper's table, in words
    dataset: str  # the data set folder of ../shared/data whose test split is comparable
    metric: str  # the card metric's prefix: "auc" → the card's ``auc_<label>`` values
    values: dict[str, float]  # label → the paper's value


PAPERS: dict[str, Paper] = {
    "000": Paper(
        "000", "Multi-disease fundus classification ensemble with Grad-CAM data augmentation", "RFMiD",
        MULTILABEL.name, RFMID_LABELS, 224, Preprocessing(fov_crop=True, clahe=False),
        ("vgg16", "vgg19", "resnet50", "fusion_ensemble"),
        "Guided-Grad-CAM attention crop (θ) augmentation, focal loss, 5-fold bagging, fusion λ=0.6 σ=0.4",
    ),
    "001": Paper(
        "001", "Multi-label DR lesion classification with Guided-Grad-CAM (ResNet50 FCN)",
        "private + Messidor", MULTILABEL.name, LESION_LABELS, 512, Preprocessing(fov_crop=True, clahe=True),
        ("resnet50_fcn",),
        "black-border removal, 512², CLAHE, weighted BCE, two-stage training, per-class thresholds",
    ),
    "002": Paper(
        "002", "Ocular disease recognition on ODIR-5K (simple CNN, VGG13-BN, Inception v3)", "ODIR-5K",
        MULTILABEL.name, ODIR_LABELS, None, Preprocessing(fov_crop=True, clahe=False),
        ("simple_cnn", "vgg13_bn", "inception_v3"),
        "Gaussian noise, rotation ±π/4, percentile contrast rescale, DCGAN augmentation, BCE + SGD",
    ),
    "003": Paper(
        "003", "Towards the localisation of lesions in DR (GAP + dropout 0.5 + dense)", "APTOS 2019",
        MULTICLASS.name, list(DR_GRADES), None, Preprocessing(fov_crop=True, clahe=True),
        ("vgg16", "resnet50", "inception_v3", "inception_resnet_v2"),
        "CLAHE, flips, class-weighted loss, Grad-CAM on the last conv layer",
        reported=ReportedResult(
            "Table 1: the best of its four models per grade (VGG16, ResNet50, InceptionV3, InceptionResNetV2)",
            "aptos2019", "auc",
            {"No DR": 0.97, "Mild": 0.77, "Moderate": 0.84, "Severe": 0.71, "Proliferative DR": 0.78}),
    ),
    "004": Paper(
        "004", "ELLG: explainable lesion learning and generation (GMSM)", "Kaggle EyePACS 2015, APTOS 2019",
        GRADE_REGRESSION.name, list(DR_GRADES), 512, Preprocessing(fov_crop=True, clahe=False),
        ("dr_detection_net",),
        "GMSM lesion masks (τ), lesion patch generation with Reinhard transfer + mixup, iterative rounds",
    ),
}


def get_paper(paper: str) -> Paper | None:
    """The defaults of a paper id ("000" … "004"), None for "" (no paper).

    Raises:
        ValueError: an unknown paper id.
    """
    if paper in ("", None):
        return None
    if paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; known: {', '.join(PAPERS)} (or '' for none)")
    return PAPERS[paper]
