"""The one-pass explanation engine: ``Explainer`` runs the model once, ``Explanation`` holds the result.

The methods asked for (``explain.methods``: one registered object per method) say what they need; the
Explainer unions their needs and captures only that. One forward pass captures the high (and, for a method
that needs it, the low) layer's activations; layer gradients are taken only back to those layers with
``torch.autograd.grad`` (no parameter gradients), and only when a method needs them; guided backprop reuses
the same forward graph for a second backward to the input with the guided ReLU rule switched on, only when a
method needs input gradients. Several target classes share the forward pass (one backward per class).
``Explanation.maps(t=…)`` recombines the cached tensors and never runs the network again.

``explain`` is three steps: plan (which ``explain.capture_kinds`` the needs ask for, which layers to hook), capture
(the one forward, in the modes the kinds ask for) and backward (each kind collects its results). A new kind of
capture is declared in ``explain.capture_kinds``; none is named here.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import torch
from torch import nn

from explain.capture import GuidedState, LayerCapture
from explain.capture_kinds import CaptureKind, ForwardPass, kinds_for
from explain.methods import canonical_method, get_method, method_names, needs_of
from explain.methods.base import Selection
from explain.methods.formulas import grad_cam_pp_weights, normalise01
from explain.methods.gmsm import GATE
from explain.targets import Target, TargetContext, as_target, probabilities
from fundus.tasks import MULTICLASS, finding_thresholds, task_of

ALL_METHODS = method_names()  # every registered method, in display order
DEFAULT_METHODS = ALL_METHODS
_FROM_CONFIG = object()


@dataclass(frozen=True)
class PassPlan:
    """What one ``explain`` call captures, decided before the pass from the methods' needs."""

    methods: tuple[str, ...]  # asked for, registered names, in the order asked
    unavailable: dict[str, str]  # method -> why these settings cannot explain it (known before the pass)
    kinds: tuple[CaptureKind, ...]  # what the available methods' needs ask of the pass, in collecting order
    needs: frozenset[str]  # the available methods' needs
    layers: dict[str, str]  # role ("high", "low") -> the layer hooked for it; "high" always
    pooled: tuple[str, ...]  # layers whose outputs are kept averaged over space

    @property
    def graph(self) -> bool:
        """A kind runs a backward: the forward keeps its graph (CAM alone needs none)."""
        return any(kind.graph for kind in self.kinds)


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
        task: a ``fundus.tasks.TASKS`` name (default: config, else multiclass).
        thresholds: per-class multilabel decision thresholds (default: config, else 0.5).
        t: default GMSM gate (paper 004 eq. 2; default config.t, else GMSM's default).

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
        self.task = task_of(task or getattr(config, "task", None) or MULTICLASS).name  # raises for an unknown task
        self.thresholds = (list(thresholds) if thresholds is not None
                           else finding_thresholds(getattr(config, "thresholds", None)))  # as the model decides
        self.t = float(t if t is not None else getattr(config, "t", GATE.default))
        self.labels = list(getattr(config, "labels", []) or [])

    def __enter__(self) -> "Explainer":
        return self

    def __exit__(self, *exc) -> None:
        return None  # hooks never outlive a call: nothing to release

    def explain(
        self,
        x: torch.Tensor,
        target: Target | int | Sequence | str = "predicted",
        *,
        fov_mask=None,
        methods: Iterable[str] | None = None,
        pooled: Sequence[str] = (),
    ) -> "Explanation":
        """Run the model once and capture what the asked-for methods need: plan → capture → backward.

        Args:
            x: (B, 3, H, W) or (3, H, W) normalised input tensor.
            target: a ``explain.targets.Target`` (``Predicted()``, ``AllPredicted()``, ``Classes((2, 3))``,
                ``PerImage(...)``, ``Decided()``), or an int, a list of ints, a tuple of per-image targets,
                "predicted" or "all-predicted" (``explain.targets.as_target``).
            fov_mask: optional (H, W) or (B, H, W) bool field-of-view mask; maps are restricted to it
                and normalised inside it.
            methods: registered method names to prepare (default all); only the backward passes their needs
                call for run (no guided backward without a method that needs input gradients).
            pooled: names of (B, K, h, w) layers whose outputs, averaged over space, are kept too
                (``Explanation.pooled``), from the same forward pass: the target layer's are the captured ones.

        Returns:
            An ``Explanation``.

        Raises:
            TypeError: x is not a tensor.
            ValueError: bad shapes, targets or methods; a layer not called during the forward.
        """
        x = _as_batch(x)
        wanted = tuple(dict.fromkeys(canonical_method(m) for m in (methods or method_names())))
        target = as_target(target)
        fov = _fov_tensor(fov_mask, x.shape[0], tuple(x.shape[-2:]))
        plan = self._plan(wanted, self._layers_named(pooled))
        if self.model.training:
            warnings.warn("explaining a model in training mode (dropout, batch statistics); call model.eval()", stacklevel=2)
        with torch.inference_mode(False), torch.set_grad_enabled(plan.graph):  # CAM alone: no graph
            run = self._capture(plan, x)
            probs = probabilities(self.model, run.outputs.detach(), self.task)
            targets = target.resolve(TargetContext(run.outputs.detach(), probs, self.task, self.thresholds, self.model))
            run.selectors = _one_hot_rows(targets, run.outputs.shape)
            collected, after = self._backward(plan, run)
        unavailable = {**plan.unavailable, **after}
        return Explanation(
            inputs=x.detach(),
            outputs=run.outputs.detach(),
            probabilities=probs,
            targets=targets,
            activations={role: run.layers[role].detach() for role in plan.layers},
            pooled=run.pooled,
            cam_kind=self.cam,
            fov_mask=fov,
            methods=tuple(m for m in wanted if m not in unavailable),
            unavailable={m: unavailable[m] for m in wanted if m in unavailable},
            t=self.t,
            labels=self.labels,
            task=self.task,
            **collected,
        )

    def _layers_named(self, names: Sequence[str]) -> tuple[str, ...]:
        """The names, each once. Raises ValueError for a layer the model does not have."""
        names = tuple(dict.fromkeys(names))
        for name in names:
            _check_layer(self.model, name)
        return names

    def _plan(self, wanted: tuple[str, ...], pooled: tuple[str, ...]) -> PassPlan:
        """What the pass must capture for these methods: the kinds their needs ask for, the layers to hook, and
        the methods these settings cannot explain (a low-layer method without a low layer)."""
        unavailable = {}
        for name in wanted:
            method = get_method(name)
            reason = next(filter(None, (kind.missing(self, method) for kind in kinds_for(method.needs))), "")
            if reason:
                unavailable[name] = reason
        needs = needs_of(m for m in wanted if m not in unavailable)
        kinds = kinds_for(needs)
        layers = {"high": self.target_layer}  # the high layer's activations are always captured
        for kind in kinds:
            layers.update(kind.layers(self, needs))
        return PassPlan(wanted, unavailable, kinds, needs, layers, pooled)

    def _capture(self, plan: PassPlan, x: torch.Tensor) -> ForwardPass:
        """The one forward pass, hooking the plan's layers, in the modes its kinds ask for."""
        guided = GuidedState()
        inputs = x.detach().clone().to(_device_of(self.model, x)).requires_grad_(plan.graph)
        hooked = list(dict.fromkeys([*plan.layers.values(), *plan.pooled]))
        with LayerCapture(self.model, hooked) as capture, ExitStack() as modes:
            for kind in plan.kinds:
                modes.enter_context(kind.forward_mode(guided))
            raw = self.model(inputs)
        outputs = _as_outputs(raw, x.shape[0])
        for name in hooked:
            if name not in capture.outputs:
                raise ValueError(f"layer {name!r} was not called during the forward pass")
        layers = {role: capture.outputs[name] for role, name in plan.layers.items()}
        pooled = {name: capture.outputs[name].detach().float().mean(dim=(2, 3)) for name in plan.pooled}
        return ForwardPass(inputs, outputs, layers, guided, pooled)

    def _backward(self, plan: PassPlan, run: ForwardPass) -> tuple[dict[str, Any], dict[str, str]]:
        """Each kind's results after the forward, in the kinds' order (the graph is kept until its last user):
        ``Explanation`` field values, and the methods found unavailable after all (CAM on a head it does not fit)."""
        users = [kind for kind in plan.kinds if kind.graph]
        values: dict[str, Any] = {"gradients": {}, "guided_gradients": None, "cam_weights": None, "captured": {}}
        unavailable: dict[str, str] = {}
        for kind in plan.kinds:
            retain = kind.graph and kind is not users[-1]
            got = kind.collect(self, run, plan.needs & kind.needs, retain)
            values.update({k: {**values[k], **v} if k == "captured" else v for k, v in got.values.items()})
            if got.reason:  # e.g. CAM: the head is not target layer -> GAP -> linear
                unavailable.update({m: got.reason for m in plan.methods if kind.needs & get_method(m).needs})
        return values, unavailable


@dataclass(eq=False)
class Explanation:
    """What one ``Explainer.explain`` call captured; ``maps`` recombines it for any gate t and never runs the
    network again.

    Attributes:
        inputs: (B, 3, H, W) the input. outputs / probabilities: (B, C).
        targets: the explained classes, one list per image.
        activations: {"high", "low"?: (B, K, h, w)}.
        pooled: {layer: (B, K)} the spatially averaged outputs of the layers asked for with ``pooled``.
        gradients: {"high"?, "low"?: (R, B, K, h, w)}; row r holds each image's r-th target.
        guided_gradients: (R, B, 3, H, W) guided-backprop input gradients, or None (not needed).
        cam_kind / cam_weights: "linear" (weights (C, K)), "score_map" or None.
        fov_mask: (B, H, W) bool, or None.
        captured: {need: result} of capture kinds without a field of their own (``explain.capture_kinds``).
        methods: the prepared, available methods; unavailable: {method: why not}.
        t: the default GMSM gate (paper 004 eq. 2). labels, task: the model's.
    """

    inputs: torch.Tensor
    outputs: torch.Tensor
    probabilities: torch.Tensor
    targets: list[list[int]]
    activations: dict[str, torch.Tensor]
    pooled: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    guided_gradients: torch.Tensor | None
    cam_kind: str | None
    cam_weights: torch.Tensor | None
    fov_mask: torch.Tensor | None
    methods: tuple[str, ...]
    unavailable: dict[str, str]
    t: float
    labels: list[str]
    task: str
    captured: dict[str, Any] = field(default_factory=dict)  # what other capture kinds collected, by need
    shared_results: dict = field(default_factory=dict, repr=False)  # t-independent intermediates (Selection.shared)
    _finished: dict = field(default_factory=dict, repr=False)  # maps of parameter-free methods

    @property
    def batch_size(self) -> int:
        return self.inputs.shape[0]

    @property
    def input_size(self) -> tuple[int, int]:
        return tuple(self.inputs.shape[-2:])

    @cached_property
    def gradcam_pp_weights(self) -> dict[str, torch.Tensor]:
        """{layer: (R, B, K)} Grad-CAM++ weights (paper 004 eq. 1 / Grad-CAM++ eq. 19) of every row and image."""
        return {name: grad_cam_pp_weights(self.activations[name][None].expand_as(g).flatten(0, 1),
                                          g.flatten(0, 1)).view(*g.shape[:3])
                for name, g in self.gradients.items()}

    def maps(self, t: float | None = None, *, image: int = 0, target: int | None = None,
             **params: float) -> dict[str, np.ndarray]:
        """Saliency maps of one image, (H, W) float32 in [0, 1], zero outside the field of view.

        Args:
            t: GMSM gate (paper 004 eq. 2); default the explainer's t. Only methods with a ``t`` parameter use it.
            image: index in the batch.
            target: one of the explained classes of that image; default all of them, integrated
                (normalised sum of the per-class maps, paper 000 eq. 4 / paper 001 eq. 4).
            params: other methods' parameters, by name.

        Returns:
            {method: map} for the prepared, available methods, in display order.

        Raises:
            ValueError: image out of range, target not among the explained classes, a parameter out of range
                or that no prepared method takes.
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
        values = {"t": self.t if t is None else t, **params}
        taken = {p.name for m in self.methods for p in get_method(m).params}
        if set(params) - taken:
            raise ValueError(f"no prepared method takes {sorted(set(params) - taken)}; parameters: {sorted(taken)}")
        selection = Selection(self, image, classes, [explained.index(c) for c in classes], get_method)
        result = {}
        with torch.no_grad():
            for name in self.methods:
                method = get_method(name)
                args = {p.name: p.check(values.get(p.name, p.default)) for p in method.params}
                key = (image, classes, name)
                if args or key not in self._finished:  # map_of: a map another method reuses is computed once
                    finished = self._finish(selection.map_of(name, **args), image)
                    if args:
                        result[name] = finished
                        continue
                    self._finished[key] = finished
                result[name] = self._finished[key].copy()  # callers may edit
        return result

    def _finish(self, per_class: torch.Tensor, image: int) -> np.ndarray:
        """Restrict each class map to the FOV, normalise inside it, integrate over classes (eq. 4)."""
        fov = None if self.fov_mask is None else self.fov_mask[image].to(per_class.device)
        per_class = normalise01(per_class.float(), fov)
        if per_class.shape[0] > 1:
            per_class = normalise01(per_class.sum(dim=0, keepdim=True), fov)
        return per_class[0].cpu().numpy().astype(np.float32)

    def predictions(self, image: int = 0) -> list[tuple[str, float]]:
        """(label, probability or grade value) for each output of one image, in output order."""
        values = self.probabilities[image].tolist()
        labels = self.labels if len(self.labels) == len(values) else [str(i) for i in range(len(values))]
        return list(zip(labels, values))

    def maps_on_original(self, preprocessed, original_shape, t: float | None = None, image: int = 0) -> dict[str, np.ndarray]:
        """The maps brought back onto the original photo with ``Preprocessed.to_original``."""
        return {k: preprocessed.to_original(v, original_shape) for k, v in self.maps(t, image=image).items()}


def _as_batch(x) -> torch.Tensor:
    """x as (B, C, H, W). Raises TypeError for a non-tensor, ValueError for another shape."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"x must have shape (B, C, H, W) or (C, H, W), got {tuple(x.shape)}")
    return x


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

