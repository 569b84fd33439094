"""Paper 002's metadata model: a backbone's image features and the patient's age and sex, two dense layers.

Paper 002: "concatenation … to flattened image features … passed through two additional dense layers":
the backbone's last feature map, globally average-pooled, ⊕ the metadata vector (``METADATA_FIELDS``:
age / 100 and sex as a digit, 0.5 when unknown; ``train.recipes.odir.encode_metadata`` encodes them) →
dense → ReLU → dense. ``config.arch_kwargs``: ``base_arch`` (a backbone architecture; default paper 002's
VGG13-BN), ``base_kwargs`` (its head, ``gap_linear``: only the backbone is kept), ``metadata`` (the field
names), ``hidden`` (the first dense layer's width, 256). Layer names: ``backbone.<…>``, ``head.fc1``/``fc2``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from zoo.architectures.registry import Built, get_spec, map_grid, register
from zoo.config import ModelConfig
from zoo.model import FundusNet

METADATA_FIELDS = ("age", "sex")
DEFAULT_BASE_ARCH = "vgg13_bn"  # paper 002's network
DEFAULT_HIDDEN = 256


class MetadataHead(nn.Module):
    """GAP image features ⊕ metadata → dense → ReLU → dense (paper 002's two additional dense layers)."""

    def __init__(self, channels: int, n_meta: int, num_outputs: int, hidden: int = DEFAULT_HIDDEN) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(channels + n_meta, hidden)
        self.relu = nn.ReLU()
        self.fc2 = nn.Linear(hidden, num_outputs)

    def forward(self, features: torch.Tensor, meta: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.relu(self.fc1(torch.cat([self.pool(features).flatten(1), meta.to(features.dtype)], 1))))


class MetadataFusionNet(FundusNet):
    """``head(backbone(x), meta)``; without ``meta`` (explanations, the app) ``meta_default`` is used
    (the training photos' mean, set by the recipe; 0.5 per field before)."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, channels: int) -> None:
        super().__init__(config)
        fields = config.arch_kwargs.get("metadata", list(METADATA_FIELDS))
        self.backbone = backbone
        self.head = MetadataHead(channels, len(fields), config.num_outputs,
                                 int(config.arch_kwargs.get("hidden", DEFAULT_HIDDEN)))
        self.register_buffer("meta_default", torch.full((len(fields),), 0.5))

    def forward(self, x: torch.Tensor, meta: torch.Tensor | None = None) -> torch.Tensor:
        if meta is None:
            meta = self.meta_default.expand(x.shape[0], -1)
        return self.head(self.backbone(x), meta)


def _base_config(config: ModelConfig) -> ModelConfig:
    kw = config.arch_kwargs
    return dataclasses.replace(config, arch=kw.get("base_arch", DEFAULT_BASE_ARCH),
                               arch_kwargs=dict(kw.get("base_kwargs", {"head": "gap_linear"})))


@register(
    "metadata_fusion",
    papers=("002",),
    description="a backbone + paper 002's metadata head (GAP features ⊕ age, sex → 2 dense layers)",
    grid=lambda config: map_grid(_base_config(config)),  # the base backbone's, at config.output_stride
)
def _build(config: ModelConfig, pretrained: bool) -> Built:
    base_cfg = _base_config(config)
    built = get_spec(base_cfg.arch).build(base_cfg, pretrained)
    base = built.model
    if not hasattr(base, "backbone"):
        raise ValueError(f"metadata_fusion needs a backbone architecture, {base_cfg.arch!r} has none")
    channels = base.head.fc.in_features if hasattr(base.head, "fc") else base.head.conv1.in_channels
    explain = dict(built.explain, cam=None, cam_classifier="",
                   cam_reason="two dense layers over image features and metadata follow the last convolution "
                              "(paper 002's metadata model); use Grad-CAM")
    return Built(MetadataFusionNet(config, base.backbone, channels), explain, built.pretrained)
