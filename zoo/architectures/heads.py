"""Classification heads, a choice separate from the backbone (every recipe runs on any backbone).

- ``gap_linear`` (paper 000): global average pooling + one linear layer → plain CAM is defined.
- ``gap_dropout_dense`` (paper 003): GAP + dropout 0.5 + one dense layer → CAM defined (dropout is
  the identity at inference).
- ``fcn`` (paper 001): three convolution layers, the last producing one score map per class;
  global average pooling of the score maps gives the logits → the score maps *are* the CAMs.
- ``vgg_classifier`` (paper 002's VGG13-BN): torchvision's three fully connected layers → CAM undefined.
"""
from __future__ import annotations

import torch
from torch import nn

HEADS = ("gap_linear", "gap_dropout_dense", "fcn", "vgg_classifier")


class GapLinearHead(nn.Module):
    """GAP → (dropout) → linear. ``fc`` is the CAM classifier (config.cam_classifier = ``head.fc``)."""

    def __init__(self, channels: int, num_outputs: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(channels, num_outputs)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(self.dropout(self.pool(features).flatten(1)))


class FcnHead(nn.Module):
    """Paper 001's fully convolutional head on ResNet50 features.

    The paper says only "three convolutional layers instead of the original FC layer" with as many
    output nodes as classes (its Fig. 3 is not in the text); we use 3×3 conv → 512, 3×3 conv → 256
    (ReLU each) and a 1×1 conv → one score map per class. Logits = mean of each score map, so the
    class score map is exactly that class's CAM (kind "score_map").
    """

    def __init__(self, channels: int, num_outputs: int, widths: tuple[int, int] = (512, 256)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, widths[0], 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(widths[0], widths[1], 3, padding=1)
        self.relu2 = nn.ReLU()
        self.score = nn.Conv2d(widths[1], num_outputs, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)

    def score_maps(self, features: torch.Tensor) -> torch.Tensor:
        """``(B, num_outputs, h, w)`` class score maps (pre-sigmoid)."""
        return self.score(self.relu2(self.conv2(self.relu1(self.conv1(features)))))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.pool(self.score_maps(features)).flatten(1)


class VggClassifierHead(nn.Module):
    """torchvision VGG's own head (7×7 adaptive avg-pool + FC-4096 + FC-4096 + FC-N), as paper 002
    fine-tunes VGG13-BN with "all possible parameters"; only the last layer is replaced."""

    def __init__(self, channels: int, num_outputs: int, width: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(channels * 7 * 7, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, width),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(width, num_outputs),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(features).flatten(1))
