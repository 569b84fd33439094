"""Paper 002's simple CNN, its Table 1 exactly.

Table 1 (512×512×3 input): Convolution_1 500×500×12 · BN · Convolution_2 500×500×36 · BN ·
Max_pooling_1 125×125×36 · Dropout_1 · Convolution_3 120×120×72 · BN · Convolution_4 120×120×144 ·
BN · Max_pooling_2 30×30×144 · Dropout_2 · Dense 4096 · 512 · 64 · 8. "All the layers … are
activated by the ReLU function."

The sizes fix the kernels the text leaves out: 512→500 is a 13×13 valid convolution, 125→120 a
6×6 valid one, the 500→500 and 120→120 layers keep the size (3×3, padding 1), both pools are 4×4.
Dense_1 takes the flattened 30·30·144 = 129 600 features at 512 input (≈ 531 M weights, as the
paper's table implies); at other input sizes it takes the flattened size that input gives.
Several dense layers follow the convolutions, so plain CAM is undefined; the paper shows Grad-CAM
on the 4th convolution layer (its Fig. 5) — our target layer.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from zoo.architectures.registry import Built, check_output_stride, register
from zoo.config import ModelConfig
from zoo.model import FundusNet

TABLE_1_INPUT = 512
DENSE_WIDTHS = (4096, 512, 64)


def _flat_size(input_size: int) -> int:
    side = input_size - 12  # Convolution_1, 13×13 valid
    side //= 4  # Max_pooling_1
    side -= 5  # Convolution_3, 6×6 valid
    side //= 4  # Max_pooling_2
    if side < 1:
        raise ValueError(f"simple_cnn needs input_size >= 48 (Table 1 uses 512), got {input_size}")
    return 144 * side * side


class SimpleCNN(FundusNet):
    """Paper 002 Table 1. Layer names: ``features.conv1`` … ``features.relu4``, ``classifier.dense1`` …"""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__(config)
        p = config.dropout
        self.features = nn.Sequential(OrderedDict([
            ("conv1", nn.Conv2d(3, 12, 13)), ("bn1", nn.BatchNorm2d(12)), ("relu1", nn.ReLU()),
            ("conv2", nn.Conv2d(12, 36, 3, padding=1)), ("bn2", nn.BatchNorm2d(36)), ("relu2", nn.ReLU()),
            ("pool1", nn.MaxPool2d(4)), ("dropout1", nn.Dropout(p)),
            ("conv3", nn.Conv2d(36, 72, 6)), ("bn3", nn.BatchNorm2d(72)), ("relu3", nn.ReLU()),
            ("conv4", nn.Conv2d(72, 144, 3, padding=1)), ("bn4", nn.BatchNorm2d(144)), ("relu4", nn.ReLU()),
            ("pool2", nn.MaxPool2d(4)), ("dropout2", nn.Dropout(p)),
        ]))
        widths = (_flat_size(config.input_size),) + DENSE_WIDTHS
        layers: list[tuple[str, nn.Module]] = []
        for i in range(len(DENSE_WIDTHS)):
            layers += [(f"dense{i + 1}", nn.Linear(widths[i], widths[i + 1])), (f"relu{i + 1}", nn.ReLU())]
        layers.append((f"dense{len(widths)}", nn.Linear(widths[-1], config.num_outputs)))
        self.classifier = nn.Sequential(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


@register(
    "simple_cnn",
    papers=("002",),
    description="Paper 002's simple CNN (Table 1): 4 conv + BN, 2 max-pool, 4 dense layers, 512 input",
    input_size=TABLE_1_INPUT,
    fixed_input=True,
    dropout=0.25,  # Table 1 has Dropout_1/_2 but the text gives no rate
    grid=lambda config: (config.input_size - 12) // 4 - 5,  # features.relu4: 120 × 120 at 512
    pretrained_weights="random (trained from scratch in its paper)",
)
def _build(config: ModelConfig, pretrained: bool) -> Built:
    check_output_stride(config)  # Table 1's layers exactly: nothing to dilate
    explain = dict(
        target_layer="features.relu4", low_layer="features.relu2", cam=None, cam_classifier="",
        cam_reason="four dense layers follow the convolutions (paper 002 Table 1); plain CAM needs GAP + "
                   "one linear layer, use Grad-CAM",
    )
    status = "random"
    if pretrained:
        status = "random (no pretrained weights exist: paper 002 trains this CNN from scratch)"
    return Built(SimpleCNN(config), explain, status)
