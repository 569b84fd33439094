"""pytorch-grad-cam's other methods (ScoreCAM, EigenCAM, XGradCAM, HiResCAM, …) offered as extras.

Only methods the registry (``explain.methods``) does not have: "layercam" is one of ours (one pass, no
``loss.backward()``), so it is not offered here under the same name with another implementation.

They are run through pytorch-grad-cam itself, not rewritten. It runs a full ``loss.backward()`` and
switches the model to eval mode, so each call saves and restores every parameter's ``.grad`` and
each module's training flag, and calls are serialised with a lock (they mutate shared state).
"""
from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

EXTRA_METHODS = {
    "scorecam": "ScoreCAM",
    "eigencam": "EigenCAM",
    "eigengradcam": "EigenGradCAM",
    "xgradcam": "XGradCAM",
    "hirescam": "HiResCAM",
    "gradcamelementwise": "GradCAMElementWise",
    "ablationcam": "AblationCAM",
    "fullgrad": "FullGrad",
    "kpcacam": "KPCA_CAM",
    "randomcam": "RandomCAM",
}
_LOCK = threading.Lock()


def extra_method(model: nn.Module, name: str, tensor: torch.Tensor, target=None, *, target_layer: str | None = None,
                 fov_mask=None, batch_size: int = 16) -> np.ndarray:
    """A saliency map from one of pytorch-grad-cam's methods.

    Args:
        model: the network (its ``config.target_layer`` is used unless ``target_layer`` is given).
        name: a key of ``EXTRA_METHODS`` ("scorecam", "eigencam", "hirescam", …; case and "-"/"_" ignored).
        tensor: (B, 3, H, W) input.
        target: class index for every image, a list of one index per image, or None (the top output).
        target_layer: dotted module path of the layer to use.
        fov_mask: optional (H, W) bool; the maps are restricted to it and renormalised inside it.
        batch_size: ScoreCAM / AblationCAM perturbation batch size.

    Returns:
        (B, H, W) float32 maps in [0, 1].

    Raises:
        ValueError: an unknown method (a registered one, "layercam", included), no target layer, or targets not
            matching the batch.
        TypeError: tensor is not a torch.Tensor.
    """
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    key = _extra_key(name)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"tensor must be a torch.Tensor, got {type(tensor).__name__}")
    if tensor.dim() == 3:
        tensor = tensor[None]
    layer_name = target_layer or getattr(getattr(model, "config", None), "target_layer", "")
    if not layer_name:
        raise ValueError("no target layer: pass target_layer='…' or give the model a config.target_layer")
    layer = model.get_submodule(layer_name)
    batch = tensor.shape[0]
    if target is None:
        targets = None
    else:
        indices = [target] * batch if isinstance(target, int) else list(target)
        if len(indices) != batch:
            raise ValueError(f"per-image targets must match the batch size: got {len(indices)} for {batch} images")
        targets = [ClassifierOutputTarget(int(i)) for i in indices]
    cls = getattr(pytorch_grad_cam, EXTRA_METHODS[key])
    with _LOCK:
        saved_grads = {p: p.grad for p in model.parameters()}
        saved_modes = {m: m.training for m in model.modules()}
        try:
            kwargs = {"batch_size": batch_size} if key in ("scorecam", "ablationcam") else {}
            with cls(model=model, target_layers=[layer]) as cam:
                for attr, value in kwargs.items():
                    setattr(cam, attr, value)
                maps = cam(input_tensor=tensor, targets=targets)
        finally:
            for p, grad in saved_grads.items():
                p.grad = grad
            for m, mode in saved_modes.items():
                m.training = mode
    from explain.regions import normalise_map

    return np.stack([normalise_map(m, fov_mask) for m in np.asarray(maps, dtype=np.float32)])


def _extra_key(name: str) -> str:
    """The ``EXTRA_METHODS`` key of a spelling. Raises ValueError for another name, saying when it is one of ours."""
    from explain.methods import canonical_method

    key = name.lower().replace("-", "").replace("_", "").replace("++", "pp")
    if key in EXTRA_METHODS:
        return key
    try:
        ours = f" ({canonical_method(name)!r} is a registered method: Explainer.explain(..., methods=[...]))"
    except ValueError:
        ours = ""
    raise ValueError(f"unknown extra method {name!r}{ours}; choose from {', '.join(sorted(EXTRA_METHODS))}")
