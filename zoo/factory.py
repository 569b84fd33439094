"""``create_model``: an architecture + a paper's defaults + the caller's overrides → a FundusNet."""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

from torch import nn

from zoo.architectures import get_spec
from zoo.config import TASKS, ModelConfig
from zoo.model import FundusNet
from zoo.papers import get_paper

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_EXPLAIN_FIELDS = ("target_layer", "low_layer", "cam", "cam_classifier", "cam_reason")


def _hook_friendly(model: nn.Module) -> None:
    # In-place activations overwrite the tensors that explanation hooks capture; switching them off
    # changes no weight and no output.
    for module in model.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False


def build_model(config: ModelConfig, *, pretrained: bool = False) -> tuple[FundusNet, dict, str]:
    """Build the architecture a complete config names (used by ``create_model`` and ``zoo.load``).

    Returns:
        (model, default explanation fields, pretrained status).
    """
    spec = get_spec(config.arch)
    built = spec.build(config, pretrained)
    _hook_friendly(built.model)
    if config.ood:  # the unlike-training reference's buffers, filled by the weights (zoo.ood)
        from zoo.ood import attach

        attach(built.model, int(config.ood["features"]))
    return built.model, built.explain, built.pretrained


def check_layers(model: FundusNet) -> None:
    """Raise ValueError if a layer the config names is not a module of the model."""
    for key in ("target_layer", "low_layer", "cam_classifier"):
        name = getattr(model.config, key)
        if name:
            try:
                model.get_submodule(name)
            except AttributeError:
                raise ValueError(f"config.{key} = {name!r} is not a module of {model.config.arch!r}") from None


def create_model(
    arch: str,
    *,
    paper: str = "",
    task: str | None = None,
    labels: Sequence[str] | None = None,
    pretrained: bool = True,
    head: str | None = None,
    **config_overrides: Any,
) -> FundusNet:
    """Create a zoo model.

    Args:
        arch: a key of ``zoo.architectures.ARCHITECTURES`` (``python -m zoo list`` shows them).
        paper: "000" … "004" or "" — fills task, labels, input size and preprocessing defaults.
        task: one of ``zoo.config.TASKS``; default: the paper's.
        labels: class/label names; default: the paper's (required when no paper is given).
        pretrained: try ImageNet weights for the backbone; falls back to random init with a warning.
        head: for backbone architectures, "gap_linear" | "gap_dropout_dense" | "fcn" (| "vgg_classifier"
            for vgg13_bn); default: the paper's head.
        **config_overrides: any other ``ModelConfig`` field (name, input_size, thresholds, arch_kwargs …).

    Returns:
        The model (training mode, on CPU) with a complete ``config``.

    Raises:
        ValueError: unknown architecture/paper/head/task, missing labels, a layer name that does not exist.
        TypeError: an override that is not a ModelConfig field.
    """
    spec = get_spec(arch)
    paper_defaults = get_paper(paper)
    unknown = sorted(set(config_overrides) - _CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"create_model got unknown config fields: {', '.join(unknown)}")
    for fixed in ("arch", "paper", "task", "labels"):
        if fixed in config_overrides:
            raise TypeError(f"pass {fixed!r} as create_model's own argument, not as a config override")
    task = task or (paper_defaults.task if paper_defaults else None)
    if task not in TASKS:
        raise ValueError(f"task must be one of {TASKS}, got {task!r}")
    if labels is None:
        if paper_defaults is None:
            raise ValueError("labels are required when no paper is given")
        labels = paper_defaults.labels
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels) or not labels:
        raise TypeError("labels must be a non-empty sequence of str")
    arch_kwargs = dict(config_overrides.pop("arch_kwargs", {}) or {})
    if head is not None:
        if head not in spec.heads:
            allowed = " | ".join(spec.heads) if spec.heads else "none (it has its own classifier)"
            raise ValueError(f"architecture {arch!r} takes head {allowed}, got {head!r}")
        arch_kwargs["head"] = head
    elif spec.heads:
        arch_kwargs.setdefault("head", spec.default_head(paper))
    if spec.fixed_input or paper_defaults is None or paper_defaults.input_size is None:
        input_size = spec.input_size
    else:
        input_size = paper_defaults.input_size
    dropout = 0.5 if arch_kwargs.get("head") == "gap_dropout_dense" else spec.dropout
    base = dict(
        name=f"{arch}-paper{paper}" if paper else arch,
        paper=paper, arch=arch, task=task, labels=list(labels), input_size=input_size,
        mean=spec.mean, std=spec.std, dropout=dropout, arch_kwargs=arch_kwargs,
    )
    if paper_defaults is not None:
        base["preprocessing"] = dataclasses.replace(paper_defaults.preprocessing)
    config = ModelConfig(**{**base, **config_overrides})
    model, explain, status = build_model(config, pretrained=pretrained)
    for key in _EXPLAIN_FIELDS:
        if key not in config_overrides:
            setattr(config, key, explain[key])
    config.pretrained = status
    check_layers(model)
    return model
