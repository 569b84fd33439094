"""What each kind of need asks of the one pass: the layers its forward hooks, whether the forward keeps its graph,
the mode the forward runs in, and what it collects after the forward (a backward, or a read-out).

``Explainer.explain`` runs plan → capture (one forward) → backward over these objects and names none of them, so a
method that needs a new kind of capture declares it here instead of editing ``explain``: its need's name in
``explain.methods.base.NEEDS`` (the registry accepts only those) and one ``CaptureKind`` subclass decorated with
``@capture_kind``. Its results go into ``Explanation.captured[need]`` unless it writes one of the named fields.

    @capture_kind
    class InputGradients(CaptureKind):       # plain ∂y^c/∂x, say
        needs, graph, order = frozenset({"plain_input_gradients"}), True, 40
        def collect(self, settings, run, needs, retain_graph):
            grads = row_gradients(run.outputs, [run.inputs], run.selectors, retain_graph)[0]
            return Collected({"captured": {"plain_input_gradients": grads.detach()}})
"""
from __future__ import annotations

import warnings
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from explain.capture import GuidedReluMode, GuidedState
from explain.methods.base import CAM_WEIGHTS, HIGH_GRADIENTS, INPUT_GRADIENTS, LOW_GRADIENTS, Method


class PassSettings(Protocol):
    """What the kinds read of the Explainer: the model, its layers and its CAM set-up."""

    model: nn.Module
    target_layer: str
    low_layer: str
    cam: str | None
    cam_classifier: str
    cam_reason: str


@dataclass
class ForwardPass:
    """The one forward pass, as the collecting steps read it."""

    inputs: torch.Tensor  # (B, 3, H, W) as the network saw it; requires grad when a kind keeps the graph
    outputs: torch.Tensor  # (B, C) raw outputs, with their graph when one was kept
    layers: dict[str, torch.Tensor]  # role ("high", "low") -> the captured layer output (B, K, h, w)
    guided: GuidedState  # the guided ReLU rule's switch for this call
    pooled: dict[str, torch.Tensor] = field(default_factory=dict)  # layer -> its output averaged over space (B, K)
    selectors: torch.Tensor | None = None  # (R, B, C): row r picks each image's r-th target (set once resolved)


@dataclass(frozen=True)
class Collected:
    """What a kind collected: ``Explanation`` field values, and why its methods are unavailable after all."""

    values: dict[str, Any] = field(default_factory=dict)
    reason: str = ""  # '' when the methods needing this kind are available


class CaptureKind:
    """One kind of capture, serving one or more needs. Subclasses override what they add to the pass.

    Attributes:
        needs: the needs (``explain.methods.base.NEEDS``) it serves.
        graph: it runs a backward, so the forward keeps its autograd graph.
        order: collecting steps run in this order (a step that uses the graph keeps it for later ones).
    """

    needs: ClassVar[frozenset[str]] = frozenset()
    graph: ClassVar[bool] = False
    order: ClassVar[int] = 100

    def missing(self, settings: PassSettings, method: Method) -> str:
        """Why ``method`` cannot be had with these settings, known before the pass ('' it can)."""
        return ""

    def layers(self, settings: PassSettings, needs: frozenset[str]) -> dict[str, str]:
        """role -> the layer whose output the forward must capture for these needs."""
        return {}

    def forward_mode(self, guided: GuidedState) -> AbstractContextManager:
        """The mode the forward runs in (the guided ReLU rule registers its hooks there)."""
        return nullcontext()

    def collect(self, settings: PassSettings, run: ForwardPass, needs: frozenset[str],
                retain_graph: bool) -> Collected:
        """After the forward: the results for these needs (``retain_graph``: a later step uses the graph)."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<capture kind {type(self).__name__}: {', '.join(sorted(self.needs))}>"


_KINDS: dict[str, CaptureKind] = {}  # need -> the kind that serves it


def capture_kind(cls: type[CaptureKind]) -> type[CaptureKind]:
    """Class decorator: the kind serves its needs from now on.

    Raises:
        TypeError: not a CaptureKind subclass.
        ValueError: no needs, or a need another kind already serves.
    """
    if not (isinstance(cls, type) and issubclass(cls, CaptureKind)):
        raise TypeError(f"capture_kind takes a CaptureKind subclass, got {cls!r}")
    taken = sorted(need for need in cls.needs if need in _KINDS)
    if not cls.needs or taken:
        raise ValueError(f"{cls.__name__}: a capture kind needs needs of its own; taken: {taken}")
    kind = cls()
    _KINDS.update(dict.fromkeys(cls.needs, kind))
    return cls


def kinds_for(needs) -> tuple[CaptureKind, ...]:
    """The kinds serving these needs, each once, in ``order``.

    Raises:
        ValueError: a need no kind serves.
    """
    unknown = sorted(set(needs) - set(_KINDS))
    if unknown:
        raise ValueError(f"no capture kind serves {unknown}: declare one with @capture_kind")
    kinds = {id(_KINDS[need]): _KINDS[need] for need in needs}
    return tuple(sorted(kinds.values(), key=lambda kind: kind.order))


def row_gradients(out: torch.Tensor, inputs: list[torch.Tensor], selectors: torch.Tensor,
                  retain_graph: bool) -> list[torch.Tensor]:
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


@capture_kind
class LayerGradients(CaptureKind):
    """∂y^c/∂A of the high and/or low layer: one backward per target row for both, only back to the layers."""

    needs = frozenset({HIGH_GRADIENTS, LOW_GRADIENTS})
    graph = True
    order = 10
    ROLES = {HIGH_GRADIENTS: "high", LOW_GRADIENTS: "low"}  # in this order

    def missing(self, settings: PassSettings, method: Method) -> str:
        if LOW_GRADIENTS in method.needs and not settings.low_layer:
            return f"no low_layer configured: {method.title} needs a low and a high layer"
        return ""

    def layers(self, settings: PassSettings, needs: frozenset[str]) -> dict[str, str]:
        names = {"high": settings.target_layer, "low": settings.low_layer}
        return {role: names[role] for need, role in self.ROLES.items() if need in needs}

    def collect(self, settings: PassSettings, run: ForwardPass, needs: frozenset[str],
                retain_graph: bool) -> Collected:
        roles = [role for need, role in self.ROLES.items() if need in needs]
        got = row_gradients(run.outputs, [run.layers[role] for role in roles], run.selectors, retain_graph)
        return Collected({"gradients": {role: grads.detach() for role, grads in zip(roles, got)}})


@capture_kind
class GuidedInputGradients(CaptureKind):
    """Guided backprop: the forward under the guided ReLU rule, then a second backward, to the input, with the rule
    switched on (the same graph as the layer gradients')."""

    needs = frozenset({INPUT_GRADIENTS})
    graph = True
    order = 20

    def forward_mode(self, guided: GuidedState) -> AbstractContextManager:
        return GuidedReluMode(guided)

    def collect(self, settings: PassSettings, run: ForwardPass, needs: frozenset[str],
                retain_graph: bool) -> Collected:
        if run.guided.relu_count == 0:
            warnings.warn("no ReLU found in the forward pass: guided backprop equals the plain gradient", stacklevel=4)
        with run.guided.guided():
            grads = row_gradients(run.outputs, [run.inputs], run.selectors, retain_graph)[0]
        return Collected({"guided_gradients": grads.detach()})


@capture_kind
class CamWeights(CaptureKind):
    """CAM's classifier: the linear head's weights after GAP, or the class score maps themselves (paper 001); read
    after the forward, no backward."""

    needs = frozenset({CAM_WEIGHTS})
    order = 30

    def collect(self, settings: PassSettings, run: ForwardPass, needs: frozenset[str],
                retain_graph: bool) -> Collected:
        weights, reason = cam_weights(settings, run.layers["high"].shape[1], run.outputs.shape[1])
        return Collected({"cam_weights": weights}, reason)


def cam_weights(settings: PassSettings, channels: int, num_outputs: int) -> tuple[torch.Tensor | None, str]:
    """The linear head's weights for CAM (None for score maps), or why CAM is undefined here."""
    if settings.cam is None:
        return None, settings.cam_reason
    if settings.cam == "score_map":
        if channels != num_outputs:
            return None, f"target layer has {channels} channels, not one score map per output ({num_outputs})"
        return None, ""
    weight = getattr(settings.model.get_submodule(settings.cam_classifier), "weight", None)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != (num_outputs, channels):
        shape = None if weight is None else tuple(weight.shape)
        return None, (f"{settings.cam_classifier!r} weight {shape} is not (outputs={num_outputs}, "
                      f"channels={channels}): CAM needs target layer -> GAP -> this linear layer")
    return weight.detach().clone(), ""
