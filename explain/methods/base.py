"""What an explanation method is: a name and title, what it needs captured, its parameters, and a ``compute``
over the captured tensors of one image's explained classes (``Selection``).

The Explainer unions the needs of the methods asked for and runs only those backward passes; the page takes
its panel titles, help lines and region tools from here. A method is one small file in this package that
subclasses ``Method`` and is decorated with ``explain.methods.register``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch

# What a method can ask the one pass for. Activations of the high layer are always captured.
HIGH_GRADIENTS = "high_gradients"  # ∂y^c/∂A of the high (target) layer
LOW_GRADIENTS = "low_gradients"  # the same for the low layer (captured only when configured)
INPUT_GRADIENTS = "input_gradients"  # guided backprop: a second backward, to the input, with the guided ReLU rule
CAM_WEIGHTS = "cam_weights"  # the linear head's weights after GAP, or the class score maps (paper 001)
NEEDS = frozenset({HIGH_GRADIENTS, LOW_GRADIENTS, INPUT_GRADIENTS, CAM_WEIGHTS})
# Region tools a panel can carry (explain.views draws them): paper 000's θ crop, paper 001's outlines,
# paper 004's τ lesion mask.
REGIONS = frozenset({"crop", "outlines", "lesions"})


@dataclass(frozen=True)
class Param:
    """A method's parameter (GMSM's gate t): its meaning, range and where a model keeps its default.

    Args:
        name: keyword of ``compute`` and ``Explanation.maps``.
        label: what it does, then the paper.
        default: used when neither the call nor the model gives one.
        config: the ``ModelConfig`` field that holds the model's default ("" for none).
        minimum: smallest valid value.
        maximum: largest value a slider offers (values above are valid when ``bounded`` is False).
        step: a slider's step.
        bounded: values above ``maximum`` are refused.
    """

    name: str
    label: str
    default: float
    config: str = ""
    minimum: float = 0.0
    maximum: float = 1.0
    step: float = 0.01
    bounded: bool = True

    def check(self, value: Any) -> float:
        """The value as a float. Raises ValueError when it is out of range."""
        number = float(value)
        if number < self.minimum or (self.bounded and number > self.maximum):
            upper = f", {self.maximum:g}]" if self.bounded else ", ∞)"
            raise ValueError(f"{self.name} must be in [{self.minimum:g}{upper} ({self.label}), got {value}")
        return number


class Method:
    """One explanation method. Subclasses set the class attributes and implement ``compute``.

    Attributes:
        name: key in ``Explanation.maps()`` and on the command line ("gradcam").
        title: as the page shows it ("Grad-CAM").
        needs: what the one pass must capture (``NEEDS``); activations of the high layer always are.
        params: parameters ``compute`` takes (``Param``).
        panel: "main" (one of the page's panels), "optional" (offered as an extra panel) or None.
        order: position among the registered methods (panels are shown in this order).
        help: one line under the panel's title: what it shows.
        regions: region tools drawn on its panel (``REGIONS``).
        aliases: other spellings ``canonical_method`` accepts.
    """

    name: ClassVar[str] = ""
    title: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset()
    params: ClassVar[tuple[Param, ...]] = ()
    panel: ClassVar[str | None] = None
    order: ClassVar[int] = 100
    help: ClassVar[str] = ""
    regions: ClassVar[frozenset[str]] = frozenset()
    aliases: ClassVar[tuple[str, ...]] = ()

    def compute(self, selection: Selection, **params: float) -> torch.Tensor:
        """Per-class maps (N, H, W) at the input's size for the selection's N classes, before the field-of-view
        normalisation and integration that ``Explanation.maps`` applies to every method alike."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<method {self.name}: {self.title}>"


class Captured(Protocol):
    """What ``Selection`` reads of an ``explain.explainer.Explanation``: a protocol, so that the methods import
    nothing of the engine that imports them."""

    activations: dict[str, torch.Tensor]
    gradients: dict[str, torch.Tensor]
    guided_gradients: torch.Tensor | None
    cam_kind: str | None
    cam_weights: torch.Tensor | None
    shared_results: dict

    @property
    def input_size(self) -> tuple[int, int]: ...


class Selection:
    """One image and its explained classes over an Explanation's captured tensors, for ``Method.compute``.

    ``shared`` keeps t-independent intermediate results (Grad-CAM++ saliency) with the explanation, so that
    later ``maps`` calls and other methods reuse them; ``map_of`` gives another method's per-class maps,
    computed once per ``maps`` call (Guided Grad-CAM multiplies guided backprop by Grad-CAM).
    """

    def __init__(self, explanation: Captured, image: int, classes: tuple[int, ...], rows: list[int],
                 lookup: Callable[[str], Method], local: dict | None = None) -> None:
        self.explanation = explanation
        self.image = image
        self.classes = classes
        self.rows = rows
        self._lookup = lookup
        self._local = {} if local is None else local

    @property
    def size(self) -> tuple[int, int]:
        """The input's (H, W): every method's maps are brought to it."""
        return self.explanation.input_size

    def activations(self, layer: str = "high") -> torch.Tensor:
        """(N, K, h, w): the layer's activations of this image, once per explained class."""
        return self.explanation.activations[layer][self.image][None].expand(len(self.rows), -1, -1, -1)

    def gradients(self, layer: str = "high") -> torch.Tensor:
        """(N, K, h, w): ∂y^c/∂A of the layer for each explained class c."""
        return self.explanation.gradients[layer][self.rows, self.image]

    def input_gradients(self) -> torch.Tensor:
        """(N, 3, H, W): guided-backprop gradients at the input for each explained class."""
        return self.explanation.guided_gradients[self.rows, self.image]

    @property
    def cam_kind(self) -> str | None:
        return self.explanation.cam_kind

    def cam_weights(self) -> torch.Tensor:
        """(N, K): the linear head's weights of the explained classes."""
        return self.explanation.cam_weights[list(self.classes)]

    def shared(self, key: Any, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``compute()``, kept with the explanation for this image and these classes (t-independent values only)."""
        store = self.explanation.shared_results
        full = (self.image, tuple(self.rows), key)
        if full not in store:
            store[full] = compute()
        return store[full]

    def map_of(self, name: str, **params: float) -> torch.Tensor:
        """Another method's per-class maps (N, H, W), computed at most once during this ``maps`` call."""
        key = (name, tuple(sorted(params.items())))
        if key not in self._local:
            self._local[key] = self._lookup(name).compute(self, **params)
        return self._local[key]
