"""Architectures of the five papers, registered by name in :data:`ARCHITECTURES`.

One module per family: ``backbone_head`` (torchvision/timm backbones + a head of choice),
``simple_cnn`` (paper 002 Table 1), ``metadata_fusion`` (paper 002's image + age/sex model),
``dr_detection_net`` (paper 004), ``fusion`` (paper 000). Every module of this package is imported here, and
each registers its architectures with ``@register``: a new architecture is one new file.
"""
from zoo.architectures.registry import (
    ARCHITECTURES, ArchSpec, Built, check_output_stride, get_spec, map_grid, map_grid_text, register,
)
from zoo.architectures.heads import HEADS

ARCHITECTURES.discover()

__all__ = ["ARCHITECTURES", "ArchSpec", "Built", "HEADS", "check_output_stride", "get_spec", "map_grid",
           "map_grid_text", "register"]
