"""Per-call capture of layer activations and the guided-backprop ReLU rule.

Both live only for the duration of one ``Explainer.explain`` call and never modify the model:
forward hooks are removed in ``finally`` and ignore forwards from other threads or other calls;
the guided rule is a tensor hook on every ReLU output, reached through a thread-local
``TorchFunctionMode`` so that functional ``F.relu`` / in-place ``relu_`` (torchvision Inception)
are covered without swapping modules.
"""
from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn
from torch.overrides import TorchFunctionMode

# ReLU-family gates the guided rule applies to (ReLU6 is Hardtanh(0, 6) in torch; paper 004's DR
# detection net uses leaky ReLU, whose guided version likewise passes only positive gradients).
_RELU_FUNCS = {
    F.leaky_relu,
    F.leaky_relu_,
    torch._C._nn.leaky_relu,
    torch._C._nn.leaky_relu_,
    F.relu,
    F.relu_,
    torch.relu,
    torch.relu_,
    torch.Tensor.relu,
    torch.Tensor.relu_,
    F.relu6,
}


class GuidedState:
    """Per-call switch: the guided rule acts only while this call's guided backward runs."""

    def __init__(self) -> None:
        self.active = False
        self.relu_count = 0

    def hook(self, grad: torch.Tensor) -> torch.Tensor | None:
        # Guided backprop (Springenberg et al.; paper 000 before eq. 3): clamp the gradient arriving at
        # the ReLU's output to ≥ 0; the ReLU's own backward then applies the input > 0 mask.
        return grad.clamp(min=0) if self.active else None

    @contextmanager
    def guided(self) -> Iterator[None]:
        self.active = True
        try:
            yield
        finally:
            self.active = False


class GuidedReluMode(TorchFunctionMode):
    """Registers ``state.hook`` on the output of every ReLU called during the forward."""

    def __init__(self, state: GuidedState) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if _is_relu(func, args, kwargs) and isinstance(out, torch.Tensor) and out.requires_grad:
            out.register_hook(self.state.hook)
            self.state.relu_count += 1
        return out


def _is_relu(func, args, kwargs) -> bool:
    if func in _RELU_FUNCS:
        return True
    if func is F.hardtanh:  # nn.ReLU6 -> F.hardtanh(x, 0., 6.): a ReLU gate at 0
        min_val = (kwargs or {}).get("min_val", args[1] if len(args) > 1 else -1.0)
        return float(min_val) == 0.0
    return False


class LayerCapture:
    """Forward hooks that record named layers' outputs for one call in one thread.

    A module's forward hooks fire for every thread's forward through a shared model; the hook
    therefore records only the forward of the thread (and call) that created it.
    """

    def __init__(self, model: nn.Module, layer_names: list[str]) -> None:
        self.model = model
        self.layer_names = layer_names
        self.outputs: dict[str, torch.Tensor] = {}
        self._thread = threading.get_ident()
        self._handles: list = []

    def _make_hook(self, name: str):
        def hook(module, inputs, output):
            if threading.get_ident() != self._thread:
                return None  # another thread's forward through the shared model
            # A module called twice (a shared ReLU) keeps its last output: the block's output.
            if not isinstance(output, torch.Tensor) or output.dim() != 4:
                raise ValueError(
                    f"layer {name!r} must output a (B, K, h, w) tensor, got "
                    f"{type(output).__name__}{tuple(output.shape) if isinstance(output, torch.Tensor) else ''}"
                )
            self.outputs[name] = output
            return None

        return hook

    def __enter__(self) -> "LayerCapture":
        try:
            for name in dict.fromkeys(self.layer_names):
                module = self.model.get_submodule(name)
                self._handles.append(module.register_forward_hook(self._make_hook(name)))
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
