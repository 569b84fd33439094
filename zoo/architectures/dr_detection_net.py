"""Paper 004's DR detection net (Antony & Brüggemann's Kaggle 2015 "o_O" network, as ELLG uses it).

Paper 004 §2.1: "a regression model that mainly consists of three convolutional blocks with output
sizes of 27×27, 13×13, 6×6, and the subsequent classifier. Each conv block contains several
convolution and max pooling layers. It takes 512×512 fundus images as the inputs and outputs one-
dimensional diabetic retinopathy results". We follow the o_O layout (5×5/2 and 3×3 convolutions with
32→64→128→256 filters, leaky ReLU 0.01, 3×3/2 max-pools, then dropout + dense-1024 + maxout(2)
twice and one output) and choose valid (unpadded) convolutions in block 1 so that a 512 input gives
exactly the paper's 27/13/6 block outputs. The classifier's input size follows from the input size.

The classifier is fully connected, so plain CAM is undefined; GMSM (paper 004 eq. 1–3) uses the
last block as its high layer and block 2 as its low layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.architectures.registry import Built, check_output_stride, register
from zoo.config import ModelConfig
from zoo.model import FundusNet

PAPER_INPUT = 512


def _conv(cin: int, cout: int, kernel: int = 3, stride: int = 1, padding: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, kernel, stride, padding), nn.LeakyReLU(0.01)]


def _pool() -> nn.Module:
    return nn.MaxPool2d(3, 2)


class Maxout(nn.Module):
    """Feature pooling over groups of ``pool`` units (o_O's FeaturePoolLayer)."""

    def __init__(self, pool: int = 2) -> None:
        super().__init__()
        self.pool = pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(1, (-1, self.pool)).amax(dim=2)


def _side_after(module: nn.Module, side: int) -> int:
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.MaxPool2d)):
            k, s, p = (v if isinstance(v, int) else v[0] for v in (m.kernel_size, m.stride, m.padding))
            side = (side + 2 * p - k) // s + 1
    return side


class DRDetectionNet(FundusNet):
    """Three conv blocks (``features.block1/2/3``: 27², 13², 6² at 512 input) + regression classifier."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        block1 = (
            _conv(3, 32, 5, 2, 0) + _conv(32, 32, padding=0) + [_pool()]
            + _conv(32, 64, 5, 2, 0) + _conv(64, 64, padding=0) + _conv(64, 64, padding=0)
            + _conv(64, 64, padding=0) + [_pool()]
        )
        block2 = _conv(64, 128) + _conv(128, 128) + _conv(128, 128) + [_pool()]
        block3 = _conv(128, 256) + _conv(256, 256) + _conv(256, 256) + [_pool()]
        self.features = nn.Sequential(OrderedDict([
            ("block1", nn.Sequential(*block1)),
            ("block2", nn.Sequential(*block2)),
            ("block3", nn.Sequential(*block3)),
        ]))
        side = _side_after(self.features, config.input_size)
        if side < 1:
            raise ValueError(f"dr_detection_net needs input_size >= 192 (the paper uses 512), got {config.input_size}")
        p = config.dropout
        self.classifier = nn.Sequential(OrderedDict([
            ("dropout1", nn.Dropout(p)), ("dense1", nn.Linear(256 * side * side, 1024)), ("maxout1", Maxout(2)),
            ("dropout2", nn.Dropout(p)), ("dense2", nn.Linear(512, 1024)), ("maxout2", Maxout(2)),
            ("output", nn.Linear(512, config.num_outputs)),
        ]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register(
    "dr_detection_net",
    papers=("004",),
    description="Paper 004's DR detection net (o_O Kaggle net): 3 conv blocks 27/13/6 at 512, one regression output",
    input_size=PAPER_INPUT,
    fixed_input=True,
    dropout=0.5,
    grid=lambda config: None,  # not a whole stride (valid convolutions): 6 × 6 at 512
    pretrained_weights="random (trained from scratch in its paper)",
)
def _build(config: ModelConfig, pretrained: bool) -> Built:
    check_output_stride(config)  # valid convolutions and max-pools: nothing to dilate
    explain = dict(
        target_layer="features.block3", low_layer="features.block2", cam=None, cam_classifier="",
        cam_reason="the DR detection net ends in fully connected layers (paper 004 keeps them instead of "
                   "GAP), so plain CAM is undefined; use Grad-CAM / GMSM",
    )
    status = "random (no pretrained weights exist: the DR detection net is trained from scratch)" if pretrained else "random"
    return Built(DRDetectionNet(config), explain, status)
