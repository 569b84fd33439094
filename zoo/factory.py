"""Models from configs and saved folders, and back: ``create_model`` (an architecture + a paper's defaults + the
caller's overrides), ``load`` (a saved folder's config builds the architecture, its weights fill it),
``save_pretrained`` and ``push_to_hub``.

The architectures come from their registry (``zoo.architectures.registry``), the files from ``zoo.hub``; this
module imports no model class, so ``FundusNet``'s own ``save_pretrained``/``from_pretrained`` can call it.
"""
from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from fundus.tasks import task_of
from zoo import hub
from zoo.architectures.registry import ARCHITECTURES, get_spec
from zoo.config import ModelConfig
from zoo.errors import UnknownModelError, WeightsError
from zoo.ood import attach
from zoo.papers import get_paper

_CONFIG_FIELDS = {f.name for f in dataclasses.fields(ModelConfig)}
_EXPLAIN_FIELDS = ("target_layer", "low_layer", "cam", "cam_classifier", "cam_reason")


def _hook_friendly(model: nn.Module) -> None:
    # In-place activations overwrite the tensors that explanation hooks capture; switching them off
    # changes no weight and no output.
    for module in model.modules():
        if hasattr(module, "inplace") and isinstance(module.inplace, bool):
            module.inplace = False


def build_model(config: ModelConfig, *, pretrained: bool = False) -> tuple[nn.Module, dict, str]:
    """Build the architecture a complete config names (used by ``create_model`` and ``load``).

    Returns:
        (the FundusNet, default explanation fields, pretrained status).
    """
    spec = get_spec(config.arch)
    built = spec.build(config, pretrained)
    _hook_friendly(built.model)
    if config.ood:  # the unlike-training reference's buffers, filled by the weights (zoo.ood)
        attach(built.model, int(config.ood["features"]))
    return built.model, built.explain, built.pretrained


def check_layers(model: nn.Module) -> None:
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
) -> nn.Module:
    """Create a zoo model.

    Args:
        arch: a key of ``zoo.architectures.ARCHITECTURES`` (``python -m zoo list`` shows them).
        paper: "000" … "004" or "" — fills task, labels, input size and preprocessing defaults.
        task: one of ``fundus.tasks.TASKS``; default: the paper's.
        labels: class/label names; default: the paper's (required when no paper is given).
        pretrained: try ImageNet weights for the backbone; falls back to random init with a warning.
        head: for backbone architectures, "gap_linear" | "gap_dropout_dense" | "fcn" (| "vgg_classifier"
            for vgg13_bn); default: the paper's head.
        **config_overrides: any other ``ModelConfig`` field (name, input_size, thresholds, arch_kwargs …).

    Returns:
        The model (a FundusNet, training mode, on CPU) with a complete ``config``.

    Raises:
        ValueError: unknown architecture/paper/head/task, missing labels, a layer name that does not exist.
        TypeError: an override that is not a ModelConfig field.
    """
    spec = get_spec(arch)
    paper_defaults = get_paper(paper)
    _check_overrides(config_overrides)
    task = task_of(task or (paper_defaults.task if paper_defaults else None)).name  # raises for an unknown task
    labels = _labels_of(labels, paper_defaults)
    arch_kwargs = _arch_kwargs(spec, paper, head, config_overrides.pop("arch_kwargs", {}))
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


def _check_overrides(config_overrides: dict[str, Any]) -> None:
    unknown = sorted(set(config_overrides) - _CONFIG_FIELDS)
    if unknown:
        raise TypeError(f"create_model got unknown config fields: {', '.join(unknown)}")
    for fixed in ("arch", "paper", "task", "labels"):
        if fixed in config_overrides:
            raise TypeError(f"pass {fixed!r} as create_model's own argument, not as a config override")


def _labels_of(labels: Sequence[str] | None, paper_defaults: Any) -> Sequence[str]:
    """The caller's labels, else the paper's."""
    if labels is None:
        if paper_defaults is None:
            raise ValueError("labels are required when no paper is given")
        labels = paper_defaults.labels
    if isinstance(labels, str) or not all(isinstance(label, str) for label in labels) or not labels:
        raise TypeError("labels must be a non-empty sequence of str")
    return labels


def _arch_kwargs(spec: Any, paper: str, head: str | None, given: dict[str, Any] | None) -> dict[str, Any]:
    """The caller's ``arch_kwargs`` with the head: the one asked for (checked against the architecture's), else the
    paper's default for an architecture that takes one."""
    arch_kwargs = dict(given or {})
    if head is not None:
        if head not in spec.heads:
            allowed = " | ".join(spec.heads) if spec.heads else "none (it has its own classifier)"
            raise ValueError(f"architecture {spec.name!r} takes head {allowed}, got {head!r}")
        arch_kwargs["head"] = head
    elif spec.heads:
        arch_kwargs.setdefault("head", spec.default_head(paper))
    return arch_kwargs


def _is_zoo_model(model: Any) -> bool:
    return isinstance(model, nn.Module) and isinstance(getattr(model, "config", None), ModelConfig)


def save_pretrained(model: nn.Module, folder: str | Path, *, dtype: torch.dtype | None = None) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``README.md`` for ``model`` into ``folder``.

    Args:
        model: the FundusNet to save.
        folder: target folder, created if missing.
        dtype: floating-point storage dtype (``torch.float16`` for shipping); default fp32.

    Raises:
        TypeError: not a zoo model (a FundusNet), or dtype not a floating-point torch dtype.
    """
    if not _is_zoo_model(model):
        raise TypeError(f"save_pretrained needs a zoo FundusNet, got {type(model).__name__}")
    return hub.write_folder(model.state_dict(), model.config, folder, dtype=dtype)


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Fill ``model`` from a safetensors file, cast to fp32.

    Raises:
        WeightsError: unreadable file, or missing/unexpected keys or shape mismatches (all listed).
    """
    path = Path(path)
    state = hub.read_weights(path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        def _few(items: list[str]) -> str:
            return ", ".join(items[:5]) + (f" … ({len(items)} in all)" if len(items) > 5 else "")

        problems = []
        if missing:
            problems.append(f"missing keys: {_few(missing)}")
        if unexpected:
            problems.append(f"unexpected keys: {_few(unexpected)}")
        if shapes:
            problems.append(f"shape mismatch: {_few(shapes)}")
        raise WeightsError(
            f"{path} does not match architecture {model.config.arch!r} of its config.json: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True, assign=True)
    left = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:  # a tensor outside the state dict (non-persistent buffer) was never materialised
        raise WeightsError(f"{path}: no values for {', '.join(left[:5])} of {model.config.arch!r}")


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def load(source: str | Path, *, revision: str | None = None, device: str | torch.device | None = None) -> nn.Module:
    """Load a zoo model (a FundusNet) in eval mode.

    Args:
        source: a shipped default name (``python -m zoo list``), a local folder, or a hub repo id
            (``org/name``, fetched through ``huggingface_hub.snapshot_download``).
        revision: hub branch, tag or commit.
        device: target device; default CUDA when available, else CPU.

    Raises:
        UnknownModelError, HubUnavailableError, WeightsError: see their messages.
    """
    folder = hub.resolve(source, revision=revision)
    config = hub.load_config(folder)
    if config.arch not in ARCHITECTURES:
        raise UnknownModelError(
            f"{folder / hub.CONFIG_NAME} names architecture {config.arch!r}, which is not registered "
            f"(known: {', '.join(sorted(ARCHITECTURES))}); if a plug-in module registers it, import that "
            "module first"
        )
    # Built on the meta device: no time spent on a random initialisation the weights replace.
    with torch.device("meta"):
        model, _, _ = build_model(config, pretrained=False)
    check_layers(model)
    load_weights(model, folder / hub.WEIGHTS_NAME)
    return model.to(device if device is not None else default_device()).eval()


def push_to_hub(folder_or_model: nn.Module | str | Path, repo_id: str, *, token: str | None = None,
                endpoint: str | None = None, private: bool = False, commit_message: str | None = None,
                dtype: torch.dtype | None = None):
    """Upload a saved model folder (or a model, saved first) to a hub repo.

    Args:
        folder_or_model: a FundusNet or a folder written by ``save_pretrained``.
        repo_id: ``org/name``.
        token, endpoint: passed to ``huggingface_hub.HfApi`` (default: the logged-in token, HF_ENDPOINT).
        private: create the repo private.
        commit_message: default "Upload <name> (fundus-cam-zoo)".
        dtype: storage dtype when a model is given (``torch.float16`` halves the upload).

    Returns:
        huggingface_hub's CommitInfo of the upload.

    Raises:
        ValueError: a bad repo id or a folder that is not a saved model.
    """
    hub.check_repo_id(repo_id)
    upload = dict(token=token, endpoint=endpoint, private=private, commit_message=commit_message)
    if not isinstance(folder_or_model, nn.Module):
        return hub.upload_folder(folder_or_model, repo_id, **upload)
    with tempfile.TemporaryDirectory(prefix="fcz_push_") as tmp:
        return hub.upload_folder(save_pretrained(folder_or_model, Path(tmp) / "model", dtype=dtype), repo_id, **upload)
