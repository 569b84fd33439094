"""The one-pass explanation engine: ``Explainer`` runs the model once, ``Explanation`` holds the result.

One forward pass captures the high (and low) layer's activations; Grad-CAM, Grad-CAM++ and GMSM
gradients are taken only back to those layers with ``torch.autograd.grad`` (no parameter
gradients); guided backprop reuses the same forward graph for a second backward to the input with
the guided ReLU rule switched on. Several target classes share the forward pass
(one backward per class). ``Explanation.maps(t=…)`` recombines the cached tensors and never runs the
network again.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from explain import methods as M
from explain.capture import GuidedReluMode, GuidedState, LayerCapture
from explain.targets import probabilities, resolve_targets

ALL_METHODS = ("cam", "gradcam", "gradcam_pp", "guided_backprop", "guided_gradcam", "gmsm")
DEFAULT_METHODS = ALL_METHODS
_GUIDED = {"guided_backprop", "guided_gradcam"}
_GRADIENT = {"gradcam", "gradcam_pp", "guided_gradcam", "gmsm"}
_FROM_CONFIG = object()


def canonical_method(name: str) -> str:
    """Method name as used in ``maps()`` keys ("guided-gradcam" -> "guided_gradcam", "gradcam++" -> "gradcam_pp")."""
    key = name.strip().lower().replace("-", "_").replace("++", "_pp")
    aliases = {"grad_cam": "gradcam", "guided_grad_cam": "guided_gradcam", "grad_cam_pp": "gradcam_pp",
               "guided_backpropagation": "guided_backprop"}
    key = aliases.get(key, key)
    if key not in ALL_METHODS:
        raise ValueError(f"unknown method {name!r}; choose from {', '.join(ALL_METHODS)}")
    return key


class Explainer:
    """Explains a model's outputs with CAM, Grad-CAM(++), guided backprop, Guided Grad-CAM and GMSM.

    Works on any ``nn.Module`` given explicit layer names; defaults are read from ``model.config``
    (a zoo ``ModelConfig``) when present. Hooks exist only inside ``explain`` calls, the model is
    never modified, and one cached model may be explained from several threads at once.

    Args:
        model: the network, in eval mode (a training-mode model is explained as it is, with a warning).
        target_layer: dotted module path of the high layer (Grad-CAM, Guided Grad-CAM, GMSM high, CAM).
        low_layer: dotted path of GMSM's lower layer; without it GMSM is unavailable.
        cam: "linear" (target_layer -> GAP -> ``cam_classifier``), "score_map" (target_layer outputs
            the class score maps, paper 001) or None (CAM undefined; ``cam_reason`` says why).
        cam_classifier: dotted path of the linear layer for cam="linear".
        cam_reason: why CAM is undefined, reported in ``Explanation.unavailable``.
        task: "multiclass", "multilabel" or "grade-regression" (default: config, else multiclass).
        thresholds: per-class multilabel decision thresholds (default: config, else 0.5).
        t: default GMSM gate (paper 004 eq. 2; default config.t, else 1.0).

    Raises:
        ValueError: a missing or unknown layer name, an unknown cam kind or task.
        TypeError: model is not an ``nn.Module``.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        target_layer: str | None = None,
        low_layer: str | None = None,
        cam=_FROM_CONFIG,
        cam_classifier: str | None = None,
        cam_reason: str | None = None,
        task: str | None = None,
        thresholds: Sequence[float] | None = None,
        t: float | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        config = getattr(model, "config", None)
        self.model = model
        self.target_layer = target_layer or getattr(config, "target_layer", "") or ""
        self.low_layer = low_layer or getattr(config, "low_layer", "") or ""
        if not self.target_layer:
            raise ValueError("no target layer: pass target_layer='…' or give the model a config.target_layer")
        for name in filter(None, (self.target_layer, self.low_layer)):
            _check_layer(model, name)
        if cam is _FROM_CONFIG:
            if config is not None:
                cam = getattr(config, "cam", None)
                cam_classifier = cam_classifier or getattr(config, "cam_classifier", "")
                cam_reason = cam_reason or getattr(config, "cam_reason", "")
            else:
                cam = "linear" if cam_classifier else None
                cam_reason = cam_reason or "no cam_classifier given for plain CAM"
        if cam not in ("linear", "score_map", None):
            raise ValueError(f"cam must be 'linear', 'score_map' or None, got {cam!r}")
        if cam == "linear":
            if not cam_classifier:
                raise ValueError("cam='linear' needs cam_classifier, the linear layer applied after GAP")
            _check_layer(model, cam_classifier)
        self.cam = cam
        self.cam_classifier = cam_classifier or ""
        self.cam_reason = cam_reason or ("CAM is not defined for this model" if cam is None else "")
        self.task = task or getattr(config, "task", None) or "multiclass"
        if self.task not in ("multiclass", "multilabel", "grade-regression"):
            raise ValueError(f"task must be multiclass, multilabel or grade-regression, got {self.task!r}")
        self.thresholds = list(thresholds) if thresholds is not None else list(getattr(config, "thresholds", []) or [])
        self.t = float(t if t is not None else getattr(config, "t", 1.0))
        self.labels = list(getattr(config, "labels", []) or [])

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        return None  # hooks never outlive a call: nothing to release

    def explain(
        self,
        x: torch.Tensor,
        target="predicted",
        *,
        fov_mask=None,
        methods: Iterable[str] | None = None,
    ) -> "Explanation":
        """Run the model once and capture everything the maps need.

        Args:
            x: (B, 3, H, W) or (3, H, W) normalised input tensor.
            target: see ``explain.targets.resolve_targets``: int, list of ints, tuple of per-image
                targets, "predicted" or "all-predicted".
            fov_mask: optional (H, W) or (B, H, W) bool field-of-view mask; maps are restricted to it
                and normalised inside it.
            methods: subset of ``ALL_METHODS`` to prepare (default all); skipping both guided methods
                saves the backward to the input.

        Returns:
            An ``Explanation``.

        Raises:
            TypeError: x is not a tensor.
            ValueError: bad shapes, targets or methods; a layer not called during the forward.
        """
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
        wanted = tuple(dict.fromkeys(canonical_method(m) for m in (methods or DEFAULT_METHODS)))
        fov = _fov_tensor(fov_mask, x.shape[0], tuple(x.shape[-2:]))
        if self.model.training:
            warnings.warn("explaining a model in training mode (dropout, batch statistics); call model.eval()", stacklevel=2)
        need_guided = bool(_GUIDED & set(wanted))
        need_low = "gmsm" in wanted and bool(self.low_layer)
        layers = [self.target_layer] + ([self.low_layer] if need_low else [])
        device = _device_of(self.model, x)
        state = GuidedState()
        with torch.inference_mode(False), torch.enable_grad():
            x_in = x.detach().clone().to(device).requires_grad_(True)
            with LayerCapture(self.model, layers) as capture:
                if need_guided:
                    with GuidedReluMode(state):
                        raw = self.model(x_in)
                else:
                    raw = self.model(x_in)
            out = _as_outputs(raw, x.shape[0])
            for name in layers:
                if name not in capture.outputs:
                    raise ValueError(f"layer {name!r} was not called during the forward pass")
            high = capture.outputs[self.target_layer]
            low = capture.outputs.get(self.low_layer) if need_low else None
            probs = probabilities(self.model, out.detach(), self.task)
            targets = resolve_targets(target, out.detach(), probs, self.task, self.thresholds)
            selectors = _one_hot_rows(targets, out.shape)
            grads: dict[str, torch.Tensor] = {}
            guided = None
            if _GRADIENT & set(wanted):
                inputs = [high] + ([low] if low is not None else [])
                got = _grad(out, inputs, selectors, retain_graph=need_guided)
                grads["high"] = got[0]
                if low is not None:
                    grads["low"] = got[1]
            if need_guided:
                if state.relu_count == 0:
                    warnings.warn("no ReLU found in the forward pass: guided backprop equals the plain gradient", stacklevel=2)
                with state.guided():
                    guided = _grad(out, [x_in], selectors, retain_graph=False)[0]
        cam_weights, unavailable = self._cam_weights(high, out.shape[1], wanted)
        if "gmsm" in wanted and not self.low_layer:
            unavailable["gmsm"] = "no low_layer configured for GMSM (paper 004 needs a low and a high layer)"
        return Explanation(
            inputs=x.detach(),
            outputs=out.detach(),
            probabilities=probs,
            targets=targets,
            activations={"high": high.detach(), **({"low": low.detach()} if low is not None else {})},
            gradients={k: v.detach() for k, v in grads.items()},
            guided_gradients=None if guided is None else guided.detach(),
            cam_kind=self.cam,
            cam_weights=cam_weights,
            fov_mask=fov,
            methods=tuple(m for m in wanted if m not in unavailable),
            unavailable=unavailable,
            t=self.t,
            labels=self.labels,
            task=self.task,
        )

    def _cam_weights(self, high: torch.Tensor, num_outputs: int, wanted) -> tuple[torch.Tensor | None, dict[str, str]]:
        if "cam" not in wanted:
            return None, {}
        if self.cam is None:
            return None, {"cam": self.cam_reason}
        channels = high.shape[1]
        if self.cam == "score_map":
            if channels != num_outputs:
                return None, {"cam": f"target layer has {channels} channels, not one score map per output ({num_outputs})"}
            return None, {}
        weight = getattr(self.model.get_submodule(self.cam_classifier), "weight", None)
        if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (num_outputs, channels):
            shape = None if weight is None else tuple(weight.shape)
            return None, {"cam": f"{self.cam_classifier!r} weight {shape} is not (outputs={num_outputs}, channels={channels}): "
                                 "CAM needs target layer -> GAP -> this linear layer"}
        return weight.detach().clone(), {}


class Explanation:
    """Cached activations, gradients, Grad-CAM++ weights and guided gradients of one ``explain`` call.

    ``maps`` recombines them for any gate t and never runs the network again.
    """

    def __init__(self, *, inputs, outputs, probabilities, targets, activations, gradients, guided_gradients,
                 cam_kind, cam_weights, fov_mask, methods, unavailable, t, labels, task) -> None:
        self.inputs = inputs
        self.outputs = outputs
        self.probabilities = probabilities
        self.targets = targets
        self.activations = activations
        self.gradients = gradients  # name -> (R, B, K, h, w): row r holds each image's r-th target
        self.guided_gradients = guided_gradients  # (R, B, 3, H, W)
        self.gradcam_pp_weights = {  # name -> (R, B, K), paper 004 eq. 1 / Grad-CAM++ eq. 19
            name: M.grad_cam_pp_weights(activations[name][None].expand_as(g).flatten(0, 1), g.flatten(0, 1)).view(*g.shape[:3])
            for name, g in gradients.items()
        }
        self.cam_kind = cam_kind
        self.cam_weights = cam_weights
        self.fov_mask = fov_mask
        self.methods = methods
        self.unavailable = unavailable
        self.t = t
        self.labels = labels
        self.task = task
        self.input_size = tuple(inputs.shape[-2:])
        self._fixed_cache: dict = {}
        self._saliency_cache: dict = {}

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    def maps(self, t: float | None = None, *, image: int = 0, target: int | None = None) -> dict[str, np.ndarray]:
        """Saliency maps of one image, (H, W) float32 in [0, 1], zero outside the field of view.

        Args:
            t: GMSM gate (paper 004 eq. 2); default the explainer's t. Only GMSM depends on it.
            image: index in the batch.
            target: one of the explained classes of that image; default all of them, integrated
                (normalised sum of the per-class maps, paper 000 eq. 4 / paper 001 eq. 4).

        Returns:
            {method: map} for the prepared, available methods ("cam", "gradcam", "gradcam_pp",
            "guided_backprop", "guided_gradcam", "gmsm").

        Raises:
            ValueError: image out of range, or target not among the explained classes.
        """
        if not 0 <= image < self.batch_size:
            raise ValueError(f"image index {image} out of range for a batch of {self.batch_size}")
        explained = self.targets[image]
        if target is None:
            classes = tuple(explained)
        else:
            if target not in explained:
                raise ValueError(f"class {target} was not explained for image {image}; explained: {explained}")
            classes = (target,)
        rows = [explained.index(c) for c in classes]
        key = (image, classes)
        if key not in self._fixed_cache:
            self._fixed_cache[key] = self._t_free_maps(image, classes, rows)
        result = {name: array.copy() for name, array in self._fixed_cache[key].items()}  # callers may edit
        if "gmsm" in self.methods:
            gate_t = self.t if t is None else float(t)
            low = self._pp_saliency("low", image, rows)
            high = self._pp_saliency("high", image, rows)
            with torch.no_grad():
                result["gmsm"] = self._finish(M.gmsm(low, high, self.input_size, gate_t), image)
        return {m: result[m] for m in self.methods if m in result}

    def _t_free_maps(self, image: int, classes: tuple[int, ...], rows: list[int]) -> dict[str, np.ndarray]:
        size = self.input_size
        found: dict[str, np.ndarray] = {}
        gradcam = None
        if {"gradcam", "guided_gradcam"} & set(self.methods):
            weights = M.grad_cam_weights(self.gradients["high"][rows, image])
            gradcam = M.layer_map(M.weighted_sum(weights, self._activation("high", image, len(rows))), size)
        if "gradcam" in self.methods:
            found["gradcam"] = self._finish(gradcam, image)
        if "gradcam_pp" in self.methods:
            found["gradcam_pp"] = self._finish(M.layer_map(self._pp_saliency("high", image, rows), size), image)
        if "cam" in self.methods:
            activation = self.activations["high"][image]
            if self.cam_kind == "score_map":
                saliency = activation[list(classes)]  # paper 001: the class score maps themselves
            else:  # CAM (Zhou et al. 2016): Σ_k w_k^c A^k with the linear head's weights
                saliency = M.weighted_sum(self.cam_weights[list(classes)], activation[None].expand(len(rows), -1, -1, -1))
            found["cam"] = self._finish(M.layer_map(saliency, size), image)
        if _GUIDED & set(self.methods):
            guided = M.guided_saliency(self.guided_gradients[rows, image])
            if "guided_backprop" in self.methods:
                found["guided_backprop"] = self._finish(guided, image)
            if "guided_gradcam" in self.methods:  # paper 000 eq. 3: guided backprop · Grad-CAM
                found["guided_gradcam"] = self._finish(guided * gradcam, image)
        return found

    def _activation(self, name: str, image: int, count: int) -> torch.Tensor:
        return self.activations[name][image][None].expand(count, -1, -1, -1)

    def _pp_saliency(self, name: str, image: int, rows: list[int]) -> torch.Tensor:
        """Σ_k w_k A_k with Grad-CAM++ weights (paper 004 eq. 1 before the gate), cached: t-independent."""
        key = (name, image, tuple(rows))
        if key not in self._saliency_cache:
            weights = self.gradcam_pp_weights[name][rows, image]
            self._saliency_cache[key] = M.weighted_sum(weights, self._activation(name, image, len(rows)))
        return self._saliency_cache[key]

    def _finish(self, per_class: torch.Tensor, image: int) -> np.ndarray:
        """Restrict each class map to the FOV, normalise inside it, integrate over classes (eq. 4)."""
        fov = None if self.fov_mask is None else self.fov_mask[image].to(per_class.device)
        per_class = M.normalise01(per_class.float(), fov)
        if per_class.shape[0] > 1:
            per_class = M.normalise01(per_class.sum(dim=0, keepdim=True), fov)
        return per_class[0].cpu().numpy().astype(np.float32)

    def predictions(self, image: int = 0) -> list[tuple[str, float]]:
        """(label, probability or grade value) for each output of one image, in output order."""
        values = self.probabilities[image].tolist()
        labels = self.labels if len(self.labels) == len(values) else [str(i) for i in range(len(values))]
        return list(zip(labels, values))

    def maps_on_original(self, preprocessed, original_shape, t: float | None = None, image: int = 0) -> dict[str, np.ndarray]:
        """The maps brought back onto the original photo with ``Preprocessed.to_original``."""
        return {k: preprocessed.to_original(v, original_shape) for k, v in self.maps(t, image=image).items()}


def _check_layer(model: nn.Module, name: str) -> None:
    try:
        model.get_submodule(name)
    except AttributeError as error:
        top = ", ".join(n for n, _ in model.named_children())
        raise ValueError(f"layer {name!r} not found in {type(model).__name__} (top-level modules: {top})") from error


def _device_of(model: nn.Module, x: torch.Tensor) -> torch.device:
    for p in model.parameters():
        return p.device
    return x.device


def _as_outputs(raw, batch: int) -> torch.Tensor:
    if not isinstance(raw, torch.Tensor):
        raw = getattr(raw, "logits", None) if hasattr(raw, "logits") else (raw[0] if isinstance(raw, (tuple, list)) else None)
    if not isinstance(raw, torch.Tensor):
        raise ValueError("the model must return a tensor of outputs (or a tuple / object with .logits)")
    if raw.dim() == 1:
        raw = raw[:, None]  # a regression net returning (B,): one output cell
    if raw.dim() != 2 or raw.shape[0] != batch:
        raise ValueError(f"model outputs must be (B, num_outputs), got {tuple(raw.shape)}")
    return raw


def _fov_tensor(fov_mask, batch: int, size: tuple[int, int]) -> torch.Tensor | None:
    if fov_mask is None:
        return None
    mask = torch.as_tensor(np.asarray(fov_mask) if not isinstance(fov_mask, torch.Tensor) else fov_mask).bool().cpu()
    if mask.dim() == 2:
        mask = mask[None].expand(batch, -1, -1)
    if mask.dim() != 3 or tuple(mask.shape[-2:]) != size or mask.shape[0] != batch:
        raise ValueError(f"fov_mask must be (H, W) or (B, H, W) matching the input {size}, got {tuple(mask.shape)}")
    return mask


def _one_hot_rows(targets: list[list[int]], shape) -> torch.Tensor:
    """(R, B, C) selectors: row r picks each image's r-th target (images are independent in eval mode)."""
    rows = max(len(t) for t in targets)
    selectors = torch.zeros(rows, *shape)
    for b, classes in enumerate(targets):
        for r, c in enumerate(classes):
            selectors[r, b, c] = 1.0
    return selectors


def _grad(out: torch.Tensor, inputs: list[torch.Tensor], selectors: torch.Tensor, retain_graph: bool) -> list[torch.Tensor]:
    """Gradients of each selector row's scores w.r.t. inputs, (R, *input.shape) each; no parameter grads.

    One backward per row over the shared forward graph. ``is_grads_batched=True`` (vmap) was measured
    slower on CPU: its convolution_backward batching rule runs per sample and concatenates.
    """
    selectors = selectors.to(out.device, out.dtype)
    rows = selectors.shape[0]
    per_row = [
        torch.autograd.grad(out, inputs, grad_outputs=row, retain_graph=retain_graph or index < rows - 1)
        for index, row in enumerate(selectors)
    ]
    return [torch.stack(grads) for grads in zip(*per_row)]
