"""Paper 000's fusion ensemble: G_f = λ·G1 + σ·G2 (its eq. in §3.2, λ = 0.6, σ = 0.4, λ + σ = 1).

G1 is the mean prediction of the fold models (5-fold bagging, §4.1) of one architecture (VGG19),
G2 that of another (ResNet50). Probabilities are fused, then ``forward`` returns logit(G_f)
(multilabel) or log(G_f) (multiclass) so the ensemble's output reads like any other model's:
``probabilities(forward(x))`` = G_f. Members are ``g1.<fold>`` / ``g2.<fold>``; explanation layers
point into one member (``g1.0.backbone.35``), gradients reach it through the fusion.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from fundus.tasks import MULTICLASS, MULTILABEL, task_of
from zoo.architectures.registry import Built, get_spec, map_grid, register
from zoo.config import ModelConfig
from zoo.model import FundusNet

PAPER_LAMBDA = 0.6
PAPER_SIGMA = 0.4
PAPER_FOLDS = 5
_EPS = 1e-6  # keeps logit/log finite where a probability saturates


def member_config(config: ModelConfig, group: str, fold: int) -> ModelConfig:
    """Config of one fold model of the ensemble (same task, labels, input, preprocessing)."""
    kwargs = config.arch_kwargs
    arch = kwargs.get(f"{group}_arch", "vgg19" if group == "g1" else "resnet50")
    spec = get_spec(arch)
    return dataclasses.replace(
        config,
        name=f"{config.name}.{group}.{fold}",
        arch=arch,
        arch_kwargs=dict(kwargs.get(f"{group}_kwargs", {"head": "gap_linear"})),
        dropout=spec.dropout,
        target_layer="", low_layer="", cam_classifier="", cam="linear", cam_reason="",
        thresholds=list(config.thresholds), metrics={}, datasets=list(config.datasets),
    )


class FusionEnsemble(FundusNet):
    """λ·mean(g1 fold probabilities) + σ·mean(g2 fold probabilities), returned as logits."""

    def __init__(self, config: ModelConfig, g1: list[FundusNet], g2: list[FundusNet]) -> None:
        super().__init__(config)
        if not g1 or not g2:
            raise ValueError("the fusion ensemble needs at least one model in each of G1 and G2")
        self.g1 = nn.ModuleList(g1)
        self.g2 = nn.ModuleList(g2)
        self.lam = float(config.arch_kwargs.get("lam", PAPER_LAMBDA))
        self.sigma = float(config.arch_kwargs.get("sigma", PAPER_SIGMA))

    def _mean_probability(self, members: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.probabilities(m(x)) for m in members]).mean(dim=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fused = self.lam * self._mean_probability(self.g1, x) + self.sigma * self._mean_probability(self.g2, x)
        task = task_of(self.config.task)
        if task is MULTILABEL:
            return torch.logit(fused, eps=_EPS)
        if task is MULTICLASS:
            return fused.clamp_min(_EPS).log()
        return fused  # regression: the fused grade value


def _ensemble(config: ModelConfig, g1: list[FundusNet], g2: list[FundusNet], pretrained: str) -> Built:
    first = g1[0].config
    explain = dict(
        target_layer=f"g1.0.{first.target_layer}", low_layer=f"g1.0.{first.low_layer}", cam=None,
        cam_classifier="",
        cam_reason="the ensemble fuses probabilities of several networks (paper 000: λ·G1 + σ·G2), so its "
                   "output is not one linear layer over one feature map; use Grad-CAM (layers point into g1.0)",
    )
    return Built(FusionEnsemble(config, g1, g2), explain, pretrained)


@register(
    "fusion_ensemble",
    papers=("000",),
    description="Paper 000's ensemble: λ·mean(VGG19 folds) + σ·mean(ResNet50 folds), λ=0.6, σ=0.4",
    grid=lambda config: map_grid(member_config(config, "g1", 0)),  # the explained layers are in g1.0
)
def _build(config: ModelConfig, pretrained: bool) -> Built:
    folds = int(config.arch_kwargs.get("folds", PAPER_FOLDS))
    if folds < 1:
        raise ValueError(f"fusion_ensemble needs folds >= 1, got {folds}")
    groups = {}
    statuses = set()
    for group in ("g1", "g2"):
        members = []
        for fold in range(folds):
            mc = member_config(config, group, fold)
            built = get_spec(mc.arch).build(mc, pretrained)
            for key, value in built.explain.items():
                setattr(mc, key, value)
            mc.pretrained = built.pretrained
            statuses.add(built.pretrained)
            members.append(built.model)
        groups[group] = members
    status = statuses.pop() if len(statuses) == 1 else "; ".join(sorted(statuses))
    return _ensemble(config, groups["g1"], groups["g2"], status)


def assemble(g1: list[FundusNet], g2: list[FundusNet], *, name: str = "fusion-ensemble",
             lam: float = PAPER_LAMBDA, sigma: float = PAPER_SIGMA) -> FusionEnsemble:
    """Build the ensemble from trained fold models (training's 5-fold bagging output).

    Args:
        g1: fold models of the first architecture (paper 000: VGG19).
        g2: fold models of the second architecture (ResNet50).
        name, lam, sigma: the ensemble's name and fusion weights (λ + σ should be 1).

    Raises:
        ValueError: empty groups, or members disagreeing on task/labels/input size/architecture.
    """
    if not g1 or not g2:
        raise ValueError("assemble needs at least one model in each of g1 and g2")
    ref = g1[0].config
    for group_name, group in (("g1", g1), ("g2", g2)):
        for m in group:
            c = m.config
            if (c.task, c.labels, c.input_size) != (ref.task, ref.labels, ref.input_size):
                raise ValueError(f"{group_name} member {c.name!r} differs in task/labels/input_size from {ref.name!r}")
            if c.arch != group[0].config.arch:
                raise ValueError(f"{group_name} mixes architectures {group[0].config.arch!r} and {c.arch!r}")
    if len(g1) != len(g2):
        raise ValueError(f"g1 has {len(g1)} folds but g2 has {len(g2)}; the config stores one fold count")
    config = dataclasses.replace(
        ref, name=name, arch="fusion_ensemble", metrics={}, reproduce="", description="",
        arch_kwargs=dict(g1_arch=ref.arch, g2_arch=g2[0].config.arch, folds=len(g1), lam=lam, sigma=sigma,
                         g1_kwargs=dict(ref.arch_kwargs), g2_kwargs=dict(g2[0].config.arch_kwargs)),
    )
    built = _ensemble(config, list(g1), list(g2), ref.pretrained)
    for key, value in built.explain.items():
        setattr(config, key, value)
    return built.model
