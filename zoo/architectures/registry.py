"""The architecture registry: name → how to build it and its default config fields (timm-style).

Each architecture module decorates its builder with ``@register(name, papers=…, description=…, …)``; the package
imports every module of its folder (``fundus.registration``), so a new architecture is one new file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple

from torch import nn

from fundus.registration import Registry
from zoo.config import IMAGENET_MEAN, IMAGENET_STD, ModelConfig


class Built(NamedTuple):
    """What a builder returns: the model (a FundusNet), its default explanation fields, the weights' provenance.

    The registry imports no model class (``zoo.factory`` builds through it, and ``FundusNet`` loads through
    the factory), so the model is typed as the module it is."""

    model: nn.Module
    explain: dict  # target_layer, low_layer, cam, cam_classifier, cam_reason
    pretrained: str


@dataclass(frozen=True)
class ArchSpec:
    """One registered architecture.

    ``build(config, pretrained)`` constructs the model for a complete config; ``input_size``/mean/std
    are defaults filled into the config before building (``fixed_input``: the paper fixes the input
    size, e.g. Inception's 299, so a paper's default size does not override it).
    """

    name: str
    build: Callable[[ModelConfig, bool], Built]  # Builder
    papers: tuple[str, ...]
    description: str
    input_size: int = 224
    fixed_input: bool = False
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    dropout: float = 0.0  # default config.dropout (heads that have dropout override it: 0.5)
    heads: tuple[str, ...] = ()  # choosable heads ("" = the architecture has its own)
    default_head: Callable[[str], str] = field(default=lambda paper: "")
    # The explained layer's grid side for a config (map_grid); None: input_size / output_stride, rounded up.
    grid: Callable[[ModelConfig], int | None] | None = None
    # Where pretrained=True takes its weights from, for `python -m zoo list` (a build says what it got: Built).
    pretrained_weights: str = "imagenet (torchvision/timm) when reachable, else random with a warning"


Builder = Callable[[ModelConfig, bool], Built]
ARCHITECTURES: Registry = Registry("architecture", "zoo.architectures")


def register(name: str, **facts: Any) -> Callable[[Builder], Builder]:
    """Decorator: register ``build(config, pretrained) -> Built`` as the architecture ``name`` with its facts (the
    other fields of :class:`ArchSpec`: papers, description, input_size, mean, std, heads, grid, pretrained_weights,
    …), as timm's
    ``@register_model`` keeps a model's default config beside it.

    Raises:
        ValueError: the name is already registered.
        TypeError: a fact ``ArchSpec`` does not have, or a missing one (papers, description).
    """

    def add(build: Builder) -> Builder:
        ARCHITECTURES.add(name, ArchSpec(name=name, build=build, **facts))
        return build

    return add


def get_spec(arch: str) -> ArchSpec:
    """The spec of a registered architecture.

    Raises:
        ValueError: unknown name (the message lists the known ones).
    """
    if not isinstance(arch, str):
        raise TypeError(f"arch must be a str, got {type(arch).__name__}")
    return ARCHITECTURES.lookup(arch)


def check_output_stride(config: ModelConfig, allowed: tuple[int, ...] = (32,)) -> int:
    """``config.output_stride`` if the architecture can be built at it, else a clear error.

    Raises:
        ValueError: a stride the architecture cannot run at (32 is the architecture as designed; 16 and 8 need a
            backbone whose last stages can be dilated instead of strided).
    """
    stride = config.output_stride
    if stride not in allowed:
        raise ValueError(
            f"architecture {config.arch!r} cannot run at output_stride {stride!r}; it supports "
            f"{', '.join(str(s) for s in allowed)} (a finer stride needs a backbone whose last stages can be "
            "dilated instead of strided: EfficientNet-Lite, ResNet50)")
    return stride


def map_grid(config: ModelConfig) -> int | None:
    """The side of the explained layer's grid (the map's cells before upsampling), from the config alone.

    EfficientNet-Lite0 at 320 px: 10 at output stride 32, 20 at 16. None where the architecture states none.
    """
    spec = get_spec(config.arch)
    if spec.grid is not None:
        return spec.grid(config)
    return -(-config.input_size // config.output_stride)


def map_grid_text(config: ModelConfig) -> str:
    """"20 × 20 at 320 px", or "" where the grid is not known from the config."""
    side = map_grid(config)
    return f"{side} × {side} at {config.input_size} px" if side else ""
